"""What the chunked live policy (LocalAgreement) needs from an encoder-decoder speech model.

Speech2Text and the speech encoder-decoder family both implement `SpeechSeq2Seq`, so one
policy (engine/streaming/chunked.py) serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Hypothesis:
    ids: list[int]  # generated text token ids, specials (bos/eos/language) removed
    # per-token end time in seconds from the window's start (cross-attention alignment),
    # or None when the model cannot say
    times: list[float] | None = None


class SpeechSeq2Seq(Protocol):
    sample_rate: int  # 16000

    def decode(
        self, audio: np.ndarray, prefix: Sequence[int] = (), draft: Sequence[int] = ()
    ) -> Hypothesis:
        """Decode one window of mono float32 audio; `prefix` is forced after the start tokens.
        `draft` is the text expected after the prefix (the previous decode's): a greedy search
        checks several of its tokens per step, which changes the speed, never the result."""
        ...

    def text(self, ids: Sequence[int]) -> str:
        """Token ids → text (pieces joined, "▁" → space, specials dropped)."""
        ...
