"""AudioRing: a bounded ring of mono float32 audio at the capture rate, read by many readers.

The capture side (a PortAudio callback, a file reader) writes into a preallocated buffer
under a short lock. Each reader keeps its own cursor and its own soxr resampler, so several
engines at different rates (24 kHz Kyutai, 16 kHz Speech2Text) share one ring, each getting
the audio at its own rate. A reader that falls more than the ring's capacity behind loses
the oldest audio; the loss is counted per reader (`dropped_seconds`), never silent.
NaN and infinite samples are replaced with silence as they are written, and counted
(`nonfinite_samples`), so no reader, resampler or model ever sees them.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from engine.audio.finite import silence_nonfinite
from engine.audio.resample import StreamResampler


class AudioRing:
    def __init__(self, sample_rate: int, seconds: float = 30.0) -> None:
        self.sample_rate = sample_rate
        self.capacity = max(1, round(sample_rate * seconds))
        self._buffer = np.zeros(self.capacity, np.float32)
        self._written = 0  # samples written since the start; position p lives at p % capacity
        self._cond = threading.Condition(threading.Lock())
        self._readers: list[RingReader] = []
        self.closed = False
        self.end_reason = ""
        self.end_error = False
        self.last_write = time.monotonic()
        self.nonfinite_samples = 0  # replaced with silence since the start

    @property
    def written(self) -> int:
        return self._written

    def write(self, block: np.ndarray, wait: bool = False) -> None:
        """Append samples, shape (n,) or (n, channels) (mixed down to mono in place).

        Safe for an audio callback: no allocation beyond numpy views, the lock held only for
        the copy. With `wait`, block while the slowest reader would lose audio (file replay
        as fast as the engines go).
        """
        frames = block.shape[0]
        with self._cond:
            if wait:
                needed = min(frames, self.capacity)
                self._cond.wait_for(lambda: self.closed or self._room() >= needed)
            if self.closed:
                return
            if frames > self.capacity:  # only the newest `capacity` samples can be kept
                self._written += frames - self.capacity
                block = block[frames - self.capacity :]
                frames = self.capacity
            start = self._written % self.capacity
            first = min(frames, self.capacity - start)
            self._copy_in(block[:first], start)
            if first < frames:
                self._copy_in(block[first:], 0)
            self._written += frames
            self.last_write = time.monotonic()
            self._cond.notify_all()

    def close(self, reason: str = "", error: bool = False) -> None:
        """End of stream: readers drain what is left, then get None. The first reason wins."""
        with self._cond:
            if not self.closed:
                self.closed, self.end_reason, self.end_error = True, reason, error
            self._cond.notify_all()

    def reader(self, rate: int | None = None) -> RingReader:
        """A new reader starting at the current write position, resampling to `rate`."""
        with self._cond:
            reader = RingReader(self, self._written, rate or self.sample_rate)
            self._readers.append(reader)
            return reader

    def _remove(self, reader: RingReader) -> None:
        with self._cond:
            if reader in self._readers:
                self._readers.remove(reader)
            self._cond.notify_all()

    def _room(self) -> int:
        if not self._readers:
            return self.capacity
        slowest = min(reader.cursor for reader in self._readers)
        return self.capacity - (self._written - slowest)

    def _copy_in(self, block: np.ndarray, start: int) -> None:
        target = self._buffer[start : start + block.shape[0]]
        if block.ndim == 1:
            target[:] = block
        elif block.shape[1] == 1:
            target[:] = block[:, 0]
        else:
            np.mean(block, axis=1, out=target)
        self.nonfinite_samples += silence_nonfinite(target)


class RingReader:
    """One consumer's view of the ring: its cursor, its resampler, its count of lost audio."""

    def __init__(self, ring: AudioRing, cursor: int, rate: int) -> None:
        self.ring = ring
        self.cursor = cursor
        self.rate = rate
        self.dropped_samples = 0  # at the ring's rate
        self._resampler = StreamResampler(ring.sample_rate, rate)
        self._finished = False

    @property
    def dropped_seconds(self) -> float:
        return self.dropped_samples / self.ring.sample_rate

    @property
    def backlog_seconds(self) -> float:
        """Audio written but not yet read: how far behind the live input this reader is."""
        return min(self.ring.written - self.cursor, self.ring.capacity) / self.ring.sample_rate

    def read(self, min_samples: int = 1, timeout: float | None = None) -> np.ndarray | None:
        """Everything new, resampled to `rate`, after waiting up to `timeout` seconds for
        about `min_samples` (at `rate`) to arrive; possibly empty. None once the ring is
        closed and this reader has had everything.
        """
        if self._finished:
            return None
        ring = self.ring
        need = max(1, int(np.ceil(min_samples * ring.sample_rate / self.rate)))
        with ring._cond:
            ring._cond.wait_for(lambda: ring.closed or ring._written - self.cursor >= need, timeout)
            raw = self._take()
            ring._cond.notify_all()  # a writer may be waiting for this reader to make room
            ending = ring.closed and ring._written == self.cursor
        out = self._resampler.process(raw)
        if ending:
            self._finished = True
            tail = self._resampler.flush()
            out = np.concatenate([out, tail]) if tail.size else out
            if out.size == 0:
                return None
        return out

    def close(self) -> None:
        """Stop reading: a closed reader no longer holds back a waiting writer."""
        self._finished = True
        self.ring._remove(self)

    def _take(self) -> np.ndarray:
        """Copy out [cursor, written), first skipping what was overwritten. Lock held."""
        ring = self.ring
        behind = ring._written - self.cursor
        if behind > ring.capacity:
            lost = behind - ring.capacity
            self.dropped_samples += lost
            self.cursor += lost
            behind = ring.capacity
        start = self.cursor % ring.capacity
        first = min(behind, ring.capacity - start)
        raw = np.empty(behind, np.float32)
        raw[:first] = ring._buffer[start : start + first]
        raw[first:] = ring._buffer[: behind - first]
        self.cursor += behind
        return raw
