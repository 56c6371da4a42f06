"""LiveSession: one source, a caption engine and optionally a translation engine, one store.

The source writes into an AudioRing at its own rate; each engine reads it through its own
resampling reader on an EngineWorker thread; a third reader at the capture rate feeds the
level meter and watches for the end of capture. Committed text goes to the store as it
commits. When capture ends (stop, end of file, device lost) the engines drain what was
captured, flush, and the session is saved: what was transcribed is kept.

When the store cannot be written (a full disk), the session warns once and goes on: the text
stays in memory and in the store's queue, and each later commit retries, so what was said
reaches the disk once there is room. Ending never fails on a store error: `save_error` then
says why the history is incomplete, and `transcript()` still holds everything.

A translation engine is either a speech model on the same audio (its own worker) or a text
translator following the captions: a CaptionTranslator on a thread of its own, fed the
caption events as they come, so translating never holds up the captions; it takes every
event waiting at once, so when it falls behind it skips stale provisionals, never a final.

`on_event(role, event)` is called from worker threads with role "caption", "translation" or
"audio" (Level, CaptureEnded, and audio Errors).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from engine import openmp
from engine.audio.meter import measure
from engine.audio.ring import AudioRing
from engine.audio.sources import Source
from engine.errors import LivecapError
from engine.events import CaptureEnded, Commit, EndOfTurn, Error, Event, Partial
from engine.recognizer import Recognizer
from engine.store import SessionStore, StoreError
from engine.streaming.text_translator import CaptionTranslator
from engine.transcript import Transcript, TranscriptBuilder
from engine.worker import EngineWorker

RING_SECONDS = 30.0  # how far an engine may fall behind before it loses audio
LEVEL_SECONDS = 0.05  # one Level event per 50 ms of audio


class LiveSession:
    def __init__(
        self,
        source: Source,
        caption: Recognizer,
        on_event: Callable[[str, Event], None],
        *,
        translation: Recognizer | CaptionTranslator | None = None,
        store: SessionStore | None = None,
        source_name: str = "",
    ) -> None:
        self.source = source
        self.on_event = on_event
        self.store = store
        self.source_name = source_name or source.name
        self.session_id: int | None = None
        self.ring = AudioRing(source.sample_rate, RING_SECONDS)
        self._engines = {"caption": caption}
        if translation is not None:
            self._engines["translation"] = translation
        self._builders = {
            role: TranscriptBuilder(r.info.name, r.info.language)
            for role, r in self._engines.items()
        }
        self._follower = None
        if isinstance(translation, CaptionTranslator):
            self._follower = _Follower(translation, self._engine_event("translation"))
        self._workers = {
            role: EngineWorker(r, self.ring.reader(r.sample_rate), self._engine_event(role))
            for role, r in self._engines.items()
            if not isinstance(r, CaptionTranslator)
        }
        self._meter = self.ring.reader()
        self._lock = threading.Lock()  # guards the builders
        self._save_lock = threading.Lock()  # guards save_error
        self._done = threading.Event()
        self.save_error: StoreError | None = None  # the last failed save, None once all is saved
        self._audio_thread = threading.Thread(target=self._watch_audio, name="audio", daemon=True)

    def start(self) -> None:
        """Open the source and start the engines; raises AudioError if the source can't open."""
        if self.store is not None:
            caption = self._engines["caption"].info
            translation = self._engines.get("translation")
            self.session_id = self.store.begin(
                caption.name,
                self.source_name,
                caption.language,
                translation.info.name if translation else None,
                translation.info.language if translation else None,
            )
        try:
            self.source.start(self.ring)
        except Exception:
            if self.store is not None and self.session_id is not None:
                self.store.delete(self.session_id)
            raise
        for worker in self._workers.values():
            worker.start()
        openmp.release_workers()  # this thread loaded the models; the workers step them
        if self._follower is not None:
            self._follower.start()
        self._audio_thread.start()

    def stop(self) -> None:
        """End capture; the engines finish the audio already captured, then it is saved."""
        self.source.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the engines finished and the session was saved."""
        return self._done.wait(timeout)

    @property
    def duration(self) -> float:
        return self.ring.written / self.ring.sample_rate

    def transcript(self) -> Transcript:
        """The transcript so far, the open segment included."""
        with self._lock:
            parts = {role: self._snapshot(builder) for role, builder in self._builders.items()}
        transcript = parts["caption"]
        transcript.translation = parts.get("translation")
        return transcript

    def _snapshot(self, builder: TranscriptBuilder) -> Transcript:
        segments = list(builder.segments)
        if builder.current is not None:
            segments.append(builder.current)
        return Transcript(builder.model, builder.language, self.duration, segments)

    def _engine_event(self, role: str) -> Callable[[Event], None]:
        def handle(event: Event) -> None:
            if role == "caption" and self._follower is not None:
                self._follower.put(event)
            if isinstance(event, Commit | EndOfTurn):
                with self._lock:
                    self._builders[role].add(event)
                self._save(role, event)
            self.on_event(role, event)
            if isinstance(event, Error) and event.fatal and role == "caption":
                self.stop()  # no captions: end the session, keeping what was transcribed

        return handle

    def _save(self, role: str, event: Commit | EndOfTurn) -> None:
        if self.store is None or self.session_id is None:
            return
        try:
            self.store.add(self.session_id, role, event)
        except StoreError as exc:
            self._save_failed(exc)
        else:
            self.save_error = None

    def _save_failed(self, exc: StoreError) -> None:
        """Warn on the first failure of a run of them, not on every commit."""
        with self._save_lock:
            first, self.save_error = self.save_error is None, exc
        if first:
            self.on_event(
                "audio",
                Error(
                    f"Saving the session failed. {exc.message}",
                    f"{exc.hint} Captions go on.",
                    fatal=False,
                ),
            )

    def _finish_store(self) -> None:
        if self.store is None or self.session_id is None:
            return
        try:
            self.store.finish(self.session_id, self.duration)
        except StoreError as exc:
            self._save_failed(exc)
        else:
            self.save_error = None

    def _watch_audio(self) -> None:
        block = max(1, round(self.ring.sample_rate * LEVEL_SECONDS))
        while (samples := self._meter.read(block, timeout=LEVEL_SECONDS * 2)) is not None:
            if samples.size:
                self.on_event("audio", measure(samples))
            self.source.check()
        self.on_event("audio", CaptureEnded(self.ring.end_reason, self.ring.end_error))
        for worker in self._workers.values():
            worker.join()
        if self._follower is not None:
            self._follower.finish()
        try:
            self._finish_store()
        finally:
            self._done.set()  # whatever happened, the session has ended


class _Follower:
    """A CaptionTranslator on its own thread: caption events in through `put`, its events
    out through `on_event`; `finish` translates what is left and waits for it."""

    _END = object()

    def __init__(self, translator: CaptionTranslator, on_event: Callable[[Event], None]) -> None:
        self.translator, self.on_event = translator, on_event
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="translation", daemon=True)
        self._stopped = False
        self._ended = False  # the end marker was taken from the queue

    def start(self) -> None:
        self._thread.start()

    def put(self, event: Event) -> None:
        if not self._stopped and isinstance(event, Commit | EndOfTurn | Partial):
            self._queue.put(event)

    def finish(self) -> None:
        self._queue.put(self._END)
        self._thread.join()

    def _run(self) -> None:
        self._ended = False
        try:
            while not self._ended:
                events = self._take([self._queue.get()])
                # what arrives while it translates goes along: a segment that closes during a
                # provisional gets its final at once instead of after the provisional
                self._emit(self.translator.follow(events, incoming=lambda: self._take([])))
            self._emit(self.translator.flush())
        except LivecapError as exc:
            self.on_event(Error(exc.message, exc.hint, fatal=False))
        except Exception as exc:  # noqa: BLE001 - a translation failure must not end captions
            self.on_event(
                Error(
                    f"The {self.translator.info.name} translation failed: {exc!r}",
                    "Captions go on without translation. Start a new session to retry.",
                    fatal=False,
                )
            )
        finally:
            self._stopped = True  # no more caption events pile up for a thread that is gone

    def _take(self, batch: list) -> list[Event]:
        """`batch` and whatever else is queued, without waiting; notes the end."""
        while not self._queue.empty():
            batch.append(self._queue.get())
        self._ended = self._ended or any(event is self._END for event in batch)
        return [event for event in batch if event is not self._END]

    def _emit(self, events: list[Event]) -> None:
        for event in events:
            self.on_event(event)
