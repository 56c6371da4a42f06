"""The recognizer contract every model family implements, and how one is loaded.

A recognizer states its sample rate and frame size; `feed(samples)` takes mono float32
audio at that rate, in any amount, and returns the events the new audio produced;
`flush()` ends the stream and returns the last events; `reset()` starts a new stream
with the loaded weights. Nothing here knows about threads or Qt.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from engine.errors import ModelError
from engine.events import Event
from engine.models.contract import LoadOptions, ModelInfo
from engine.models.loading import read_config

if TYPE_CHECKING:
    from engine.models.translator import TextTranslator

__all__ = [
    "LoadOptions",
    "ModelInfo",
    "Recognizer",
    "is_server_address",
    "load_recognizer",
    "load_translation",
    "read_model_type",
]


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


def is_server_address(model: str) -> bool:
    """Whether `model` names a caption server (ws://, wss://, or a mistaken http://, which
    engine.remote explains) rather than a folder or a Hub repo id."""
    return model.strip().lower().startswith(("ws://", "wss://", "http://", "https://"))


TextLoader = Callable[[Path, str, LoadOptions], "TextTranslator"]


def _marian() -> TextLoader:
    from engine.models.marian import load_model

    return load_model


def _m2m100() -> TextLoader:
    from engine.models.m2m100 import load_model

    return load_model


# text translation models: they translate the captions' text, not the audio
_TEXT_FAMILIES: dict[str, Callable[[], TextLoader]] = {"marian": _marian, "m2m_100": _m2m100}


def load_recognizer(model: str, options: LoadOptions | None = None) -> Recognizer:
    """Resolve `model` (a folder or a Hub repo id) and build its family's recognizer; a
    server address (ws://HOST:PORT) gives a recognizer that captions on that server."""
    options = options or LoadOptions()
    if is_server_address(model):
        from engine.remote import load_remote

        return load_remote(model, options)
    return _load(model, options, _FAMILIES)


def load_translation(model: str, options: LoadOptions) -> Recognizer | TextTranslator:
    """A translation model of either kind: a speech one (a Recognizer of its own audio) or
    a text one (a TextTranslator, for the captions' text)."""
    if is_server_address(model):
        raise ModelError(
            f"{model} is a caption server: Kyutai's streaming protocol transcribes, it does "
            "not translate.",
            "Give the server as the caption model (--model), and a translation model on this "
            "machine as the translation model.",
        )
    return _load(model, options, {**_FAMILIES, **_TEXT_FAMILIES})


def _load(model: str, options: LoadOptions, families: dict[str, Callable[[], Callable]]):
    from engine.hub import resolve_model

    folder = resolve_model(model, progress=options.progress)
    model_type = read_model_type(folder)
    family = families.get(model_type)
    if family is None:
        known = ", ".join(sorted(families))
        hint = f"Livecap runs these model types: {known}."
        if model_type in _TEXT_FAMILIES:
            hint = "It translates text: give it as the translation model (--translate-model)."
        raise ModelError(f"{model}: model type '{model_type}' is not supported here.", hint)
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
