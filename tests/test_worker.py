"""EngineWorker: feeds whole frames, flushes at the end, reports stats and model failures."""

from __future__ import annotations

import threading

import numpy as np

from engine.audio.ring import AudioRing
from engine.events import Commit, EndOfTurn, Error, Stats
from tests.recognizer_doubles import FailingRecognizer, RecordingRecognizer


def run_worker(recognizer, audio: np.ndarray, ring_rate: int):
    from engine.worker import EngineWorker

    ring = AudioRing(ring_rate, seconds=5)
    events = []
    worker = EngineWorker(recognizer, ring.reader(recognizer.sample_rate), events.append)
    worker.start()
    for start in range(0, audio.size, 333):
        ring.write(audio[start : start + 333], wait=True)
    ring.close("End of file.")
    assert worker.join(timeout=30)
    return worker, events


def test_audio_reaches_the_recognizer_intact_and_is_flushed():
    audio = np.random.default_rng(0).uniform(-1, 1, 16000 * 2).astype(np.float32)
    recognizer = RecordingRecognizer(sample_rate=16000)
    worker, events = run_worker(recognizer, audio, 16000)
    np.testing.assert_array_equal(recognizer.audio, audio)
    assert recognizer.flushed.is_set()
    commits = [e for e in events if isinstance(e, Commit)]
    assert [c.text for c in commits] == ["w0", "w1", "w2", "w3"]
    assert isinstance(events[-2], EndOfTurn)
    stats = events[-1]
    assert isinstance(stats, Stats) and stats.audio_seconds == 2.0
    assert stats.dropped_seconds == 0.0


def test_model_exception_becomes_an_error_event_not_a_dead_app():
    recognizer = FailingRecognizer(fail_after=1000, sample_rate=16000)
    worker, events = run_worker(recognizer, np.zeros(16000, np.float32), 16000)
    errors = [e for e in events if isinstance(e, Error)]
    assert len(errors) == 1 and errors[0].fatal
    assert "model blew up" in errors[0].message and errors[0].hint
    assert not recognizer.flushed.is_set()
    assert worker.reader not in worker.reader.ring._readers  # it stopped holding the ring back


def test_stats_arrive_about_once_a_second_with_drops():
    from engine.worker import EngineWorker

    ring = AudioRing(16000, seconds=0.1)
    recognizer = RecordingRecognizer(sample_rate=16000)
    events = []
    reader = ring.reader(16000)
    ring.write(np.zeros(16000, np.float32))  # 1 s into a 0.1 s ring: 0.9 s lost
    worker = EngineWorker(recognizer, reader, events.append)
    worker.start()
    got_stats = threading.Event()
    for _ in range(30):
        if any(isinstance(e, Stats) for e in events):
            got_stats.set()
            break
        ring.write(np.zeros(1600, np.float32))
        threading.Event().wait(0.1)
    ring.close()
    worker.join(10)
    assert got_stats.is_set()
    stats = [e for e in events if isinstance(e, Stats)]
    assert stats[0].dropped_seconds == 0.9
