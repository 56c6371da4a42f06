"""Whether an engine keeps up with live audio, in the words the app's status line uses.

A model slower than speech (real-time factor above 1) falls further behind every second;
once its reader is a whole ring behind, the oldest audio is skipped. Both are said plainly,
with the same advice, in the window and in the terminal.
"""

from __future__ import annotations

from engine.events import Stats

SLOWER_THAN_SPEECH = 1.05  # real-time factor above which the lag grows; noise below it
_SLOW = "The model is running slower than speech; captions are {lag:.0f} s behind."
_SKIPPED = "{dropped:.1f} s of audio was skipped because the model fell behind."


def falling_behind(stats: Stats) -> list[str]:
    """The sentences a user needs about the engine's pace; [] while it keeps up."""
    problems = []
    if stats.realtime_factor > SLOWER_THAN_SPEECH:
        problems.append(_SLOW.format(lag=max(stats.latency_seconds, 1.0)))
    if stats.dropped_seconds > 0:
        problems.append(_SKIPPED.format(dropped=stats.dropped_seconds))
    return problems
