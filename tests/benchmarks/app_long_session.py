"""GUI cost per caption event over a long session: does the window stay cheap for hours?

    QT_QPA_PLATFORM=offscreen .venv/bin/python tests/benchmarks/app_long_session.py --hours 2

Feeds a scripted meeting (2.5 words a second, a partial before each commit, a pause every
eight words, a translation of every word) into the real window's transcript, both panes, the
row aligner and the overlay, and times the GUI-thread work of each event (the Qt layout
included: each event is followed by processEvents, as the event loop would do). Prints one
JSON object: per-event medians and p99s over the first and the last 2,000 events, their
ratio (near 1 means the cost does not grow with the session), the longest single event,
and the longest full garbage collection (a pause that grows with all the process holds).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.settings import AppSettings  # noqa: E402
from app.window import MainWindow  # noqa: E402
from engine.events import Commit, EndOfTurn, Partial  # noqa: E402
from engine.store import SessionStore  # noqa: E402

WORDS = "so the plan for the next release is to ship the captions and the overlay".split()
WORDS_PER_SECOND = 2.5
WINDOW = 2000


def events(hours: float):
    """(role, event) pairs of a long meeting, in the order the engines would send them."""
    count = int(hours * 3600 * WORDS_PER_SECOND)
    for i in range(count):
        start, end = i / WORDS_PER_SECOND, (i + 0.8) / WORDS_PER_SECOND
        word = WORDS[i % len(WORDS)]
        yield "caption", Partial(word, start)
        yield "caption", Commit(word, start, end)
        yield "translation", Commit(word.upper(), start, end)
        if i % 8 == 7:
            yield "caption", EndOfTurn(end + 0.1)
            yield "translation", EndOfTurn(end + 0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    args = parser.parse_args()

    app = QApplication(sys.argv)
    folder = Path(tempfile.mkdtemp(prefix="livecap-bench-"))
    settings = AppSettings(QSettings(str(folder / "s.ini"), QSettings.Format.IniFormat))
    settings.set("first_run/offer_download", False)
    settings.set("models/translation", "facebook/s2t-medium-mustc-multilingual-st")
    store = SessionStore(folder / "s.db")
    window = MainWindow(settings, store, device_lister=lambda: [])
    window.resize(1200, 700)
    window.show()
    window.set_overlay_visible(True)
    window.overlay.apply_look(window.overlay.look)
    app.processEvents()

    gc_pauses: list[float] = []
    gc_began = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_began[0] = time.perf_counter()
        elif info["generation"] == 2:
            gc_pauses.append(time.perf_counter() - gc_began[0])

    gc.callbacks.append(on_gc)
    costs = []
    for role, event in events(args.hours):
        began = time.perf_counter()
        window._on_events([(role, event)])
        app.processEvents()
        costs.append(time.perf_counter() - began)

    def summary(part: list[float]) -> dict:
        ordered = sorted(part)
        return {
            "median_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 3),
        }

    first, last = summary(costs[:WINDOW]), summary(costs[-WINDOW:])
    result = {
        "hours": args.hours,
        "events": len(costs),
        "rows": len(window.transcript.rows),
        "first": first,
        "last": last,
        "median_ratio_last_over_first": round(last["median_ms"] / first["median_ms"], 2),
        "longest_event_ms": round(max(costs) * 1000, 2),
        "longest_event_index": costs.index(max(costs)),
        "events_over_50_ms": sum(1 for c in costs if c > 0.05),
        "full_gc_pauses": len(gc_pauses),
        "longest_full_gc_ms": round(max(gc_pauses, default=0.0) * 1000, 2),
    }
    print(json.dumps(result))
    window.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
