"""Runs sessions for the window: loads models off the GUI thread, starts and stops them.

The controller owns no widget. It turns a `SessionRequest` into an engine `LiveSession`,
forwards the session's events (through the `EventBridge`) as Qt signals, and reports every
failure as (message, hint) so the window can show it without losing the session's text.
Loaded recognizers are kept for the next session with the same model and options. A text
translation model follows the captions (engine.streaming.text_translator), so it goes with
any caption model.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.bridge import EventBridge, Task
from engine.errors import LivecapError
from engine.events import CaptureEnded, Error
from engine.recognizer import LoadOptions, Recognizer, load_recognizer, load_translation
from engine.streaming.text_translator import CaptionTranslator

Loader = Callable[[str, LoadOptions], Recognizer]


@dataclass(frozen=True)
class InputChoice:
    """Where audio comes from: a capture device (None = the default) or a file."""

    label: str
    device: int | str | None = None
    file: Path | None = None
    system_audio: bool = False


@dataclass(frozen=True)
class SessionRequest:
    source: InputChoice
    caption_model: str
    translation_model: str | None = None
    target_language: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    api_key: str | None = field(default=None, repr=False)  # a caption server's


class SessionController(QObject):
    state_changed = Signal(str)  # idle | loading | running | stopping
    load_progress = Signal(str, float)
    started = Signal(object, object)  # caption ModelInfo, translation ModelInfo | None
    events = Signal(list)  # [(role, event)] on the GUI thread
    failed = Signal(str, str)  # message, hint
    finished = Signal(object)  # the stored session id, or None
    unsaved = Signal(object, object, str, str)  # session id, its Transcript, message, hint

    def __init__(self, store=None, loader: Loader | None = None, parent=None) -> None:
        super().__init__(parent)
        self.store = store
        # one loader for both slots where one is given; else the translation slot also
        # takes text translation models
        self.loaders = {
            "caption": loader or load_recognizer,
            "translation": loader or load_translation,
        }
        self.state = "idle"
        self.session = None  # the running LiveSession
        self.last_session_id: int | None = None
        self._cache: dict[str, tuple[tuple, Recognizer]] = {}
        self._stop_requested = False
        self._early: list = []
        self.bridge = EventBridge(self)
        self.bridge.events.connect(self._on_events)

    # -- starting ---------------------------------------------------------------------------
    def start(self, request: SessionRequest) -> None:
        if self.state != "idle":
            return
        self._stop_requested = False
        self._set_state("loading")
        task = Task(lambda progress: self._open(request, progress))
        task.progress.connect(self.load_progress)
        task.succeeded.connect(self._on_opened)
        task.failed.connect(self._on_open_failed)
        task.start()

    def _open(self, request: SessionRequest, progress: Callable[[str, float], None]):
        """Worker thread: load the models, open the source, start the engine."""
        from engine.audio import FileSource, MicrophoneSource
        from engine.session import LiveSession

        caption = self._recognizer("caption", request.caption_model, request, None, progress)
        translation = None
        if request.translation_model:
            translation = self._recognizer(
                "translation",
                request.translation_model,
                request,
                request.target_language,
                progress,
            )
        if translation is not None and not hasattr(translation, "sample_rate"):
            # a text translator (no audio of its own): it follows the captions
            translation = CaptionTranslator(translation, caption.info)
        progress("Opening the audio input", 1.0)
        if request.source.file is not None:
            source = FileSource(request.source.file, realtime=True)
        else:
            source = MicrophoneSource(request.source.device)
        session = LiveSession(
            source,
            caption,
            self.bridge.post,
            translation=translation,
            store=self.store,
            source_name=request.source.label,
        )
        session.start()
        return session, caption.info, translation.info if translation else None

    def _recognizer(
        self,
        slot: str,
        model: str,
        request: SessionRequest,
        target: str | None,
        progress: Callable[[str, float], None],
    ) -> Recognizer:
        key = (model, request.device, request.dtype, target, request.api_key)
        cached = self._cache.get(slot)
        if cached is not None and cached[0] == key:
            cached[1].reset()
            return cached[1]
        self._cache.pop(slot, None)  # let the old model go before loading the new one

        def report(stage: str, fraction: float) -> None:
            progress(f"{slot.capitalize()} model: {stage}", fraction)

        options = LoadOptions(
            device=request.device,
            dtype=request.dtype,
            target_lang=target,
            progress=report,
            api_key=request.api_key,
        )
        report("loading", 0.0)
        recognizer = self.loaders[slot](model, options)
        self._cache[slot] = (key, recognizer)
        freeze_heap()
        return recognizer

    def _on_opened(self, result) -> None:
        self.session, caption_info, translation_info = result
        self.last_session_id = getattr(self.session, "session_id", None)
        self._set_state("running")
        self.started.emit(caption_info, translation_info)
        early, self._early = self._early, []
        if early:
            self._on_events(early)
        if self._stop_requested:
            self.stop()

    def _on_open_failed(self, exc: BaseException) -> None:
        self._early = []
        self._set_state("idle")
        self.failed.emit(*explain(exc))

    # -- running ----------------------------------------------------------------------------
    def _on_events(self, batch: list) -> None:
        if self.state == "loading":  # the engine began before `started` reached the window
            self._early.extend(batch)
            return
        self.events.emit(batch)
        for role, event in batch:
            if isinstance(event, Error):
                if role == "translation":
                    self.failed.emit(f"Translation stopped: {event.message}", event.hint)
                else:
                    self.failed.emit(event.message, event.hint)
                if event.fatal and role != "translation":  # captions go on without it
                    self.stop()
            elif isinstance(event, CaptureEnded):
                if event.error:
                    self.failed.emit(
                        f"The audio input stopped: {event.reason}",
                        "Check that the device is plugged in, choose another input, and start "
                        "again. The text so far is kept.",
                    )
                self.stop()

    # -- stopping ---------------------------------------------------------------------------
    def stop(self) -> None:
        if self.state == "loading":
            self._stop_requested = True
            return
        if self.state != "running" or self.session is None:
            return
        session, self.session = self.session, None
        self._set_state("stopping")

        def close(_progress) -> tuple[int | None, object]:
            session.stop()
            session.wait(30)
            # Text the store could not take (a full disk): hand it over, so it can be exported.
            error = session.save_error
            return session.session_id, (error, session.transcript()) if error else None

        task = Task(close)
        task.succeeded.connect(self._on_stopped)
        task.failed.connect(self._on_stop_failed)
        task.start()

    def _on_stopped(self, result) -> None:
        session_id, unsaved = result
        self.last_session_id = session_id
        self._set_state("idle")
        self.finished.emit(session_id)
        if unsaved is not None:
            error, transcript = unsaved
            self.unsaved.emit(session_id, transcript, error.message, error.hint)

    def _on_stop_failed(self, exc: BaseException) -> None:
        self._set_state("idle")
        self.failed.emit(*explain(exc))
        self.finished.emit(self.last_session_id)

    def shutdown(self) -> None:
        """At exit: stop a running session and wait for the background work to end."""
        if self.session is not None:
            self.session.stop()
            self.session.wait(10)
            self.session = None
        Task.wait_all()

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_changed.emit(state)


def freeze_heap() -> None:
    """Freeze every object alive now (the imported libraries, a just-loaded model), so no
    later collection walks them again.

    A full collection walks every tracked object while holding the GIL; with torch imported
    that is ~180k objects and 100-300 ms, and it can fall on the GUI thread mid-session.
    Freezing only moves lists. It never collects: called off the GUI thread, a collection
    could finalize garbage Qt objects on the wrong thread (a crash in the event loop). Models
    are freed by reference counting, so a dropped model does not need a collection."""
    gc.freeze()


def explain(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, LivecapError):
        return exc.message, exc.hint
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return (
            "There is not enough memory for this model.",
            "Close other programs, or choose a smaller model or int8 precision.",
        )
    return (
        f"Something went wrong: {type(exc).__name__}: {exc}",
        "Try again; if it keeps happening, please report it with the steps that led here.",
    )
