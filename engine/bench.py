"""`livecap bench`: does a model keep up with live audio on this machine?

Streams `seconds` of synthetic audio (noise shaped like syllables, deterministic) through the
recognizer as the live worker does: the audio arrives at its real pace, and each feed() takes
everything that has arrived (one frame while the model keeps up, several after a slow step,
which a recognizer may process faster per frame). A model whose lone steps are too slow can
still keep up that way: busy all the time (realtime_factor ≈ 1) with a bounded lag; one that
cannot falls further behind with every second. The clock is virtual: it advances by each
feed's measured compute time and jumps over idle waits, so the run takes only the compute.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np

from engine.models import kernel_choice, machine_cache, native
from engine.recognizer import LoadOptions, load_recognizer

_WARMUP_FRAMES = 10
_MAX_LAG_MS = 1000.0  # keeping up: 95% of frames captioned within a second of arriving


def synthetic_speech(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Noise with a 4 Hz syllable envelope and changing loudness, like busy speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
    block = max(1, sample_rate // 5)
    loudness = np.repeat(rng.uniform(0.05, 0.3, size=n // block + 1), block)[:n]
    return (rng.standard_normal(n) * envelope * loudness).astype(np.float32)


def run_bench(
    model: str,
    device: str = "auto",
    dtype: str = "auto",
    seconds: float = 30.0,
    target_lang: str | None = None,
) -> dict:
    """Per-frame compute time of `model` on live-sized frames; see the module docstring.

    Returns frame_ms_median, frame_ms_p95, frame_ms_max (compute per frame), realtime_factor
    (compute / audio time), lag_ms_median and lag_ms_p95 (how late a frame is processed after
    it arrived), keeps_up (lag p95 under a second), plus what ran:
    model, device, dtype, frame_ms (audio per frame), frames, load_seconds, peak_rss_bytes, the
    CPU's model name and the kernels chosen for its matrices with each candidate's GB/s.
    """
    started = time.perf_counter()
    options = LoadOptions(device=device, dtype=dtype, target_lang=target_lang)
    recognizer = load_recognizer(model, options)
    load_seconds = time.perf_counter() - started
    rate, frame = recognizer.sample_rate, recognizer.frame_size
    audio = synthetic_speech(seconds + _WARMUP_FRAMES * frame / rate, rate)
    frame_ms, lag_ms = replay_live(recognizer, audio)
    recognizer.flush()
    measured, lags = np.array(frame_ms[_WARMUP_FRAMES:]), np.array(lag_ms[_WARMUP_FRAMES:])
    budget = frame / rate * 1000
    factor = float(measured.sum() / (len(measured) * budget)) if len(measured) else 0.0
    lag_p95 = float(np.percentile(lags, 95)) if len(lags) else 0.0
    return {
        "model": model,
        "device": recognizer.info.device,
        "dtype": recognizer.info.dtype,
        "frame_ms": budget,
        "frames": int(len(measured)),
        "frame_ms_median": float(np.median(measured)) if len(measured) else 0.0,
        "frame_ms_p95": float(np.percentile(measured, 95)) if len(measured) else 0.0,
        "frame_ms_max": float(measured.max()) if len(measured) else 0.0,
        "realtime_factor": factor,
        "lag_ms_median": float(np.median(lags)) if len(lags) else 0.0,
        "lag_ms_p95": lag_p95,
        "keeps_up": bool(len(lags)) and lag_p95 < _MAX_LAG_MS,
        "load_seconds": round(load_seconds, 2),
        "peak_rss_bytes": peak_resident_bytes(),
        "cpu": machine_cache.cpu_description()["model"],
        "kernel_extensions": list(native.extensions()),
        "kernels": kernel_choice.chosen(),
    }


def peak_resident_bytes() -> int:
    """This process's own peak resident memory: Linux's VmHWM where there is one. Not
    ru_maxrss: a process forked from one holding a large model starts with its pages, and
    Linux keeps that peak across exec, so the bench would report the parent's model."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    peaks = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
    if peaks:
        return int(peaks[0]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def replay_live(recognizer, audio: np.ndarray) -> tuple[list[float], list[float]]:
    """Feed `audio` as it would arrive live. Per frame: its share of the compute of the feed
    that took it (ms), and its lag: from when its last sample arrived to when that feed
    returned (ms) — how much later than the model's own delay its captions show."""
    rate, frame = recognizer.sample_rate, recognizer.frame_size
    whole = len(audio) // frame * frame
    clock, fed = 0.0, 0  # seconds since the first sample arrived; samples fed
    frame_ms: list[float] = []
    lag_ms: list[float] = []
    while fed < whole:
        arrived = min(whole, int(clock * rate) // frame * frame)
        if arrived <= fed:  # idle until the next frame is in
            clock, arrived = (fed + frame) / rate, fed + frame
        tick = time.perf_counter()
        recognizer.feed(audio[fed:arrived])
        spent = time.perf_counter() - tick
        clock += spent
        frames = (arrived - fed) // frame
        frame_ms += [spent * 1000 / frames] * frames
        lag_ms += [(clock - (fed + (i + 1) * frame) / rate) * 1000 for i in range(frames)]
        fed = arrived
    return frame_ms, lag_ms
