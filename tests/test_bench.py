"""`livecap bench` replays audio as it arrives live: a recognizer that falls behind gets the
frames that waited in one feed, and the lag it reports is what a user would see."""

from __future__ import annotations

import numpy as np
import pytest

import engine.bench as bench

RATE, FRAME = 24_000, 1920  # Kyutai's 80 ms frames (times that floats cannot hold exactly)
F = FRAME / RATE


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class CostedRecognizer:
    """Takes `fixed + per_frame * frames` seconds of the fake clock per feed."""

    sample_rate, frame_size = RATE, FRAME

    def __init__(self, clock: Clock, fixed: float, per_frame: float) -> None:
        self.clock, self.fixed, self.per_frame = clock, fixed, per_frame
        self.feeds: list[int] = []

    def feed(self, samples: np.ndarray) -> list:
        frames = len(samples) // FRAME
        self.feeds.append(frames)
        self.clock.now += self.fixed + self.per_frame * frames
        return []


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(bench.time, "perf_counter", clock.perf_counter)
    return clock


def test_a_fast_recognizer_gets_one_frame_per_feed(clock):
    recognizer = CostedRecognizer(clock, 0.0, 0.25 * F)
    frame_ms, lag_ms = bench.replay_live(recognizer, np.zeros(50 * FRAME, np.float32))
    assert recognizer.feeds == [1] * 50
    assert frame_ms == pytest.approx([20.0] * 50)
    assert lag_ms == pytest.approx([20.0] * 50)  # each frame is done 20 ms after it arrived


def test_a_slow_step_that_batches_well_catches_up(clock):
    """1.25 frames' time per lone frame is slower than real time, but frames that waited
    cost a quarter frame each after the first: the feeds grow until they keep pace, and the
    lag stays bounded (the recognizer is then busy all the time: compute per frame ≈ the
    frame's duration)."""
    recognizer = CostedRecognizer(clock, F, 0.25 * F)
    frame_ms, lag_ms = bench.replay_live(recognizer, np.zeros(400 * FRAME, np.float32))
    assert sum(recognizer.feeds) == 400 and max(recognizer.feeds) > 1
    assert np.mean(frame_ms) == pytest.approx(80.0, abs=2.0)
    assert max(lag_ms[200:]) < 400.0 and max(lag_ms[200:]) <= max(lag_ms[:200]) + 1e-9


def test_a_recognizer_that_cannot_batch_falls_further_behind(clock):
    recognizer = CostedRecognizer(clock, 0.0, 1.25 * F)
    _, lag_ms = bench.replay_live(recognizer, np.zeros(400 * FRAME, np.float32))
    assert lag_ms[-1] > 3000.0 and lag_ms[-1] > 10 * lag_ms[10]
