"""What a loaded model promises the layers above it, and what they ask of it.

`LoadOptions` is what the user chose (device, precision, beams, target language); `ModelInfo`
what the loaded model is. `SpeechSeq2Seq` is what the chunked live policy
(engine/streaming/chunked.py) needs from an encoder-decoder speech model: Speech2Text and the
speech encoder-decoder family both implement it, so one policy serves both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | bfloat16 | int8
    beams: int | None = None  # None: the checkpoint's generation config
    target_lang: str | None = None  # translation models: the language to produce
    offline: bool = False  # chunked models: decode whole windows instead of the live policy
    # Streaming models: push silence through at a pause so its last words come out at once.
    # It lowers live latency and changes the words, so a file turns it off.
    pause_flush: bool = True
    progress: Callable[[str, float], None] | None = None  # (stage, fraction 0..1)
    # Caption servers (engine/remote.py): the key the server was started with. Kept out of
    # the repr so that a logged LoadOptions never shows it.
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ModelInfo:
    name: str  # what the user asked for: repo id or folder
    family: str  # "kyutai" | "speech2text" | "speech-encoder-decoder" | "remote"
    languages: tuple[str, ...]  # what it understands or, for translation, produces
    language: str | None  # the output language of this instance, if one is fixed
    delay_seconds: float  # the model's own delay before a word can appear
    device: str  # "cpu" | "cuda" | "server"
    dtype: str  # "float32" | "bfloat16" | "int8"
    task: str = "transcribe"  # "transcribe" | "translate"


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
