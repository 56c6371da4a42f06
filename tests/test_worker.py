"""EngineWorker: feeds whole frames, flushes at the end, reports stats and model failures."""

from __future__ import annotations

import dataclasses
import json
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


# -- one producer of Stats --------------------------------------------------------------------


class DelayedRecognizer(RecordingRecognizer):
    """A recording double whose model states a fixed delay of 0.5 s."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.info = dataclasses.replace(self.info, delay_seconds=0.5)


def test_latency_is_the_backlog_plus_the_models_own_delay():
    recognizer = DelayedRecognizer(sample_rate=16000)
    _, events = run_worker(recognizer, np.zeros(16000, np.float32), 16000)
    final = events[-1]
    assert isinstance(final, Stats) and final.latency_seconds == 0.5  # nothing left waiting


def test_nonfinite_input_is_silenced_before_the_model_and_counted():
    audio = np.full(16000, 0.25, np.float32)
    audio[100:200] = np.nan
    audio[300] = np.inf
    audio[400] = -np.inf
    recognizer = RecordingRecognizer(sample_rate=16000)
    _, events = run_worker(recognizer, audio, 16000)
    fed = recognizer.audio
    assert np.isfinite(fed).all()
    assert (fed[100:200] == 0).all() and fed[300] == 0 and fed[400] == 0
    assert fed[99] == 0.25 and fed[200] == 0.25
    assert events[-1].nonfinite_samples == 102


def test_nonfinite_input_never_reaches_a_resampling_reader():
    ring = AudioRing(22050, seconds=5)
    reader = ring.reader(16000)
    block = np.zeros((2205, 2), np.float32)
    block[10, 0] = np.nan  # one bad channel sample spoils the mono mix-down
    ring.write(block)
    ring.close()
    out = reader.read(1)
    assert np.isfinite(out).all() and ring.nonfinite_samples == 1


def test_kyutai_reports_no_stats_of_its_own(tmp_path):
    from engine.recognizer import LoadOptions
    from engine.streaming.kyutai_stream import load_recognizer
    from tests.kyutai_fixtures import SHAPES, build_tiny_model, speechlike_audio

    folder = build_tiny_model(tmp_path / "tiny", SHAPES["gqa"])
    recognizer = load_recognizer(folder, str(folder), LoadOptions(device="cpu", dtype="float32"))
    audio = speechlike_audio(3.0, seed=1)
    events = recognizer.feed(audio) + recognizer.flush()
    assert events and not any(isinstance(e, Stats) for e in events)
    assert recognizer.info.languages == ()  # a local folder of unknown languages


def test_kyutai_languages_come_from_the_catalogue_or_the_checkpoint(tmp_path):
    from engine.streaming.kyutai_stream import model_languages

    folder = tmp_path / "my-stt-en_fr-copy"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "kyutai_speech_to_text"}))
    assert model_languages(folder, "someone/stt-en_fr-lookalike") == ()  # names prove nothing
    assert model_languages(folder, "kyutai/stt-2.6b-en-trfs") == ("en",)
    snapshot = tmp_path / "hub" / "models--kyutai--stt-1b-en_fr-trfs" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    assert model_languages(snapshot, str(snapshot)) == ("en", "fr")
    (folder / "config.json").write_text(json.dumps({"languages": ["de"]}))
    assert model_languages(folder, str(folder)) == ("de",)
