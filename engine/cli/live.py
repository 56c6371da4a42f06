"""`livecap live` in a terminal: captions on stdout, everything about them on stderr.

Finished lines scroll up and the line being spoken is rewritten in place (on a terminal).
stderr says what a user must know and would otherwise miss: errors with their hints, a model
falling behind or skipping audio (in the app's words, with its advice), faulty input samples,
a history that could not be saved, and where the transcript went instead. Ctrl+C and SIGTERM
both end the session the same way: the captured audio is finished and the session saved.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from engine.events import CaptureEnded, Commit, EndOfTurn, Error, Event, Partial, Stats
from engine.pace import falling_behind
from engine.session import LiveSession
from engine.store import SessionStore
from engine.transcript import TranscriptBuilder, export, join_text

ERROR_EXIT = 2
PACE_ADVICE = "Try a smaller model, int8 precision (--dtype int8) or the GPU (--device cuda)."
PACE_REPEAT_SECONDS = 10.0  # while behind, the status line is repeated this often


def open_store() -> SessionStore:
    """The session store, checked before any model is loaded (StoreError if unusable)."""
    store = SessionStore()
    if store.recovered is not None:
        print(f"livecap: {store.recovered.message}\n{store.recovered.hint}", file=sys.stderr)
    return store


def run_live(source, caption, translation, store: SessionStore) -> int:
    """Caption `source` until it ends, Ctrl+C or SIGTERM; the exit status."""
    printer = LivePrinter()
    session = LiveSession(source, caption, printer.show, translation=translation, store=store)
    session.start()
    print(f"Listening to {source.name}. Ctrl+C ends the session.", file=sys.stderr)
    with sigterm_as_ctrl_c():
        try:
            while not session.wait(0.2):
                pass
        except KeyboardInterrupt:
            session.stop()
            session.wait()
    printer.finish()
    if session.save_error is not None:
        printer.print_error(session.save_error.message, keep_elsewhere(session))
        return ERROR_EXIT
    print(f"Session {session.session_id} saved ({session.duration:.0f} s).", file=sys.stderr)
    return ERROR_EXIT if printer.failed else 0


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (a logout, `kill`) ends the session as Ctrl+C does; a repeat is ignored, so
    the ending itself is not cut short."""
    received = threading.Event()

    def interrupt(signum: int, frame: object) -> None:
        if not received.is_set():
            received.set()
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def keep_elsewhere(session: LiveSession) -> str:
    """Write the in-memory transcript to the first writable fallback file; a hint saying
    where it went (or, if nowhere could take it, that it is in the terminal above)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"livecap-session-{session.session_id}-{stamp}.txt"
    text = export(session.transcript(), "txt")
    for folder in (Path.cwd(), Path.home(), Path(tempfile.gettempdir())):
        try:
            (folder / name).write_text(text, encoding="utf-8")
        except OSError:
            continue
        return (
            f"The history has only part of this session. The whole transcript is in "
            f"{folder / name}."
        )
    return (
        "The history has only part of this session, and no file could be written either "
        "(is every disk full?): the transcript is the text printed above."
    )


class LivePrinter:
    """Captions in a terminal: finished lines scroll up, the line being spoken is rewritten."""

    def __init__(self) -> None:
        self.lines = {"caption": TranscriptBuilder(), "translation": TranscriptBuilder()}
        self.partial = ""
        self.live = sys.stdout.isatty()  # rewriting in place only makes sense on a terminal
        self.failed = False
        # role → (when its pace was last reported, whether audio had been skipped by then)
        self._behind_shown: dict[str, tuple[float, bool]] = {}
        self._nonfinite_warned = False

    def show(self, role: str, event: Event) -> None:
        if isinstance(event, Error):
            self.print_error(event.message, event.hint)
            self.failed = self.failed or (event.fatal and role == "caption")
        elif isinstance(event, CaptureEnded) and event.error:
            self.print_error(event.reason, "What was captured so far is saved.")
            self.failed = True
        elif isinstance(event, Stats):
            self._show_stats(role, event)
            return
        elif role == "caption" and isinstance(event, Partial):
            self.partial = event.text
        elif isinstance(event, Commit | EndOfTurn) and role in self.lines:
            self.partial = "" if role == "caption" else self.partial
            closed = self.lines[role].add(event)
            if closed is not None:
                self._print_line(closed.text if role == "caption" else f"  → {closed.text}")
        else:
            return
        self._redraw()

    def finish(self) -> None:
        for role, builder in self.lines.items():
            closed = builder.close()
            if closed is not None:
                self._print_line(closed.text if role == "caption" else f"  → {closed.text}")

    def print_error(self, message: str, hint: str) -> None:
        if self.live:
            sys.stdout.write("\r\x1b[K")
        print(f"livecap: {message}" + (f"\n{hint}" if hint else ""), file=sys.stderr)

    def _show_stats(self, role: str, stats: Stats) -> None:
        if stats.nonfinite_samples and not self._nonfinite_warned:
            self._nonfinite_warned = True
            self._status(
                f"The input had {stats.nonfinite_samples} NaN or infinite samples; they were "
                "replaced with silence.",
                "Captions go on. If it keeps happening, the device or its driver is faulty: "
                "try another input (`livecap devices`).",
            )
        problems = falling_behind(stats)
        label = "" if role == "caption" else "Translation: "
        shown = self._behind_shown.get(role)
        skipped = stats.dropped_seconds > 0
        if problems and (
            shown is None
            or time.monotonic() - shown[0] >= PACE_REPEAT_SECONDS
            or skipped != shown[1]  # audio is being lost now: say so at once
        ):
            self._behind_shown[role] = (time.monotonic(), skipped)
            self._status(label + " ".join(problems), PACE_ADVICE)
        elif not problems and shown is not None:
            del self._behind_shown[role]
            self._status(f"{label}Caught up: captions are live again.", "")

    def _status(self, message: str, hint: str) -> None:
        self.print_error(message, hint)
        self._redraw()

    def _redraw(self) -> None:
        if self.live:
            line = join_text(self.lines["caption"].open_text, self.partial)
            sys.stdout.write(f"\r\x1b[K{line}")
            sys.stdout.flush()

    def _print_line(self, text: str) -> None:
        sys.stdout.write(f"\r\x1b[K{text}\n" if self.live else f"{text}\n")
        sys.stdout.flush()
