"""One window of audio → token ids with end times → text, for every encoder-decoder family.

`WindowDecoder` implements contract.SpeechSeq2Seq over any model that turns its input
features into encoder memory (`encode`) and carries a shared text decoder (`decoder`, a
bart.CachedDecoder). The families differ only in their features, encoder, tokenizer and
which tokens are special; the search (engine/models/generation.py), the cached decoder state
and the cross-attention alignment (bart.py, alignment.py) are the same code for all.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np
import torch

from engine.models import bart
from engine.models.alignment import token_end_times
from engine.models.contract import Hypothesis
from engine.models.generation import GenerationConfig, forced_lengths, generate_after

SAMPLE_RATE = 16000


class EncoderDecoder(Protocol):
    decoder: bart.CachedDecoder

    def encode(self, inputs: torch.Tensor) -> torch.Tensor: ...  # features → memory [1, S, D]


class Tokenizer(Protocol):
    def decode(self, ids: Sequence[int]) -> str: ...


class WindowDecoder:
    """A loaded encoder-decoder speech model as a SpeechSeq2Seq.

    `features(audio)` gives the model's input; windows shorter than `min_samples` give no
    encoder frame. `seconds_per_frame(samples)` is how much audio one encoder frame covers.
    `specials`: the ids a hypothesis leaves out. Where `prefix_outside_budget`, a forced
    prefix (text already said) does not count against max_length."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: EncoderDecoder,
        features: Callable[[np.ndarray], torch.Tensor],
        tokenizer: Tokenizer,
        generation: GenerationConfig,
        language_id: int | None,
        specials: Collection[int],
        min_samples: int,
        seconds_per_frame: Callable[[int], float],
        prefix_outside_budget: bool = False,
    ) -> None:
        self.model, self.features, self.tokenizer = model, features, tokenizer
        self.generation, self.language_id = generation, language_id
        self.specials = frozenset(specials)
        self.min_samples = min_samples
        self.seconds_per_frame = seconds_per_frame
        self.prefix_outside_budget = prefix_outside_budget

    def decode(
        self, audio: np.ndarray, prefix: Sequence[int] = (), draft: Sequence[int] = ()
    ) -> Hypothesis:
        duration = len(audio) / SAMPLE_RATE
        if len(audio) < self.min_samples:  # no encoder frame to align to: the window's end
            return Hypothesis(ids=list(prefix), times=[duration] * len(prefix))
        with torch.inference_mode():
            cross = self.cross_kv(audio)
            sequence = self._search(cross, prefix, draft)
            rows = self.text_rows(sequence)
            if not rows:
                return Hypothesis(ids=[], times=[])
            tokens = torch.tensor([sequence], device=cross[0][0].device)
            weights = bart.cross_attention(self.model.decoder, tokens, cross)[rows]
        times = token_end_times(weights, self.seconds_per_frame(len(audio)), duration)
        return Hypothesis(ids=[sequence[row] for row in rows], times=times)

    def text_rows(self, sequence: Sequence[int]) -> list[int]:
        """Where the text tokens sit in a generated sequence: after the start token and the
        language (if any), specials dropped."""
        first = 1
        if self.language_id is not None and sequence[1:2] == [self.language_id]:
            first = 2
        return [i for i in range(first, len(sequence)) if sequence[i] not in self.specials]

    @torch.inference_mode()
    def generate_ids(self, audio: np.ndarray, prefix: Sequence[int] = ()) -> list[int]:
        """The whole generated sequence, as transformers' generate() returns it."""
        return self._search(self.cross_kv(audio), prefix)

    def cross_kv(self, audio: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One window's cross-attention keys/values for every decoder layer."""
        return self.model.decoder.cross_kv(self.model.encode(self.features(audio)))

    def text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def _search(
        self,
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        prefix: Sequence[int],
        draft: Sequence[int] = (),
    ) -> list[int]:
        config = self.generation
        if self.prefix_outside_budget:
            config = replace(config, max_length=config.max_length + len(prefix))
        forced = forced_lengths(config)

        def new_state(rows: int) -> bart.CachedDecoderState:
            return bart.CachedDecoderState(self.model.decoder, cross, rows, forced)

        return generate_after(new_state, config, self.language_id, prefix, draft)
