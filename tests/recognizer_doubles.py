"""Recognizer doubles for the pipeline tests (tests only: the product has no fake model)."""

from __future__ import annotations

import threading

import numpy as np

from engine.events import Commit, EndOfTurn, Event, Word
from engine.recognizer import ModelInfo


def info(name: str = "double", language: str | None = "en") -> ModelInfo:
    return ModelInfo(name, "double", ("en",), language, 0.0, "cpu", "float32")


class RecordingRecognizer:
    """Keeps every sample it is fed; commits one word per `word_seconds` of audio."""

    def __init__(self, sample_rate: int = 16000, frame_size: int = 320, word_seconds=0.5):
        self.info = info("recorder")
        self.sample_rate = sample_rate
        self.frame_size = frame_size
        self.word_seconds = word_seconds
        self.chunks: list[np.ndarray] = []
        self.fed = 0
        self.flushed = threading.Event()

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)

    def feed(self, samples: np.ndarray) -> list[Event]:
        assert samples.dtype == np.float32 and samples.ndim == 1
        self.chunks.append(samples.copy())
        before, self.fed = self.fed, self.fed + samples.size
        step = round(self.word_seconds * self.sample_rate)
        return [self._word(n) for n in range(before // step, self.fed // step)]

    def flush(self) -> list[Event]:
        self.flushed.set()
        return [EndOfTurn(self.fed / self.sample_rate)]

    def reset(self) -> None:
        self.chunks.clear()
        self.fed = 0

    def _word(self, n: int) -> Commit:
        start, end = n * self.word_seconds, (n + 1) * self.word_seconds
        text = f"w{n}"
        return Commit(text, start, end, (Word(text, start, end),))


class FailingRecognizer(RecordingRecognizer):
    """Raises inside feed() once it has been fed `fail_after` samples."""

    def __init__(self, fail_after: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.fail_after = fail_after

    def feed(self, samples: np.ndarray) -> list[Event]:
        events = super().feed(samples)
        if self.fed > self.fail_after:
            raise RuntimeError("model blew up")
        return events
