"""Input level for the UI meter: RMS and peak in dBFS (0 dBFS = full scale)."""

from __future__ import annotations

import numpy as np

from engine.events import Level

SILENCE_DBFS = -120.0  # what digital silence reads as, instead of minus infinity


def to_dbfs(amplitude: float) -> float:
    if amplitude <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * float(np.log10(amplitude)))


def measure(samples: np.ndarray) -> Level:
    """The level of a block of float samples in [-1, 1]."""
    if samples.size == 0:
        return Level(SILENCE_DBFS, SILENCE_DBFS)
    samples = samples.astype(np.float64, copy=False)
    rms = float(np.sqrt(np.mean(samples * samples)))
    peak = float(np.max(np.abs(samples)))
    return Level(to_dbfs(rms), to_dbfs(peak))
