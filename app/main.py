"""Starting the desktop app: `python main.py` with no subcommand calls `run()`."""

from __future__ import annotations

import signal
import sqlite3
import sys

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from app.bridge import Task
from app.settings import RESOURCES, AppSettings


def run(argv: list[str] | None = None) -> int:
    from app.window import MainWindow
    from engine.errors import LivecapError
    from engine.store import SessionStore

    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setOrganizationName("Livecap")
    app.setApplicationName("Livecap")
    app.setDesktopFileName("livecap")
    app.setWindowIcon(QIcon(str(RESOURCES / "icons" / "livecap.svg")))
    settings = AppSettings()
    try:
        store = SessionStore()
    except LivecapError as exc:  # StoreError names the file and the real cause
        _cannot_start(exc.message, exc.hint)
        return 1
    except (OSError, sqlite3.Error) as exc:
        _cannot_start(
            f"The session history cannot be opened: {exc}",
            "Check that your home folder is writable and has free space.",
        )
        return 1
    window = MainWindow(settings, store)
    window.show()
    if store.recovered is not None:
        window.banner.show_message(store.recovered.message, store.recovered.hint, kind="info")
    _close_on_signals(window)
    code = app.exec()
    Task.wait_all()
    store.close()
    return code


def _cannot_start(message: str, hint: str) -> None:
    from PySide6.QtWidgets import QMessageBox

    QMessageBox.critical(None, "Livecap cannot start", f"{message}\n\n{hint}")


def _close_on_signals(window) -> None:
    """Ctrl+C in the terminal or a logout's SIGTERM close the window properly, so a running
    session is stopped and saved. Python sees signals only while it runs, hence the timer."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: window.close())
    window._signal_timer = QTimer(window, interval=250, timeout=lambda: None)
    window._signal_timer.start()
