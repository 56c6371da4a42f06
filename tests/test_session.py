"""LiveSession: a source, caption + translation engines at different rates, the store."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from engine.audio.ring import AudioRing
from engine.audio.sources import FileSource
from engine.errors import AudioError
from engine.events import CaptureEnded, Commit, Error, Level
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


def full_disk_session(tmp_path, free_after_commits: int | None):
    """A file through a session whose store's disk is full from the start; it is freed
    after `free_after_commits` commits (None: never)."""
    from tests.test_store import FullDisk

    rate = 16000
    path = tmp_path / "speech.wav"
    soundfile.write(path, np.full(rate * 3, 0.1, np.float32), rate)
    store = SessionStore(tmp_path / "s.db")
    disk = store._db = FullDisk(store._db)
    events = []

    def on_event(role, event):
        events.append((role, event))
        commits = sum(isinstance(e, Commit) for _, e in events)
        if free_after_commits is not None and commits >= free_after_commits:
            disk.full = False

    session = LiveSession(
        FileSource(path, realtime=False),
        RecordingRecognizer(word_seconds=0.1),
        on_event,
        store=store,
    )
    disk.full = True
    session.start()
    assert session.wait(timeout=20)  # ending never hangs on the store
    warnings = [e for _, e in events if isinstance(e, Error) and "Saving" in e.message]
    return session, store, warnings


def test_a_full_disk_warns_once_and_everything_is_saved_when_space_returns(tmp_path):
    session, store, warnings = full_disk_session(tmp_path, free_after_commits=10)
    assert len(warnings) == 1 and not warnings[0].fatal
    assert "is full" in warnings[0].message and "kept in memory" in warnings[0].hint
    words = " ".join(s.text for s in store.transcript(session.session_id).segments).split()
    assert words == [f"w{n}" for n in range(30)]
    assert store.sessions()[0].duration == 3.0 and session.save_error is None


def test_a_disk_that_stays_full_still_ends_the_session_with_the_text_in_memory(tmp_path):
    session, store, warnings = full_disk_session(tmp_path, free_after_commits=None)
    assert len(warnings) == 1
    assert session.save_error is not None and "is full" in session.save_error.message
    words = " ".join(s.text for s in session.transcript().segments).split()
    assert words == [f"w{n}" for n in range(30)]


def test_a_really_full_disk_mid_session_loses_nothing(small_tmpfs, tmp_path):
    from tests.conftest import fill_disk

    path = tmp_path / "speech.wav"
    soundfile.write(path, np.full(16000 * 3, 0.1, np.float32), 16000)
    store = SessionStore(small_tmpfs / "sessions.db")
    events, filler = [], []

    def on_event(role, event):
        events.append((role, event))
        commits = sum(isinstance(e, Commit) for _, e in events)
        if isinstance(event, Commit) and commits == 3:
            filler.append(fill_disk(small_tmpfs))  # the disk fills up mid-session...
        if isinstance(event, Commit) and commits == 20:
            filler[0].unlink()  # ...and space comes back

    session = LiveSession(
        FileSource(path, realtime=False),
        RecordingRecognizer(word_seconds=0.1),
        on_event,
        store=store,
    )
    session.start()
    assert session.wait(timeout=20)
    warnings = [e for _, e in events if isinstance(e, Error) and "Saving" in e.message]
    assert len(warnings) == 1 and "is full" in warnings[0].message
    reopened = SessionStore(small_tmpfs / "sessions.db")
    words = " ".join(s.text for s in reopened.transcript(session.session_id).segments).split()
    assert words == [f"w{n}" for n in range(30)]
    assert reopened.sessions()[0].duration == 3.0
