"""A loaded text translation model: a sentence in one language → its translation.

Marian (one model per language pair) and M2M100/NLLB (many-to-many, the target named by a
forced first token) share this: their tokenizer turns text into the encoder's ids and the
generated ids back into text, the encoder runs once per sentence, and the search is
generation.py's over bart.CachedDecoderState, as for the speech families — its greedy steps
in one call each where decoder_step.py can take the decoder (int8 on a CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch

from engine.errors import ModelError
from engine.models import bart, decoder_step, kernel_choice, loading
from engine.models.contract import LoadOptions, ModelInfo
from engine.models.generation import GenerationConfig, forced_lengths, generate
from engine.models.text_encoder import TextEncoderDecoder, load_weights, translation_dtype


class TranslationTokenizer(Protocol):
    sources: tuple[str, ...]  # languages it reads
    targets: tuple[str, ...]  # languages it writes

    def encode(self, text: str, source: str) -> list[int]:
        """The encoder's input ids for `text` in `source`, end token included."""
        ...

    def target_token(self, target: str) -> int | None:
        """The token forced first to choose the output language (None: one language)."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...


class Interrupted(Exception):
    """A translation given up between decoder steps because its caller's `stop` said so."""


class _Stoppable:
    """A DecoderState that asks `stop` before each step (generation.DecoderState's methods)."""

    def __init__(self, state: bart.CachedDecoderState, stop: Callable[[], bool]) -> None:
        self.state, self.stop = state, stop

    def step(self, ids: torch.Tensor, outputs: int = 1):
        if self.stop():
            raise Interrupted
        return self.state.step(ids, outputs)

    def truncate(self, length: int) -> None:
        self.state.truncate(length)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self.state.reorder(beam_idx)


@dataclass(frozen=True)
class Translation:
    text: str
    ids: tuple[int, ...]  # the generated sequence after the start token (a later draft)


class TextTranslator:
    """`translate(text, source)` into `info.language`; `supports(source)` says whether it
    can read that language."""

    def __init__(
        self,
        model: TextEncoderDecoder,
        tokenizer: TranslationTokenizer,
        generation: GenerationConfig,
        info: ModelInfo,
    ) -> None:
        self.model, self.tokenizer, self.info = model, tokenizer, info
        forced = tokenizer.target_token(info.language or "")
        self.generation = replace(generation, forced_bos_token_id=forced)
        self._device = model.decoder.embed_tokens.weight.device
        self.decoder = decoder_step.fused(model.decoder)  # what its searches step

    def reset(self) -> None:
        """Nothing to forget: each sentence is translated on its own (for the app's cache of
        loaded models, which resets a model before reusing it)."""

    @property
    def sources(self) -> tuple[str, ...]:
        return self.tokenizer.sources

    def supports(self, source: str) -> bool:
        return source in self.tokenizer.sources

    @torch.inference_mode()
    def translate(
        self,
        text: str,
        source: str,
        draft: Sequence[int] = (),
        stop: Callable[[], bool] | None = None,
    ) -> Translation:
        """`draft`: the ids a previous translation of the same sentence's beginning gave
        (greedy search checks them several per step: faster, the same result). `stop`: asked
        before each decoder step; True gives the translation up (raises Interrupted)."""
        if not self.supports(source):
            raise ModelError(
                f"{self.info.name} cannot translate from '{source}'.",
                f"It reads: {', '.join(self.sources)}.",
            )
        ids = self.tokenizer.encode(text, source)[-self.model.max_positions :]
        memory = self.model.encode(torch.tensor([ids], device=self._device))
        cross = self.model.decoder.cross_kv(memory)
        forced = forced_lengths(self.generation)  # of this call's settings (they may change)

        def new_state(rows: int) -> bart.CachedDecoderState | _Stoppable:
            state = bart.CachedDecoderState(self.decoder, cross, rows, forced)
            return state if stop is None else _Stoppable(state, stop)

        sequence = generate(new_state, self.generation, draft=draft)
        return Translation(self.tokenizer.decode(sequence[1:]), tuple(sequence[1:]))


def choose_language(
    name: str, known: Sequence[str], wanted: str | None, option: str, side: str
) -> str:
    """The language on one `side` ("from" or "into") of a translation: implied where the
    model knows one, else `wanted` (the user's `option`), which it must know."""
    listed = ", ".join(known)
    if wanted is None and len(known) == 1:
        return known[0]
    if wanted is None:
        raise ModelError(
            f"{name} translates {side} many languages and needs to be told which.",
            f"Pass {option}, one of: {listed}.",
        )
    if wanted not in known:
        raise ModelError(f"{name} cannot translate {side} '{wanted}'.", f"Choose one of: {listed}.")
    return wanted


@loading.returning_freed_blocks()
def load_text_model(
    folder: Path,
    name: str,
    options: LoadOptions,
    tokenizer: TranslationTokenizer,
    build_model: Callable[[dict, Path], TextEncoderDecoder],
    family: str,
) -> TextTranslator:
    """A family's translator from `folder` (Hub layout): its network from config.json, its
    weights, the kernels for this machine, the output language checked."""
    values = loading.read_config(folder)
    target = choose_language(name, tokenizer.targets, options.target_lang, "--target-lang", "into")
    generation = GenerationConfig.from_folder(folder, num_beams=options.beams)
    device = loading.resolve_device(options.device)
    dtype, precision = translation_dtype(options.dtype, device)
    model = loading.build(lambda: build_model(values, folder / "config.json"), folder)
    load_weights(model, loading.Checkpoint(folder))
    model = model.to(device=device, dtype=dtype).eval()
    kernel_choice.prepare_decoder(model.decoder, precision, generation.num_beams, True)
    info = ModelInfo(
        name=name,
        family=family,
        languages=tokenizer.targets,
        language=target,
        delay_seconds=0.0,
        device=device.type,
        dtype=precision,
        task="translate",
    )
    return TextTranslator(model, tokenizer, generation, info)
