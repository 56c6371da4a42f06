"""The adapter between engine threads and the Qt GUI thread.

Engine callbacks arrive on worker threads; widgets may only be touched on the GUI thread.
`EventBridge.post` is safe from any thread: it queues the event and wakes the GUI thread
once per batch, so a fast engine cannot flood the event loop with one signal per event.
`Task` runs slow work (model loading, stopping a session) on a QThread and reports back
through queued signals, so the window never freezes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from PySide6.QtCore import QObject, Qt, QThread, Signal

from engine.events import Level


class EventBridge(QObject):
    events = Signal(list)  # list[tuple[str, Event]], in arrival order, on the GUI thread
    _wake = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._pending: list[tuple[str, object]] = []
        self._wake.connect(self._drain, Qt.ConnectionType.QueuedConnection)

    def post(self, role: str, event: object) -> None:
        """Called by engine threads (LiveSession's on_event)."""
        with self._lock:
            wake = not self._pending
            self._pending.append((role, event))
        if wake:
            self._wake.emit()

    def _drain(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            self.events.emit(_latest_level_only(batch))


def _latest_level_only(batch: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """The meter shows one value per repaint: older Level events in a batch are noise."""
    last_level = max((i for i, (_, e) in enumerate(batch) if isinstance(e, Level)), default=-1)
    return [
        item for i, item in enumerate(batch) if not isinstance(item[1], Level) or i == last_level
    ]


class Task(QThread):
    """Runs `work(progress)` off the GUI thread; `progress(stage, fraction)` is thread-safe.

    Started tasks keep themselves alive until their thread has ended, so a caller may drop
    its reference; `Task.wait_all()` joins the ones still running (at exit, in tests).
    """

    succeeded = Signal(object)
    failed = Signal(object)  # the exception
    progress = Signal(str, float)
    _running: set[Task] = set()

    def __init__(self, work: Callable[[Callable[[str, float], None]], object]) -> None:
        super().__init__()
        self._work = work
        self.finished.connect(self._release)

    def start(self) -> None:  # type: ignore[override]
        Task._running.add(self)
        super().start()

    def _release(self) -> None:
        self.wait()
        Task._running.discard(self)

    @classmethod
    def wait_all(cls, timeout_ms: int = 30_000) -> None:
        for task in list(cls._running):
            task.wait(timeout_ms)
            cls._running.discard(task)

    def run(self) -> None:
        try:
            result = self._work(self.progress.emit)
        except Exception as exc:  # noqa: BLE001 - reported to the user by the receiver
            self.failed.emit(exc)
        else:
            self.succeeded.emit(result)
