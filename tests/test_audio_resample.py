"""Streaming resampling: many odd-sized blocks give the one-shot result, with no clicks."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from engine.audio.resample import StreamResampler


@pytest.mark.parametrize(("in_rate", "out_rate"), [(44100, 16000), (48000, 24000), (8000, 16000)])
def test_sine_in_odd_blocks_matches_one_shot(in_rate, out_rate):
    t = np.arange(in_rate * 2) / in_rate
    sine = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    resampler = StreamResampler(in_rate, out_rate)
    rng = np.random.default_rng(0)
    pieces, start = [], 0
    while start < sine.size:
        size = int(rng.choice([1, 7, 13, 127, 331, 1021, 4099]))
        pieces.append(resampler.process(sine[start : start + size]))
        start += size
    pieces.append(resampler.flush())
    streamed = np.concatenate(pieces)
    one_shot = soxr.resample(sine, in_rate, out_rate, quality="HQ")
    assert streamed.size == one_shot.size
    np.testing.assert_allclose(streamed, one_shot, atol=1e-5)
    # No clicks: away from the two ends, it is the ideal sine at the new rate.
    t_out = np.arange(streamed.size) / out_rate
    ideal = 0.5 * np.sin(2 * np.pi * 440 * t_out)
    middle = slice(out_rate // 10, -out_rate // 10)
    assert np.max(np.abs(streamed[middle] - ideal[middle])) < 1e-3
    assert np.max(np.abs(np.diff(streamed[middle]))) <= 0.5 * 2 * np.pi * 440 / out_rate * 1.01


def test_equal_rates_pass_through():
    resampler = StreamResampler(16000, 16000)
    block = np.linspace(-1, 1, 100, dtype=np.float32)
    np.testing.assert_array_equal(resampler.process(block), block)
    assert resampler.flush().size == 0
