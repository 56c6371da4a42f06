"""LiveSession: a source, caption + translation engines at different rates, the store."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from engine.audio.ring import AudioRing
from engine.audio.sources import FileSource
from engine.errors import AudioError
from engine.events import CaptureEnded, Commit, Level
from engine.session import LiveSession
from engine.store import SessionStore
from tests.recognizer_doubles import FailingRecognizer, RecordingRecognizer


@pytest.fixture
def speechlike_file(tmp_path):
    rate = 44100
    t = np.arange(int(rate * 1.5)) / rate
    audio = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    path = tmp_path / "tone.wav"
    soundfile.write(path, audio, rate, subtype="FLOAT")
    return path


def test_two_engines_at_their_own_rates_and_the_session_is_saved(speechlike_file, tmp_path):
    store = SessionStore(tmp_path / "s.db")
    caption = RecordingRecognizer(sample_rate=24000, frame_size=1920)
    translation = RecordingRecognizer(sample_rate=16000, frame_size=320)
    translation.info = translation.info.__class__(**{**vars(caption.info), "name": "tr"})
    events = []
    session = LiveSession(
        FileSource(speechlike_file, realtime=False),
        caption,
        lambda role, event: events.append((role, event)),
        translation=translation,
        store=store,
    )
    session.start()
    assert session.wait(timeout=30)
    assert abs(caption.fed - 36000) <= 2 and abs(translation.fed - 24000) <= 2
    roles = {role for role, _ in events}
    assert roles == {"caption", "translation", "audio"}
    assert any(isinstance(e, Level) and e.peak_dbfs > -11 for _, e in events)
    assert ("audio", CaptureEnded("End of file.", False)) in events
    saved = store.transcript(session.session_id)
    assert saved.segments[0].text == "w0 w1 w2"
    assert saved.translation.segments[0].text == "w0 w1 w2"
    assert saved.duration == pytest.approx(1.5)
    assert store.sessions()[0].source == "tone.wav"
    assert session.transcript().segments == saved.segments


class VanishingSource:
    """A device that delivers a little audio, then is lost."""

    name = "USB mic"
    sample_rate = 16000

    def start(self, ring: AudioRing) -> None:
        ring.write(np.zeros(16000, np.float32))
        ring.close("The audio input USB mic stopped.", error=True)

    def stop(self) -> None:
        pass

    def check(self) -> None:
        pass


def test_device_loss_ends_capture_clearly_and_keeps_the_transcript(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    events = []
    session = LiveSession(
        VanishingSource(), RecordingRecognizer(), lambda r, e: events.append((r, e)), store=store
    )
    session.start()
    assert session.wait(timeout=10)
    assert ("audio", CaptureEnded("The audio input USB mic stopped.", True)) in events
    assert store.transcript(session.session_id).segments[0].text == "w0 w1"
    assert store.sessions()[0].duration == 1.0


def test_caption_engine_failure_ends_the_session_but_keeps_what_was_said(speechlike_file):
    events = []
    session = LiveSession(
        FileSource(speechlike_file, realtime=True),
        FailingRecognizer(fail_after=12000),
        lambda r, e: events.append((r, e)),
    )
    session.start()
    assert session.wait(timeout=10)
    assert any(isinstance(e, Commit) for _, e in events)
    assert session.transcript().segments[0].text == "w0"
    assert ("audio", CaptureEnded("Stopped.", False)) in events


class UnopenableSource(VanishingSource):
    def start(self, ring: AudioRing) -> None:
        raise AudioError("Cannot open audio input USB mic", "Plug it in.")


def test_a_source_that_cannot_open_leaves_no_session_behind(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    session = LiveSession(UnopenableSource(), RecordingRecognizer(), lambda r, e: None, store=store)
    with pytest.raises(AudioError):
        session.start()
    assert store.sessions() == []
