"""Streaming resampling with soxr: blocks of any size in, no clicks at block boundaries.

soxr's stream object keeps the filter's history between calls, so resampling a signal in
many odd-sized blocks gives the same samples as resampling it in one go.
"""

from __future__ import annotations

import numpy as np
import soxr


class StreamResampler:
    """Mono float32 from `in_rate` to `out_rate`; a pass-through when the rates are equal."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
            if in_rate != out_rate
            else None
        )

    def process(self, samples: np.ndarray) -> np.ndarray:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=False)

    def flush(self) -> np.ndarray:
        """The filter's tail at the end of the stream."""
        if self._stream is None:
            return np.zeros(0, np.float32)
        return self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
