"""The app captioning from a server: the Server… entry of the model manager, its dialog, and a
session against the scripted protocol server on loopback (tests/protocol_server.py)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
import soundfile
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import QApplication

from app.model_manager import ModelManager
from app.server_dialog import ServerDialog
from app.settings import AppSettings
from app.window import MainWindow
from engine.store import SessionStore
from tests.protocol_server import ProtocolServer, Script

pytestmark = pytest.mark.timeout(60)

WORDS = [("Hello", 0.2, 0.5), ("from", 0.6, 0.8), ("afar.", 0.9, 1.3)]


@pytest.fixture
def settings(tmp_path):
    s = AppSettings(
        QSettings(str(tmp_path / "livecap.ini"), QSettings.Format.IniFormat),
        tmp_path / "local_folders.json",
    )
    s.set("first_run/offer_download", False)
    return s


@pytest.fixture
def manager(qtbot, settings, monkeypatch):
    monkeypatch.setattr("engine.hub.is_downloaded", lambda _repo: False)
    dialog = ModelManager(settings)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def answer_server_dialog(qtbot, address: str, key: str, keys=(Qt.Key.Key_Return,)) -> None:
    """Once the modal dialog is up, type into it as a user would and press `keys`."""

    def fill() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, ServerDialog):  # not open yet
            QTimer.singleShot(10, fill)
            return
        qtbot.keyClicks(dialog.address_edit, address)
        qtbot.keyClicks(dialog.key_edit, key)
        for key_press in keys:
            qtbot.keyClick(dialog.key_edit, key_press)
        if dialog.isVisible():  # the address was refused: the test then fails, not hangs
            dialog.reject()

    QTimer.singleShot(0, fill)


def test_the_server_entry_adds_a_server_that_captions_and_never_translates(
    qtbot, manager, settings
):
    used = []
    manager.use_model.connect(lambda role, name: used.append((role, name)))
    manager.activateWindow()
    qtbot.waitUntil(manager.isActiveWindow)
    answer_server_dialog(qtbot, "127.0.0.1:8080", "s3cret")
    alt = Qt.KeyboardModifier.AltModifier
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_V, alt)  # Ser&ver…
    qtbot.waitUntil(lambda: settings.servers() != {})  # a mnemonic clicks after 100 ms
    assert settings.servers() == {"ws://127.0.0.1:8080": "s3cret"}
    row = [name for name, _kind in manager.rows()].index("ws://127.0.0.1:8080")
    assert manager.table.item(row, 0).text() == "Caption server\nws://127.0.0.1:8080"
    assert manager.table.item(row, 5).text() == "Key saved"
    assert manager.selected() == ("ws://127.0.0.1:8080", "server")  # chosen: Enter uses it
    assert manager.caption_button.isEnabled() and not manager.translation_button.isEnabled()
    assert not manager.download_button.isEnabled()
    qtbot.keyClick(manager.table, Qt.Key.Key_Return)
    assert used == [("caption", "ws://127.0.0.1:8080")]
    manager.delete("ws://127.0.0.1:8080", "server")
    assert settings.servers() == {} and "ws://127.0.0.1:8080" not in dict(manager.rows())


def test_escape_adds_nothing(qtbot, manager, settings):
    answer_server_dialog(qtbot, "ws://h:1", "", keys=(Qt.Key.Key_Escape,))
    manager.add_server_button.click()
    assert settings.servers() == {}


def test_a_wrong_address_is_explained_in_the_dialog_which_stays_open(qtbot):
    dialog = ServerDialog()
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.keyClicks(dialog.address_edit, "http://h:8080")
    qtbot.keyClick(dialog.address_edit, Qt.Key.Key_Return)
    assert dialog.isVisible() and dialog.result() == 0
    assert "ws:// or wss://" in dialog.error.text() and "Use ws://h:8080" in dialog.error.text()
    assert dialog.key_edit.echoMode() == dialog.key_edit.EchoMode.Password
    dialog.show_key.setChecked(True)
    assert dialog.key_edit.echoMode() == dialog.key_edit.EchoMode.Normal


def speech_wav(tmp_path, seconds: float):
    path = tmp_path / "talk.wav"
    soundfile.write(path, np.zeros(int(16000 * seconds), np.float32), 16000)
    return path


@pytest.fixture
def window(qtbot, settings, tmp_path):
    store = SessionStore(tmp_path / "sessions.db")
    win = MainWindow(settings, store, device_lister=lambda: [])
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()
    store.close()


def test_a_session_on_a_server_captions_with_the_saved_key(qtbot, window, settings, tmp_path):
    with ProtocolServer(Script(words=WORDS, keys={"s3cret"})) as server:
        settings.set_servers({server.address: "s3cret"})
        window._use_model("caption", server.address)  # what "Use for captions" does
        assert settings.get("models/caption") == server.address
        window.set_input_file(speech_wav(tmp_path, 2.0))
        window.start_session()
        qtbot.waitUntil(lambda: window.controller.state == "running", timeout=10000)
        qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=15000)
    assert server.streams[0].key == "s3cret"
    assert window.caption_pane.toPlainText().strip() == "Hello from afar."
    assert not window.banner.isVisible()


def test_a_lost_server_keeps_the_text_and_start_reconnects(qtbot, window, settings, tmp_path):
    with ProtocolServer(Script(words=WORDS, drop_after=1.6)) as server:
        settings.set_servers({server.address: ""})
        window._use_model("caption", server.address)
        window.set_input_file(speech_wav(tmp_path, 4.0))
        window.start_session()
        qtbot.waitUntil(lambda: window.controller.state == "running", timeout=10000)
        qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=15000)
        assert window.banner.isVisible()
        assert "was lost" in window.banner.message.text()
        assert "reconnect" in window.banner.hint.text()
        assert window.caption_pane.toPlainText().startswith("Hello from")
        assert window.controls.start_button.isEnabled()
        server.script.drop_after = None  # the server is back
        window.controls.start_button.click()
        qtbot.waitUntil(lambda: window.controller.state == "running", timeout=10000)
        qtbot.waitUntil(lambda: len(server.streams) == 2, timeout=5000)
        window.controller.stop()
        qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=15000)
