"""The engine contract's events: small frozen dataclasses, times in stream seconds.

A recognizer's `feed()` and `flush()` return lists of these. Times are seconds from the
start of the stream (never wall-clock), so a file and a microphone give the same transcript.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Partial:
    """Text that may still change; it replaces the previous partial in place."""

    text: str
    start: float


@dataclass(frozen=True)
class Commit:
    """Final text. `text` is what a reader sees; `words` carry the times."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class EndOfTurn:
    """The speaker paused: a natural place for a line break."""

    time: float


@dataclass(frozen=True)
class Stats:
    """How the engine keeps up. `realtime_factor` = compute time / audio time."""

    audio_seconds: float
    compute_seconds: float
    realtime_factor: float
    dropped_seconds: float = 0.0
    latency_seconds: float = 0.0
    nonfinite_samples: int = 0  # NaN/inf input samples replaced with silence so far


@dataclass(frozen=True)
class Error:
    """Something failed; `fatal` means the session's engine stopped."""

    message: str
    hint: str = ""
    fatal: bool = True


@dataclass(frozen=True)
class CaptureEnded:
    """The audio source ended: end of file, device lost, or stopped by the user."""

    reason: str
    error: bool = False


@dataclass(frozen=True)
class Level:
    """Input level for the meter, in dBFS (0 = full scale)."""

    rms_dbfs: float
    peak_dbfs: float


Event = Level | Partial | Commit | EndOfTurn | Stats | Error | CaptureEnded
