"""Kyutai STT as a streaming recognizer: one Mimi + LM step per 80 ms frame. The stream's
own side (model audio, pause flush, timeline, words) is `StreamFront` in kyutai_front.py."""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from engine.catalogue import find_entry
from engine.errors import ModelError
from engine.events import Event
from engine.models.contract import LoadOptions, ModelInfo
from engine.models.kernel_choice import AUTO_DTYPES, BYTES, step_seconds
from engine.models.kernels import available_memory
from engine.models.kyutai.config import SAMPLE_RATE, load_config
from engine.models.kyutai.weights import KyutaiModel, load_model, step_matrices
from engine.streaming.kyutai_front import StreamFront, skipped_ids

_FLUSH_EXTRA_SECONDS = 1.0  # past the delay, as transformers' feature extractor pads
# Speculative passes pay off while enough steps emit pads (speech gives 55 % or more; a pass
# of 3-8 rows costs 1.2-1.5 single steps, so break-even is near 20-35 % pads). Below this
# recent share of pads the model is not emitting speech-like text (random weights emit no
# pads), and frames are stepped one at a time. Low, so dense stretches of speech keep it.
_SPECULATE_ABOVE_PAD_SHARE = 0.15
_PAD_SHARE_MEMORY = 0.95  # per token: the share follows about the last 20 tokens


class KyutaiRecognizer:
    """The engine contract (see engine/recognizer.py) for a loaded Kyutai STT model."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: KyutaiModel,
        tokenizer: Tokenizer,
        info: ModelInfo,
        pause_flush: bool = True,
        max_rows: int | None = None,
        overlap: bool = False,
    ) -> None:
        self.model = model
        self.info = info
        self.max_rows = max_rows or speculative_rows(info.device, info.dtype)
        self.frame_size = model.config.mimi.frame_size
        self.pause_flush = pause_flush
        self.delay_samples = round(model.config.delay_seconds * SAMPLE_RATE)
        self._skip_ids = skipped_ids(model.config, tokenizer)
        self._tokenizer = tokenizer
        self.speculated = self.rejected = 0  # rows stepped speculatively / rolled back
        self._mimi_worker = _MimiWorker() if overlap else None
        self.reset()

    def reset(self) -> None:
        self._mimi = self.model.mimi.new_state()
        self._lm = self.model.lm.new_state(self.max_rows)
        config = self.model.config
        self._front = StreamFront(config, self._tokenizer, self._skip_ids, self.pause_flush)
        self._token: int | None = None  # the last text token; None before the start step
        self._pad_share = 1.0  # recent share of pad tokens (a stream starts in silence)
        self._waiting = torch.empty(0, config.num_codebooks, dtype=torch.long)

    def feed(self, samples: np.ndarray) -> list[Event]:
        events: list[Event] = []
        for audio, drain in self._front.push(samples):
            events += self._consume(audio, drain)
        return events

    def flush(self) -> list[Event]:
        """End the stream: push the delay's worth of silence (and a second) through."""
        end = self._front.stream_samples / SAMPLE_RATE
        silence = self.delay_samples + round(_FLUSH_EXTRA_SECONDS * SAMPLE_RATE)
        frames = self._front.frames(np.zeros(silence, dtype=np.float32))
        events = self._consume(frames, drain=True)
        events += self._front.words.finish(end)
        self.reset()
        return events

    def _consume(self, audio: np.ndarray, drain: bool = False) -> list[Event]:
        """Run whole frames of model audio through Mimi and the LM.

        With overlap, Mimi encodes this call's frames on a second thread while the LM steps
        the frames the previous call encoded (torch releases the GIL inside its operators, so
        the two share the cores): a frame costs about the longer of the two instead of their
        sum, and its text comes one call later. `drain` steps every frame before returning
        (at a flushed pause and at the end, whose words are committed at once)."""
        events: list[Event] = []
        model = self.model
        with torch.inference_mode():
            if len(audio) and self._token is None:  # the start step: start markers in, first out
                text, start_codes = model.lm.start_inputs()
                self._token = int(model.lm.step(text, start_codes, self._lm).argmax())
                events += self._front.words.push(self._token, 0.0)
            chunk = torch.from_numpy(audio).to(model.device)
            if self._mimi_worker is None:
                events += self._step_frames(self._encode(chunk))
            else:
                encoding = self._mimi_worker.submit(self._encode, chunk)
                events += self._step_frames(self._waiting)
                self._waiting = encoding.result()
            if drain:
                events += self._step_frames(self._waiting)
                self._waiting = self._waiting[:0]
        return events + self._front.due()

    def _encode(self, chunk: torch.Tensor) -> torch.Tensor:
        """Mimi codes [frames, codebooks] of whole frames of audio (none for no audio)."""
        if not len(chunk):
            return self._waiting[:0]
        with torch.inference_mode():
            return self.model.mimi.encode(chunk, self._mimi)

    def _step_frames(self, codes: torch.Tensor) -> list[Event]:
        """The LM over frames' codes [frames, codebooks], in order, and their words."""
        events: list[Event] = []
        done = 0
        while done < len(codes):
            for token in self._next_tokens(codes[done : done + self.max_rows]):
                self._token = token
                events += self._front.token(token)
                done += 1
        return events

    def _next_tokens(self, codes: torch.Tensor) -> list[int]:
        """The text tokens of the next frames (codes [T, codebooks]), at least one.

        Speculative when several frames wait (the machine fell behind, or a file): most steps
        emit a pad, so the frames are stepped in one pass with pads guessed as the text inputs
        after the first. A pass reads the weights once, so it costs little more than one step.
        Tokens up to the first non-pad are what single steps give (the same sums, though
        bfloat16 and int8 round a many-row matmul differently); the steps after it had a wrong
        input, and are rolled back and redone. While few recent tokens were pads, passes would
        mostly be rolled back, so frames are stepped one at a time.
        """
        lm, pad = self.model.lm, self.model.config.pad_token_id
        if len(codes) == 1 or self._pad_share < _SPECULATE_ABOVE_PAD_SHARE:
            tokens = [int(lm.step(self._token, codes[0], self._lm).argmax())]
        else:
            inputs = [self._token] + [pad] * (len(codes) - 1)
            tokens = lm.steps(inputs, codes, self._lm).argmax(dim=-1).tolist()
            kept = next((i + 1 for i, token in enumerate(tokens) if token != pad), len(tokens))
            lm.rollback(self._lm, len(tokens) - kept)
            self.speculated += len(tokens)
            self.rejected += len(tokens) - kept
            tokens = tokens[:kept]
        for token in tokens:
            self._pad_share = _PAD_SHARE_MEMORY * self._pad_share + (1 - _PAD_SHARE_MEMORY) * (
                token == pad
            )
        return tokens


class _MimiWorker:
    """One thread that runs Mimi beside the LM, with torch limited to one thread inside it so
    the two together use the two cores instead of oversubscribing them."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, "mimi", initializer=torch.set_num_threads, initargs=(1,))

    def submit(self, encode, chunk: torch.Tensor) -> Future:
        return self._pool.submit(encode, chunk)


def speculative_rows(device: str, dtype: str) -> int:
    """How many waiting frames one LM pass may take. On a CPU a pass of a few rows costs
    little more than one (the weights are read once), more rows stop paying: measured on 2
    cores with tests/benchmarks/kyutai_speculation.py (1B, 59% pads), per frame against one
    step per frame: float32 3 rows 0.63x (2 rows 0.80x); int8 3 rows 0.81x (2: 0.85x, 4:
    0.82x); bfloat16 8 rows 0.71x (4: 0.74x). A GPU pass of 8 rows costs what one does."""
    if device == "cuda" or dtype == "bfloat16":
        return 8
    return 3


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("No CUDA GPU is available.", "Use --device cpu (or auto).")
    return requested


def resolve_dtype(requested: str, device: str, folder: Path) -> str:
    """`auto`: bfloat16 on a GPU. On a CPU, the weight form whose one-row step is shortest
    from this machine's measured kernel rates (engine/models/kernel_choice.py), among
    those whose weights fit in memory: int8 reads a quarter of float32's bytes, but where the
    CPU lacks native int8 or bfloat16 dot products its kernels read them slower per byte, so
    the measurement decides. int4 is never chosen: its accuracy is the user's call."""
    if requested != "auto":
        return requested
    if device == "cuda":
        return "bfloat16"
    config, spare = load_config(folder), available_memory()
    steps = {dtype: step_matrices(config, dtype) for dtype in AUTO_DTYPES}

    def fits(dtype: str) -> bool:
        held = sum(out * width * BYTES[form] for form, (out, width) in steps[dtype])
        return spare is None or held * 1.3 < spare

    fitting = [dtype for dtype in AUTO_DTYPES if fits(dtype)]
    return min(fitting or ["int8"], key=lambda dtype: step_seconds(steps[dtype]))


@dataclass(frozen=True)
class KyutaiParts:
    """A loaded model and what recognizing with it needs besides: its tokenizer, its info."""

    model: KyutaiModel
    tokenizer: Tokenizer
    info: ModelInfo


def load_recognizer(folder: Path, name: str, options: LoadOptions) -> KyutaiRecognizer:
    parts = load_parts(folder, name, options)
    # Mimi beside the LM needs a core of its own: on 2 busy cores it cost 5-19 % per frame
    # (the LM's two threads already fill them), so only where a third core is free for it.
    overlap = parts.info.device == "cpu" and (os.cpu_count() or 1) >= 3
    return KyutaiRecognizer(
        parts.model, parts.tokenizer, parts.info, options.pause_flush, overlap=overlap
    )


def load_parts(folder: Path, name: str, options: LoadOptions) -> KyutaiParts:
    """The model on the device and dtype `options` resolve to, its tokenizer and its info."""
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device, folder)
    if options.progress:
        options.progress("loading", 0.0)
    model = load_model(folder, device, dtype)
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.exists():
        raise ModelError(
            f"{folder} has no tokenizer.json.", "Download the model again (`livecap models`)."
        )
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    info = ModelInfo(
        name=name,
        family="kyutai",
        languages=model_languages(folder, name),
        language=None,
        delay_seconds=model.config.delay_seconds,
        device=device,
        dtype=dtype,
    )
    if options.progress:
        options.progress("loading", 1.0)
    return KyutaiParts(model, tokenizer, info)


def model_languages(folder: Path, name: str) -> tuple[str, ...]:
    """What the model understands: the catalogue's entry for it (by repo id, or by the Hub
    cache folder it was loaded from), else the `languages` its config.json declares, else
    () for unknown. A repo's name is not evidence of what its weights were trained on."""
    entry = find_entry(name) or find_entry(_cached_repo_id(folder) or "")
    if entry is not None:
        return entry.languages
    try:
        declared = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    languages = declared.get("languages") if isinstance(declared, dict) else None
    if isinstance(languages, list) and all(isinstance(code, str) for code in languages):
        return tuple(languages)
    return ()


def _cached_repo_id(folder: Path) -> str | None:
    """`owner/name` for a snapshot in the Hugging Face cache (models--owner--name/snapshots/…)."""
    for part in folder.resolve().parts:
        if part.startswith("models--") and part.count("--") >= 2:
            return part.removeprefix("models--").replace("--", "/", 1)
    return None
