"""The server's counters, written by the batch loop and the connections, read as Prometheus
text at GET /metrics. Hand-written exposition format: a few counters do not need a client
library, and each app keeps its own figures (no process-wide registry shared by two apps)."""

from __future__ import annotations

import threading
from collections import Counter

# Upper bounds of the histograms' buckets.
STEP_SECONDS_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# Why a stream was refused or ended early: the label values of livecap_errors_total.
ERROR_KINDS = ("auth", "capacity", "protocol", "buffer", "slow_reader", "idle", "engine")


class Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
        self.total += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        buckets = zip(self.bounds, self.counts, strict=True)
        lines = [f'{name}_bucket{{le="{bound:g}"}} {count}' for bound, count in buckets]
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.total}')
        return lines + [f"{name}_sum {self.sum:.6f}", f"{name}_count {self.total}"]


def _header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


class ServerMetrics:
    def __init__(self, slots: int, sample_rate: int) -> None:
        self._lock = threading.Lock()
        self._slots = slots
        self._sample_rate = sample_rate
        self.streams_open = 0
        self.streams_total = 0
        self.errors: Counter[str] = Counter()
        self.audio_received_samples = 0
        self.audio_dropped_samples = 0
        self.frames_stepped = 0
        self.step_seconds = Histogram(STEP_SECONDS_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        # frames a tick stepped → [ticks, seconds]: a tick's time by its batch, which the
        # mean over all ticks mixes with the part-filled ones
        self.ticks_by_frames: dict[int, list[float]] = {}

    def stream_opened(self) -> None:
        with self._lock:
            self.streams_open += 1
            self.streams_total += 1

    def stream_closed(self, dropped_samples: int) -> None:
        with self._lock:
            self.streams_open -= 1
            self.audio_dropped_samples += dropped_samples

    def error(self, kind: str, dropped_samples: int = 0) -> None:
        with self._lock:
            self.errors[kind] += 1
            self.audio_dropped_samples += dropped_samples

    def audio_received(self, samples: int) -> None:
        with self._lock:
            self.audio_received_samples += samples

    def tick(self, seconds: float, slots_stepped: int, frames: int) -> None:
        with self._lock:
            self.step_seconds.observe(seconds)
            self.batch_size.observe(slots_stepped)
            self.frames_stepped += frames
            ticks = self.ticks_by_frames.setdefault(frames, [0, 0.0])
            ticks[0] += 1
            ticks[1] += seconds

    def text(self) -> str:
        """The Prometheus text exposition (version 0.0.4)."""
        with self._lock:
            rate = self._sample_rate
            scalars = [
                ("livecap_slots", "gauge", "Stream slots of the batched engine.", self._slots),
                ("livecap_streams_open", "gauge", "Streams holding a slot.", self.streams_open),
                ("livecap_streams_total", "counter", "Streams given a slot.", self.streams_total),
                ("livecap_audio_received_seconds_total", "counter", "Stream audio received.",
                 f"{self.audio_received_samples / rate:.3f}"),
                ("livecap_audio_dropped_seconds_total", "counter",
                 "Stream audio refused, or still queued when its stream ended.",
                 f"{self.audio_dropped_samples / rate:.3f}"),
                ("livecap_frames_stepped_total", "counter", "Model frames stepped, all slots.",
                 self.frames_stepped),
            ]  # fmt: skip
            lines: list[str] = []
            for name, kind, help_text, value in scalars:
                lines += _header(name, kind, help_text) + [f"{name} {value}"]
            name = "livecap_errors_total"
            lines += _header(name, "counter", "Streams refused or ended by an error, by kind.")
            lines += [f'{name}{{kind="{kind}"}} {self.errors[kind]}' for kind in ERROR_KINDS]
            lines += _header("livecap_step_seconds", "histogram", "Time of one batched tick.")
            lines += self.step_seconds.lines("livecap_step_seconds")
            lines += _header("livecap_batch_fill", "histogram", "Slots stepped in one tick.")
            lines += self.batch_size.lines("livecap_batch_fill")
            name = "livecap_tick_seconds_by_frames"
            lines += _header(name, "summary", "Time of the ticks that stepped this many frames.")
            for frames, (count, seconds) in sorted(self.ticks_by_frames.items()):
                lines.append(f'{name}_sum{{frames="{frames}"}} {seconds:.6f}')
                lines.append(f'{name}_count{{frames="{frames}"}} {count}')
        return "\n".join(lines) + "\n"
