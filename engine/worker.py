"""EngineWorker: runs one recognizer on its own thread, fed by its ring reader.

It pulls audio (at least a frame at a time), feeds the recognizer, and hands every event to
`on_event` on the worker thread. An exception inside the model becomes an Error event and
ends the worker cleanly. The worker is the one producer of Stats, about once a wall-clock
second: audio fed, compute spent in the model, audio dropped by the reader, non-finite input
samples silenced, and latency = the audio still waiting in the ring plus the model's own
delay (`ModelInfo.delay_seconds`): how long after a word is spoken it can appear. Nothing
here knows about Qt.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

from engine.audio.ring import RingReader
from engine.errors import LivecapError
from engine.events import Error, Event, Stats
from engine.recognizer import Recognizer

STATS_INTERVAL = 1.0  # seconds of wall time between Stats events
POLL_SECONDS = 0.1  # how often a waiting worker looks at its stop flag


class EngineWorker:
    def __init__(
        self,
        recognizer: Recognizer,
        reader: RingReader,
        on_event: Callable[[Event], None],
    ) -> None:
        self.recognizer = recognizer
        self.reader = reader
        self.on_event = on_event
        self.audio_seconds = 0.0  # audio fed so far, at the recognizer's rate
        self.compute_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"engine-{recognizer.info.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End soon without waiting for the rest of the audio (the recognizer still flushes)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
            self._emit(self._timed(self.recognizer.flush))
            self._emit([self._stats(0.0)])
        except LivecapError as exc:
            self.on_event(Error(exc.message, exc.hint))
        except Exception as exc:  # noqa: BLE001 - a model failure must not kill the app
            self.on_event(
                Error(
                    f"The {self.recognizer.info.name} engine failed: {exc!r}",
                    "Captions stopped. Start a new session; if it happens again, "
                    "try another model or --device cpu.",
                )
            )
        finally:
            self.reader.close()

    def _loop(self) -> None:
        rate = self.recognizer.sample_rate
        frame = max(1, self.recognizer.frame_size)
        last_stats = time.monotonic()
        while not self._stop.is_set():
            samples = self.reader.read(frame, timeout=POLL_SECONDS)
            if samples is None:  # capture ended and everything was read
                return
            if samples.size:
                self.audio_seconds += samples.size / rate
                self._emit(self._timed(functools.partial(self.recognizer.feed, samples)))
            if time.monotonic() - last_stats >= STATS_INTERVAL:
                last_stats = time.monotonic()
                self._emit([self._stats(self.reader.backlog_seconds)])

    def _timed(self, call: Callable[[], list[Event]]) -> list[Event]:
        began = time.perf_counter()
        events = call()
        self.compute_seconds += time.perf_counter() - began
        return events

    def _stats(self, backlog: float) -> Stats:
        audio = self.audio_seconds
        return Stats(
            audio_seconds=audio,
            compute_seconds=self.compute_seconds,
            realtime_factor=self.compute_seconds / audio if audio else 0.0,
            dropped_seconds=self.reader.dropped_seconds,
            latency_seconds=backlog + self.recognizer.info.delay_seconds,
            nonfinite_samples=self.reader.ring.nonfinite_samples,
        )

    def _emit(self, events: list[Event]) -> None:
        for event in events:
            self.on_event(event)
