"""The recognizer contract every model family implements, and how one is loaded.

A recognizer states its sample rate and frame size; `feed(samples)` takes mono float32
audio at that rate, in any amount, and returns the events the new audio produced;
`flush()` ends the stream and returns the last events; `reset()` starts a new stream
with the loaded weights. Nothing here knows about threads or Qt.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.errors import ModelError
from engine.events import Event
from engine.models.contract import LoadOptions, ModelInfo
from engine.models.loading import read_config

__all__ = ["LoadOptions", "ModelInfo", "Recognizer", "load_recognizer", "read_model_type"]


class Recognizer(Protocol):
    info: ModelInfo
    sample_rate: int
    frame_size: int

    def feed(self, samples: np.ndarray) -> list[Event]: ...

    def flush(self) -> list[Event]: ...

    def reset(self) -> None: ...


Loader = Callable[[Path, str, LoadOptions], Recognizer]


def _kyutai() -> Loader:
    from engine.streaming.kyutai_stream import load_recognizer

    return load_recognizer


def _speech2text() -> Loader:
    from engine.streaming.chunked import load_speech2text

    return load_speech2text


def _speech_encoder_decoder() -> Loader:
    from engine.streaming.chunked import load_speech_encoder_decoder

    return load_speech_encoder_decoder


# config.json `model_type` → its family's loader, imported only when that family is used
# (each pulls in torch and its model code)
_FAMILIES: dict[str, Callable[[], Loader]] = {
    "kyutai_speech_to_text": _kyutai,
    "speech_to_text": _speech2text,
    "speech-encoder-decoder": _speech_encoder_decoder,
}


def load_recognizer(model: str, options: LoadOptions | None = None) -> Recognizer:
    """Resolve `model` (a folder or a Hub repo id) and build its family's recognizer."""
    from engine.hub import resolve_model

    options = options or LoadOptions()
    folder = resolve_model(model, progress=options.progress)
    model_type = read_model_type(folder)
    family = _FAMILIES.get(model_type)
    if family is None:
        known = ", ".join(sorted(_FAMILIES))
        raise ModelError(
            f"{model}: model type '{model_type}' is not supported.",
            f"Livecap runs these model types: {known}.",
        )
    try:
        loader = family()
    except ImportError as exc:
        raise ModelError(
            f"{model}: the '{model_type}' engine is not available in this build ({exc}).",
            "Choose another model (see `livecap models`).",
        ) from exc
    return loader(folder, model, options)


def read_model_type(folder: Path) -> str:
    """config.json's `model_type`: which family loads the folder."""
    if not (folder / "config.json").exists():
        raise ModelError(
            f"{folder} has no config.json, so it is not a model folder.",
            "Point --model at a folder saved in the Hugging Face layout, or use a Hub repo id.",
        )
    model_type = read_config(folder).get("model_type")
    if not isinstance(model_type, str):
        raise ModelError(
            f"{folder / 'config.json'} does not say which model it holds (no model_type).",
            "Point --model at a folder saved in the Hugging Face layout, or fix its config.json.",
        )
    return model_type
