"""LocalAgreement-2 over token ids: a token is final once two consecutive decodes agree on it.

Each decode of the growing audio buffer yields the tokens that follow the committed ones.
Text the model keeps producing the same way as more audio arrives is stable; the longest
common prefix of the last two hypotheses can be committed and the rest stays tentative.
"""

from __future__ import annotations

from collections.abc import Sequence


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


class LocalAgreement:
    """Remembers the previous hypothesis (tokens after the committed ones)."""

    def __init__(self) -> None:
        self.previous: list[int] | None = None

    def agree(self, hypothesis: Sequence[int]) -> int:
        """How many leading tokens of `hypothesis` the previous hypothesis also had."""
        agreed = 0 if self.previous is None else common_prefix_length(self.previous, hypothesis)
        self.previous = list(hypothesis)
        return agreed

    def committed(self, count: int) -> None:
        """`count` leading tokens were committed: what follows them is compared next time."""
        if self.previous is not None:
            self.previous = self.previous[count:]

    def reset(self) -> None:
        self.previous = None
