"""The model manager with the keyboard only: no key press leaves the user stuck, every
button is reached by Tab or its Alt mnemonic, and a model is chosen and used by keys."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import QApplication, QFileDialog

from app.model_manager import ModelManager
from app.settings import AppSettings
from tests.app_doubles import FakeHub

ALT = Qt.KeyboardModifier.AltModifier


@pytest.fixture
def manager(qtbot, tmp_path, monkeypatch):
    hub = FakeHub(step=10_000_000, pause=0.05)
    for name in ("download", "is_downloaded", "delete_model"):
        monkeypatch.setattr(f"engine.hub.{name}", getattr(hub, name))
    settings = AppSettings(
        QSettings(str(tmp_path / "livecap.ini"), QSettings.Format.IniFormat),
        tmp_path / "local_folders.json",
    )
    dialog = ModelManager(settings)
    qtbot.addWidget(dialog)
    dialog.show()
    activate(qtbot, dialog)
    yield dialog
    dialog.cancel_download()
    qtbot.waitUntil(lambda: dialog._download is None, timeout=5000)


def activate(qtbot, window) -> None:
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)


def press(qtbot, key, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    """A key press where the keyboard focus is, as the user's keyboard would send it."""
    qtbot.keyClick(QApplication.focusWidget(), key, modifier)


def tab_walk(qtbot, manager) -> list[str]:
    """The widgets Tab visits after the table, until it comes back to the table."""
    names = []
    for _ in range(15):
        press(qtbot, Qt.Key.Key_Tab)
        if QApplication.focusWidget() is manager.table:
            return names
        names.append(QApplication.focusWidget().accessibleName())
    raise AssertionError(f"Tab never came back to the table: {names}")


def chosen(manager) -> str:
    return manager.selected()[0]


def test_the_model_manager_is_used_with_keys_only(qtbot, manager, tmp_path, monkeypatch):
    used = []
    manager.use_model.connect(lambda role, name: used.append((role, name)))
    assert QApplication.focusWidget() is manager.table
    assert chosen(manager) == "kyutai/stt-1b-en_fr-trfs"

    # Arrows choose a model; Tab leaves the table and visits every button that can act.
    press(qtbot, Qt.Key.Key_Down)
    assert chosen(manager) == "kyutai/stt-2.6b-en-trfs"
    assert tab_walk(qtbot, manager) == [
        "Download",
        "Delete",
        "Add local folder",
        "Server",
        "Use for captions",
        "Close",
    ]
    press(qtbot, Qt.Key.Key_Tab, Qt.KeyboardModifier.ShiftModifier)
    assert QApplication.focusWidget() is manager.close_button
    press(qtbot, Qt.Key.Key_M, ALT)  # back to the list by its label's mnemonic
    assert QApplication.focusWidget() is manager.table

    # Enter uses the chosen model for captions (it never starts a download).
    press(qtbot, Qt.Key.Key_Return)
    assert used == [("caption", "kyutai/stt-2.6b-en-trfs")]
    assert manager._download is None

    # A translation model: Use for captions is skipped, Alt+T uses it for translation.
    press(qtbot, Qt.Key.Key_Home, Qt.KeyboardModifier.ControlModifier)
    for _ in range(3):  # the catalogue's fourth model
        press(qtbot, Qt.Key.Key_Down)
    assert chosen(manager) == "facebook/s2t-medium-mustc-multilingual-st"
    press(qtbot, Qt.Key.Key_C, ALT)
    press(qtbot, Qt.Key.Key_T, ALT)
    qtbot.waitUntil(lambda: len(used) == 2)
    assert used[1] == ("translation", "facebook/s2t-medium-mustc-multilingual-st")
    assert "Use for captions" not in tab_walk(qtbot, manager)

    # Alt+D downloads; while it runs, Tab reaches Cancel download, and Alt+N pauses it.
    press(qtbot, Qt.Key.Key_D, ALT)
    qtbot.waitUntil(lambda: manager.cancel_button.isEnabled())
    press(qtbot, Qt.Key.Key_M, ALT)
    assert "Cancel download" in tab_walk(qtbot, manager)
    press(qtbot, Qt.Key.Key_N, ALT)
    qtbot.waitUntil(lambda: "paused" in manager.progress_label.text(), timeout=5000)

    # Alt+L asks before deleting, and Enter answers No.
    questions = []

    def answer_with_enter():
        box = QApplication.activeModalWidget()
        questions.append(box.text())
        qtbot.keyClick(box, Qt.Key.Key_Return)

    QTimer.singleShot(300, answer_with_enter)
    press(qtbot, Qt.Key.Key_L, ALT)
    qtbot.waitUntil(lambda: bool(questions), timeout=3000)
    assert "Delete the downloaded files" in questions[0]
    activate(qtbot, manager)  # as the window manager does when the question closes
    assert manager.isAncestorOf(QApplication.focusWidget())
    assert manager.rows()[3] == ("facebook/s2t-medium-mustc-multilingual-st", "hub")

    # Alt+A adds a folder; the new row is chosen and Alt+C uses it for captions.
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "speech_to_text"}')
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a: str(folder))
    press(qtbot, Qt.Key.Key_A, ALT)
    qtbot.waitUntil(lambda: manager.selected() == (str(folder), "folder"))
    press(qtbot, Qt.Key.Key_C, ALT)
    qtbot.waitUntil(lambda: len(used) == 3)
    assert used[2] == ("caption", str(folder))

    # Escape closes it, and so does Alt+O.
    press(qtbot, Qt.Key.Key_Escape)
    assert not manager.isVisible()
    manager.show()
    activate(qtbot, manager)
    press(qtbot, Qt.Key.Key_O, ALT)
    qtbot.waitUntil(lambda: not manager.isVisible())


def test_every_model_manager_button_has_its_own_mnemonic(manager):
    buttons = [
        manager.download_button,
        manager.cancel_button,
        manager.delete_button,
        manager.add_folder_button,
        manager.caption_button,
        manager.translation_button,
        manager.close_button,
    ]
    keys = [button.shortcut().toString() for button in buttons]
    assert all(key.startswith("Alt+") for key in keys), keys
    assert len(set(keys)) == len(keys), keys
    assert "Alt+M" not in keys  # the list's label
