"""Reading the list of capture devices off the GUI thread (PortAudio and `pactl` can take a
while), as often as the window asks: at the start and each time the input chooser opens."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from app.bridge import Task


def list_input_devices() -> list:
    from engine.audio import list_input_devices as lister  # PortAudio loads on first use

    return lister()


class DeviceReader(QObject):
    listed = Signal(list)  # the devices, on the GUI thread
    failed = Signal(object)  # the exception

    def __init__(self, lister: Callable[[], list] | None, parent: QObject | None = None):
        super().__init__(parent)
        self.lister = lister or list_input_devices
        self.reading = False

    def read(self) -> None:
        """Start one listing, unless one is still under way (its answer is as fresh)."""
        if self.reading:
            return
        self.reading = True
        task = Task(lambda _progress: self.lister())
        task.succeeded.connect(self._on_listed)
        task.failed.connect(self._on_failed)
        task.start()

    def _on_listed(self, devices: list) -> None:
        self.reading = False
        self.listed.emit(devices)

    def _on_failed(self, exc: BaseException) -> None:
        self.reading = False
        self.failed.emit(exc)
