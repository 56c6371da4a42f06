"""Level metering in dBFS."""

from __future__ import annotations

import numpy as np
import pytest

from engine.audio.meter import SILENCE_DBFS, measure


def test_full_scale_sine_and_square():
    t = np.arange(48000) / 48000
    sine = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    level = measure(sine)
    assert level.peak_dbfs == pytest.approx(0.0, abs=1e-3)
    assert level.rms_dbfs == pytest.approx(-3.0103, abs=1e-2)  # 20*log10(1/sqrt(2))
    square = np.full(100, 0.1, np.float32)
    assert measure(square).rms_dbfs == pytest.approx(-20.0, abs=1e-4)
    assert measure(square).peak_dbfs == pytest.approx(-20.0, abs=1e-4)


def test_silence_and_empty_read_as_the_floor():
    assert measure(np.zeros(100, np.float32)).rms_dbfs == SILENCE_DBFS
    assert measure(np.zeros(0, np.float32)).peak_dbfs == SILENCE_DBFS
