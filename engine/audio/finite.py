"""Non-finite samples (NaN, ±inf) never reach a model: they become silence, and are counted.

A single NaN spreads through a resampler's filter and a model's activations, so one bad
sample in a float file can wipe out seconds of captions; silence costs only that sample.
"""

from __future__ import annotations

import numpy as np


def silence_nonfinite(samples: np.ndarray) -> int:
    """Replace NaN and ±inf in `samples` with 0.0, in place; return how many there were."""
    bad = ~np.isfinite(samples)
    count = int(np.count_nonzero(bad))
    if count:
        samples[bad] = 0.0
    return count
