"""The recognizer contract every model family implements, and how one is loaded.

A recognizer states its sample rate and frame size; `feed(samples)` takes mono float32
audio at that rate, in any amount, and returns the events the new audio produced;
`flush()` ends the stream and returns the last events; `reset()` starts a new stream
with the loaded weights. Nothing here knows about threads or Qt.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.errors import ModelError
from engine.events import Event


@dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | bfloat16 | int8
    beams: int | None = None  # None: the checkpoint's generation config
    target_lang: str | None = None  # translation models: the language to produce
    offline: bool = False  # chunked models: decode whole windows instead of the live policy
    progress: Callable[[str, float], None] | None = None  # (stage, fraction 0..1)


@dataclass(frozen=True)
class ModelInfo:
    name: str  # what the user asked for: repo id or folder
    family: str  # "kyutai" | "speech2text" | "speech-encoder-decoder"
    languages: tuple[str, ...]  # what it understands or, for translation, produces
    language: str | None  # the output language of this instance, if one is fixed
    delay_seconds: float  # the model's own delay before a word can appear
    device: str  # "cpu" | "cuda"
    dtype: str  # "float32" | "bfloat16" | "int8"
    task: str = "transcribe"  # "transcribe" | "translate"


class Recognizer(Protocol):
    info: ModelInfo
    sample_rate: int
    frame_size: int

    def feed(self, samples: np.ndarray) -> list[Event]: ...

    def flush(self) -> list[Event]: ...

    def reset(self) -> None: ...


# config.json `model_type` → "module:function" taking (folder, name, options).
_FAMILIES: dict[str, str] = {
    "kyutai_speech_to_text": "engine.streaming.kyutai_stream:load_recognizer",
    "speech_to_text": "engine.streaming.chunked:load_speech2text",
    "speech-encoder-decoder": "engine.streaming.chunked:load_speech_encoder_decoder",
}


def load_recognizer(model: str, options: LoadOptions | None = None) -> Recognizer:
    """Resolve `model` (a folder or a Hub repo id) and build its family's recognizer."""
    from engine.hub import resolve_model

    options = options or LoadOptions()
    folder = resolve_model(model, progress=options.progress)
    model_type = read_model_type(folder)
    target = _FAMILIES.get(model_type)
    if target is None:
        known = ", ".join(sorted(_FAMILIES))
        raise ModelError(
            f"{model}: model type '{model_type}' is not supported.",
            f"Livecap runs these model types: {known}.",
        )
    module_name, func_name = target.split(":")
    try:
        loader = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(
            f"{model}: the '{model_type}' engine is not available in this build ({exc}).",
            "Choose another model (see `livecap models`).",
        ) from exc
    return loader(folder, model, options)


def read_model_type(folder: Path) -> str:
    config = folder / "config.json"
    try:
        return json.loads(config.read_text(encoding="utf-8"))["model_type"]
    except FileNotFoundError:
        raise ModelError(
            f"{folder} has no config.json, so it is not a model folder.",
            "Point --model at a folder saved in the Hugging Face layout, or use a Hub repo id.",
        ) from None
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"{config} is not a valid model config ({exc}).",
            "Download the model again (`livecap models`), or fix the folder.",
        ) from None
