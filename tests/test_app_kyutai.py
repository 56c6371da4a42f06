"""The window with a real recognizer: a tiny random Kyutai model in the Hub layout, loaded by
engine.recognizer.load_recognizer off the GUI thread, fed by a WAV through the engine."""

from __future__ import annotations

import gc
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import soundfile
from PySide6.QtCore import QSettings

from app.settings import AppSettings
from app.window import MainWindow
from engine.recognizer import load_recognizer
from engine.store import SessionStore
from tests.app_doubles import Responsiveness
from tests.test_app import pane_rows

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_kyutai(tmp_path_factory):
    from tests.kyutai_fixtures import SAMPLE_RATE, SHAPES, build_tiny_model, speechlike_audio

    folder = build_tiny_model(tmp_path_factory.mktemp("kyutai-gui"), SHAPES["gqa"])
    wav = folder.parent / "speech.wav"
    soundfile.write(wav, speechlike_audio(3.0, seed=5), SAMPLE_RATE)
    return folder, wav


def test_a_tiny_kyutai_model_captions_in_the_window(qtbot, tmp_path, tiny_kyutai):
    folder, wav = tiny_kyutai
    settings = AppSettings(QSettings(str(tmp_path / "livecap.ini"), QSettings.Format.IniFormat))
    settings.set("first_run/offer_download", False)
    settings.set("engine/device", "cpu")
    store = SessionStore(tmp_path / "sessions.db")
    window = MainWindow(settings, store, loader=load_recognizer, device_lister=lambda: [])
    qtbot.addWidget(window)
    window.show()
    window.set_input_file(wav)
    window.set_caption_model(str(folder))
    window.set_translation_model("")
    commits = []
    window.controller.events.connect(
        lambda batch: commits.extend(e for _, e in batch if type(e).__name__ == "Commit")
    )

    watch = Responsiveness()
    window.start_button.click()
    qtbot.waitUntil(lambda: window.controller.state == "running", timeout=30000)
    qtbot.waitUntil(lambda: window.controller.state == "idle", timeout=30000)
    assert watch.stop() == [], "the GUI thread was blocked for more than 100 ms"
    # Loading froze the heap, so a full collection (which holds the GIL) walks only what the
    # session allocated since, not torch's and the model's objects.
    assert len(gc.get_objects()) < gc.get_freeze_count() / 5
    assert not window.banner.isVisible(), window.banner.message.text()
    assert commits, "the tiny model committed no text"
    assert window.status.model.text() == str(folder)
    assert window.status.device.text().startswith("CPU")

    stored = store.transcript(window.controller.last_session_id)
    assert pane_rows(window.caption_pane) == [s.text for s in stored.segments]
    window.close()
    store.close()
