"""`livecap bench`: does a model keep up with live audio on this machine?

Streams `seconds` of synthetic audio (noise shaped like syllables, deterministic) through the
recognizer one frame at a time, exactly as the live worker feeds it, and times every frame.
"""

from __future__ import annotations

import resource
import time

import numpy as np

from engine.recognizer import LoadOptions, load_recognizer

_WARMUP_FRAMES = 10


def synthetic_speech(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Noise with a 4 Hz syllable envelope and changing loudness, like busy speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
    block = max(1, sample_rate // 5)
    loudness = np.repeat(rng.uniform(0.05, 0.3, size=n // block + 1), block)[:n]
    return (rng.standard_normal(n) * envelope * loudness).astype(np.float32)


def run_bench(model: str, device: str = "auto", dtype: str = "auto", seconds: float = 30.0) -> dict:
    """Per-frame compute time of `model` on live-sized frames; see the module docstring.

    Returns frame_ms_median, frame_ms_p95, frame_ms_max, realtime_factor (compute / audio
    time), keeps_up (p95 under the frame's own duration and realtime_factor < 1), plus what ran:
    model, device, dtype, frame_ms (audio per frame), frames, load_seconds, peak_rss_bytes.
    """
    started = time.perf_counter()
    recognizer = load_recognizer(model, LoadOptions(device=device, dtype=dtype))
    load_seconds = time.perf_counter() - started
    rate, frame = recognizer.sample_rate, recognizer.frame_size
    audio = synthetic_speech(seconds + _WARMUP_FRAMES * frame / rate, rate)
    times = []
    for start in range(0, len(audio) - frame + 1, frame):
        tick = time.perf_counter()
        recognizer.feed(audio[start : start + frame])
        times.append(time.perf_counter() - tick)
    recognizer.flush()
    measured = np.array(times[_WARMUP_FRAMES:]) * 1000
    frame_ms = frame / rate * 1000
    factor = float(measured.sum() / (len(measured) * frame_ms)) if len(measured) else 0.0
    p95 = float(np.percentile(measured, 95)) if len(measured) else 0.0
    return {
        "model": model,
        "device": recognizer.info.device,
        "dtype": recognizer.info.dtype,
        "frame_ms": frame_ms,
        "frames": int(len(measured)),
        "frame_ms_median": float(np.median(measured)) if len(measured) else 0.0,
        "frame_ms_p95": p95,
        "frame_ms_max": float(measured.max()) if len(measured) else 0.0,
        "realtime_factor": factor,
        "keeps_up": bool(len(measured)) and p95 < frame_ms and factor < 1.0,
        "load_seconds": round(load_seconds, 2),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
