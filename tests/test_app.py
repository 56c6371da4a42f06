"""The desktop window driven for real (offscreen): sessions, panes, history, export, errors.

Recognizers are the doubles in tests/app_doubles.py; audio comes from a short WAV through
the engine's FileSource and LiveSession, so everything but the model is the real thing.
Settings live in a temporary INI file and the store in a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
import soundfile
import srt
import webvtt
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QFileDialog

from app.live_transcript import CAPTION, TRANSLATION
from app.settings import AppSettings
from app.window import MainWindow
from engine.audio import InputDevice
from engine.errors import AudioError
from engine.store import SessionStore
from tests.app_doubles import Responsiveness, load_double

CAPTION_ROWS = ["Hello everyone and welcome.", "Today we test captions"]
TRANSLATION_ROWS = ["Hallo zusammen und willkommen.", "Heute testen wir Untertitel"]

DEVICES = [
    InputDevice(3, "USB headset", "ALSA", 1, 48000.0, False),
    InputDevice(
        "alsa_output.pci.analog-stereo.monitor",
        "Speakers (monitor)",
        "PulseAudio",
        2,
        48000.0,
        True,
    ),
]


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory):
    """2.8 s of quiet noise: the doubles decide the words, the engine paces the audio."""
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    noise = np.random.default_rng(0).normal(0, 0.05, int(2.8 * 16000)).astype(np.float32)
    soundfile.write(path, noise, 16000)
    return path


@pytest.fixture
def settings(tmp_path):
    q = QSettings(str(tmp_path / "livecap.ini"), QSettings.Format.IniFormat)
    s = AppSettings(q)
    s.set("first_run/offer_download", False)
    return s


@pytest.fixture
def store(tmp_path):
    store = SessionStore(tmp_path / "sessions.db")
    yield store
    store.close()


@pytest.fixture
def window(qtbot, settings, store):
    win = MainWindow(settings, store, loader=load_double, device_lister=lambda: DEVICES)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.input_combo.count() > 2)
    yield win
    win.close()


def pane_rows(pane) -> list[str]:
    return pane.toPlainText().split("\n")


def italic_text(pane) -> str:
    """The text drawn in italics (the partial tail) anywhere in the pane."""
    found = []
    block = pane.document().begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            fragment = it.fragment()
            if fragment.charFormat().fontItalic():
                found.append(fragment.text())
            it += 1
        block = block.next()
    return " ".join(found)


def run_session(qtbot, window, wav, translation="double-translate"):
    window.set_input_file(wav)
    window.set_caption_model("double-captions")
    window.set_translation_model(translation)
    seen_partials = {CAPTION: set(), TRANSLATION: set(), "level": set()}

    def watch(_index):
        seen_partials["level"].add(round(window.status.meter.rms_db))
        for pane in (window.caption_pane, window.translation_pane):
            text = italic_text(pane)
            if text:
                seen_partials[pane.role].add(text)

    window.transcript.row_changed.connect(watch)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)  # shortcuts go to the active window
    qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.controller.state == "running", timeout=5000)
    qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=15000)
    window.transcript.row_changed.disconnect(watch)
    return seen_partials


def test_session_fills_both_panes_then_history_and_exports(
    qtbot, window, store, tmp_path, monkeypatch, speech_wav
):
    watch = Responsiveness()
    partials = run_session(qtbot, window, speech_wav)
    assert watch.stop() == [], "the GUI thread was blocked for more than 100 ms"

    # Partial text was shown in italics, and in the end everything is committed, row by row.
    assert any("Today" in p for p in partials[CAPTION]), partials
    assert any("Heute" in p for p in partials[TRANSLATION]), partials
    assert italic_text(window.caption_pane) == ""
    assert max(partials["level"]) > -40  # the meter moved (the noise is at about -26 dBFS)
    assert pane_rows(window.caption_pane) == CAPTION_ROWS
    assert pane_rows(window.translation_pane) == TRANSLATION_ROWS
    assert re.fullmatch(r"\d+\.\d\d× real time · latency \d+\.\d s", window.status.speed.text())

    # The session is in the history; it can be found by its text and exported.
    window.show_history()
    history = window.history
    assert history.list.topLevelItemCount() == 1
    history.search.setText("Untertitel")
    qtbot.waitUntil(lambda: "[Untertitel]" in history.list.topLevelItem(0).text(4))
    history.search.setText("nothing-like-this")
    qtbot.waitUntil(lambda: history.list.topLevelItemCount() == 0)
    history.search.setText("welcome")
    qtbot.waitUntil(lambda: history.list.topLevelItemCount() == 1)
    assert "Hallo zusammen" in history.viewer.toPlainText()

    for fmt in ("srt", "vtt", "json", "txt"):
        target = tmp_path / f"out.{fmt}"
        monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, t=target: (str(t), ""))
        history.export_button.click()
        assert target.exists()
    subs = list(srt.parse((tmp_path / "out.srt").read_text(encoding="utf-8")))
    assert [s.content for s in subs] == CAPTION_ROWS
    assert subs[0].start.total_seconds() == pytest.approx(0.1)
    assert subs[1].end.total_seconds() == pytest.approx(2.6)
    cues = webvtt.read(str(tmp_path / "out.vtt"))
    assert [c.text for c in cues] == CAPTION_ROWS
    data = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert [s["text"] for s in data["translation"]["segments"]] == TRANSLATION_ROWS
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines() == CAPTION_ROWS

    # Exporting the current session is one action away (Ctrl+E).
    current = tmp_path / "current.vtt"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a: (str(current), ""))
    window.export_action.trigger()
    assert [c.text for c in webvtt.read(str(current))] == CAPTION_ROWS
    assert str(current) in window.banner.message.text()  # it says where the file went

    # Deleting it empties the history.
    monkeypatch.setattr("app.history.QMessageBox.question", lambda *a: _yes())
    history.search.clear()
    qtbot.waitUntil(lambda: history.list.topLevelItemCount() == 1)
    history.delete_button.click()
    assert history.list.topLevelItemCount() == 0
    assert store.sessions() == []


def _yes():
    from PySide6.QtWidgets import QMessageBox

    return QMessageBox.StandardButton.Yes


class UnpluggedSource:
    """A capture device that delivers a little audio, then disappears mid-session."""

    name = "USB headset"
    sample_rate = 16000

    def __init__(self, device=None) -> None:
        self.thread = None

    def start(self, ring) -> None:
        import threading

        def play():
            noise = np.zeros((1600, 1), dtype=np.float32)
            for _ in range(16):  # 1.6 s, a bit faster than real time
                ring.write(noise)
                time.sleep(0.05)
            ring.close("The device was unplugged.", error=True)

        self.thread = threading.Thread(target=play, daemon=True)
        self.thread.start()

    def check(self) -> None:
        pass

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.join()


class MissingMicrophone(UnpluggedSource):
    def start(self, ring) -> None:
        raise AudioError(
            "The microphone 'USB headset' cannot be opened.", "Plug it in, or choose another input."
        )


def choose_input(window, label):
    window.input_combo.setCurrentIndex(window.input_combo.findText(label))


def test_escape_stops_a_running_session_and_keeps_its_text(qtbot, window, speech_wav):
    window.set_input_file(speech_wav)
    window.set_caption_model("double-captions")
    window.start_button.click()
    qtbot.waitUntil(lambda: "welcome." in window.caption_pane.toPlainText(), timeout=5000)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert window.controller.state in ("stopping", "idle")
    qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=5000)
    assert window.start_button.text() == "Start"
    assert window.caption_pane.toPlainText().startswith("Hello everyone and welcome.")
    assert window.controller.last_session_id is not None


def test_inputs_are_labelled_and_the_choice_is_remembered(qtbot, window, settings, store):
    labels = [window.input_combo.itemText(i) for i in range(window.input_combo.count())]
    assert labels == [
        "Default microphone",
        "Microphone: USB headset",
        "System audio: Speakers (monitor)",
        "Audio file…",
    ]
    window.input_combo.setCurrentIndex(2)  # what choosing it with mouse or keyboard does
    window.input_combo.activated.emit(2)
    assert window.input_choice().system_audio
    window.close()
    again = MainWindow(settings, store, loader=load_double, device_lister=lambda: DEVICES)
    qtbot.addWidget(again)
    qtbot.waitUntil(lambda: again.input_combo.count() > 2)
    assert again.input_combo.currentText() == "System audio: Speakers (monitor)"
    again.close()


def test_slow_model_load_and_device_loss_keep_the_gui_responsive_and_the_text(
    qtbot, window, monkeypatch
):
    monkeypatch.setattr("engine.audio.MicrophoneSource", UnpluggedSource)
    choose_input(window, "Microphone: USB headset")
    window.set_caption_model("slow-double")  # takes 0.6 s to load, off the GUI thread
    window.set_translation_model("")
    watch = Responsiveness()
    window.start_button.click()
    qtbot.waitUntil(lambda: window.load_bar.isVisible())
    assert window.start_button.text() == "Cancel"
    qtbot.waitUntil(lambda: window.controller.state == "running", timeout=5000)
    qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=10000)
    assert watch.stop() == [], "the GUI thread was blocked for more than 100 ms"
    assert window.banner.isVisible()
    assert "The device was unplugged." in window.banner.message.text()
    assert "choose another input" in window.banner.hint.text()
    assert pane_rows(window.caption_pane)[0] == "Hello everyone and welcome."
    assert not window.translation_box.isVisible()


def test_model_and_device_errors_show_a_message_and_keep_the_text(
    qtbot, window, monkeypatch, speech_wav
):
    run_session(qtbot, window, speech_wav)
    kept = window.caption_pane.toPlainText()

    window.set_caption_model("broken-model")
    window.start_button.click()
    qtbot.waitUntil(lambda: window.banner.isVisible())
    assert window.banner.message.text() == "broken-model is not downloaded."
    assert window.banner.hint.text() == "Download it in Tools → Models."
    assert window.controller.state == "idle" and window.start_button.text() == "Start"
    assert window.caption_pane.toPlainText() == kept

    monkeypatch.setattr("engine.audio.MicrophoneSource", MissingMicrophone)
    window.banner.hide()
    window.set_caption_model("double-captions")
    choose_input(window, "Microphone: USB headset")
    window.start_button.click()
    qtbot.waitUntil(lambda: window.banner.isVisible())
    assert "cannot be opened" in window.banner.message.text()
    assert window.caption_pane.toPlainText() == kept
    assert window.controller.state == "idle"


def test_no_audio_system_still_offers_files(qtbot, settings, store):
    def no_audio():
        raise AudioError("No audio system: PortAudio is not installed.", "Install it.")

    win = MainWindow(settings, store, loader=load_double, device_lister=no_audio)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.banner.isVisible())
    assert "No audio system" in win.banner.message.text()
    assert "audio file" in win.banner.hint.text()
    assert win.input_combo.findText("Audio file…") >= 0
    win.close()


def test_python_main_py_opens_the_window_and_quits_cleanly(tmp_path):
    """`python main.py` with no subcommand: the real run(), default settings and store
    locations pointed into a temporary home."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script = (
        "import sys\n"
        "from PySide6.QtCore import QTimer\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication(sys.argv)\n"
        "def check():\n"
        "    shown = [w for w in app.topLevelWidgets() if w.objectName() == 'mainWindow']\n"
        "    print('WINDOW', shown[0].windowTitle() if shown and shown[0].isVisible() else None)\n"
        "    app.quit()\n"
        "QTimer.singleShot(1500, check)\n"
        "import main\n"
        "sys.exit(main.main([]))\n"
    )
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "QT_QPA_PLATFORM": "offscreen",
        "LIVECAP_NO_FIRST_RUN": "1",
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "WINDOW Livecap" in done.stdout
    assert (tmp_path / "data" / "livecap" / "sessions.db").exists()
    assert (tmp_path / "config" / "Livecap" / "Livecap.conf").exists()


def test_a_second_session_reuses_the_loaded_model_and_text_can_be_copied(
    qtbot, settings, store, speech_wav
):
    from PySide6.QtGui import QGuiApplication, QKeySequence

    loads = []

    def counting_loader(model, options):
        loads.append(model)
        return load_double(model, options)

    win = MainWindow(settings, store, loader=counting_loader, device_lister=lambda: DEVICES)
    qtbot.addWidget(win)
    win.show()
    for _ in range(2):
        run_session(qtbot, win, speech_wav, translation="")
    assert loads == ["double-captions"]
    assert len(store.sessions()) == 2

    win.caption_pane.setFocus()
    win.caption_pane.selectAll()
    qtbot.keySequence(win.caption_pane, QKeySequence.StandardKey.Copy)
    assert QGuiApplication.clipboard().text().splitlines() == CAPTION_ROWS
    win.close()


def test_a_session_the_full_disk_could_not_take_is_offered_for_export(
    qtbot, window, store, tmp_path, monkeypatch, speech_wav
):
    from PySide6.QtWidgets import QMessageBox

    from tests.test_store import FullDisk

    disk = store._db = FullDisk(store._db)
    disk.full = True  # the session's row goes in, none of its text does
    asked = []

    def answer_yes(_parent, title, text, *_buttons):
        asked.append(text)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr("app.history.QMessageBox.question", answer_yes)
    target = tmp_path / "rescued.txt"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a: (str(target), ""))
    run_session(qtbot, window, speech_wav)
    qtbot.waitUntil(lambda: target.exists(), timeout=5000)

    assert len(asked) == 1 and "is full" in asked[0]
    assert target.read_text(encoding="utf-8").splitlines() == CAPTION_ROWS
    assert str(target) in window.banner.message.text()
