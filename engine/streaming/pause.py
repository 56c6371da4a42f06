"""Energy-based pause detection: where speech stops, a caption engine can commit at once.

The signal is cut into 20 ms blocks; a block is *loud* when its RMS is well above a running
noise floor (and above an absolute floor, so digital silence and faint hiss never count as
speech). A pause is confirmed once `min_pause` seconds of quiet follow speech; it is reported
once, with the stream time at which the quiet began.
"""

from __future__ import annotations

import numpy as np

_BLOCK_SECONDS = 0.02
_ABSOLUTE_FLOOR_DB = -50.0  # quieter than this is never speech
_MARGIN_DB = 12.0  # speech stands this far above the noise floor
_FLOOR_RISE_DB = 0.05  # per block: the floor follows rising noise slowly, falling noise at once


class PauseDetector:
    def __init__(self, sample_rate: int, min_pause: float = 0.5) -> None:
        self.sample_rate = sample_rate
        self.block = max(1, round(sample_rate * _BLOCK_SECONDS))
        self.min_quiet_blocks = max(1, round(min_pause / _BLOCK_SECONDS))
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)  # samples short of a whole block
        self._blocks = 0  # whole blocks seen since the start
        self._floor_db = _ABSOLUTE_FLOOR_DB
        self._quiet_run = 0  # quiet blocks since the last loud one
        self.in_speech = False

    def feed(self, samples: np.ndarray) -> list[float]:
        """Consume audio; return the stream times (s) where newly confirmed pauses began."""
        audio = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        whole = len(audio) // self.block * self.block
        self._pending = audio[whole:].copy()
        if whole == 0:
            return []
        blocks = audio[:whole].reshape(-1, self.block)
        levels = 10.0 * np.log10(np.mean(blocks * blocks, axis=1) + 1e-12)
        pauses = []
        for level in levels:
            self._blocks += 1
            if self._is_loud(level):
                self.in_speech = True
                self._quiet_run = 0
                continue
            self._quiet_run += 1
            if self.in_speech and self._quiet_run >= self.min_quiet_blocks:
                self.in_speech = False
                pauses.append((self._blocks - self._quiet_run) * self.block / self.sample_rate)
        return pauses

    def _is_loud(self, level_db: float) -> bool:
        loud = level_db > max(self._floor_db + _MARGIN_DB, _ABSOLUTE_FLOOR_DB)
        if not loud:  # only quiet blocks teach the floor, so long speech cannot raise it
            self._floor_db = min(level_db, self._floor_db + _FLOOR_RISE_DB)
            self._floor_db = max(self._floor_db, -100.0)
        return loud
