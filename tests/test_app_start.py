"""Starting the app with a session history that is damaged or cannot be opened."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QApplication, QMessageBox

from app import main as app_main
from app.window import MainWindow
from engine.store import default_store_path
from tests.test_store import corrupt_page_holding, filled_store


@pytest.fixture
def started(monkeypatch, qapp):
    """Run app.main.run() without entering the event loop; yields the windows it showed."""
    shown: list[MainWindow] = []
    monkeypatch.setattr(QApplication, "exec", lambda self: 0)
    monkeypatch.setattr(MainWindow, "show", lambda self: shown.append(self))
    yield shown
    for window in shown:
        window.close()
        window.deleteLater()


def test_a_damaged_history_is_recovered_and_the_window_says_so(started):
    path = default_store_path()
    path.parent.mkdir(parents=True)
    filled_store(path)
    corrupt_page_holding(path, b"needle-1-100 ")

    assert app_main.run([]) == 0
    banner = started[0].banner
    assert str(path) in banner.message.text() and "damaged" in banner.message.text()
    assert "Nothing was deleted" in banner.hint.text()
    assert list(path.parent.glob("sessions.db.damaged-*"))


def test_a_history_that_cannot_be_opened_names_the_file_and_the_cause(monkeypatch, started):
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *args: shown.append(args[2]))
    path = default_store_path()
    path.mkdir(parents=True)  # a folder where the file should be: it cannot be opened
    assert app_main.run([]) == 1
    assert not started
    text = shown[0]
    assert str(path) in text and f"Make {path.parent} writable" in text
    assert "home folder" not in text
