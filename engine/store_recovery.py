"""A damaged session store is never deleted: it is moved aside under a dated name, and
what SQLite can still read of it is copied into the fresh store that replaces it.

Reading goes table by table in id order; where a damaged page stops the scan, the remaining
ids are read one at a time, so one bad page costs only the rows stored on it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# SQLite's own words for "this file is damaged" (as opposed to unreadable or full).
DAMAGED = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}
_SESSION_COLUMNS = (
    "id, started_at, model, source, language, translation_model, translation_language, duration"
)
_SEGMENT_COLUMNS = "id, session_id, role, start, end, text, words"
_MAX_PROBES = 1_000_000  # ids read one by one past a damaged page (a few seconds' work)


@dataclass(frozen=True)
class Recovery:
    """A damaged store was replaced: where the original went and what was saved from it."""

    path: Path  # the store, now fresh
    moved_to: Path  # the damaged original, kept
    reason: str  # what SQLite found wrong
    sessions: int  # sessions copied into the fresh store
    segments: int

    @property
    def message(self) -> str:
        return (
            f"The session history {self.path} was damaged ({self.reason}). It was moved "
            f"aside to {self.moved_to} and a fresh one was started; {self.sessions} sessions "
            f"({self.segments} transcript segments) could be read back into it."
        )

    @property
    def hint(self) -> str:
        return (
            f"Nothing was deleted: the damaged file stays at {self.moved_to}. Once you have "
            "what you need from it, you may remove it."
        )


def damage_of(db: sqlite3.Connection) -> str | None:
    """What `PRAGMA quick_check` finds wrong, or None for a sound database."""
    problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
    return None if problems == ["ok"] else "; ".join(problems[:3])


def move_aside(path: Path) -> Path:
    """Rename `path` (and its -wal and -shm files) to path.damaged-<UTC date and time>."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(target.with_name(target.name + suffix))
    return target


def salvage(damaged: Path, db: sqlite3.Connection) -> tuple[int, int]:
    """Copy every readable session and segment of `damaged` into `db` (a fresh store).

    Segments whose session row was lost get a placeholder session, so no text is dropped.
    Returns (sessions, segments) copied.
    """
    try:
        source = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0, 0
    sessions = segments = 0
    known: set[int] = set()
    db.execute("BEGIN")
    try:
        for row in _readable_rows(source, "sessions", _SESSION_COLUMNS):
            db.execute(f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", row)
            known.add(row[0])
            sessions += 1
        for row in _readable_rows(source, "segments", _SEGMENT_COLUMNS):
            if row[1] not in known:
                _placeholder_session(db, row[1])
                known.add(row[1])
            db.execute(f"INSERT INTO segments ({_SEGMENT_COLUMNS}) VALUES (?,?,?,?,?,?,?)", row)
            segments += 1
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        source.close()
    return sessions, segments


def _placeholder_session(db: sqlite3.Connection, session_id: int) -> None:
    recovered = datetime.now(UTC).isoformat(timespec="seconds")
    db.execute(
        "INSERT INTO sessions (id, started_at, model, source) VALUES (?, ?, ?, ?)",
        (session_id, recovered, "(unknown: recovered from a damaged store)", ""),
    )


def _readable_rows(db: sqlite3.Connection, table: str, columns: str) -> Iterator[tuple]:
    """The table's rows in id order, skipping those on damaged pages."""
    last = 0
    try:
        for row in db.execute(f"SELECT {columns} FROM {table} ORDER BY id"):
            last = row[0]
            yield row
        return
    except sqlite3.DatabaseError:
        pass  # a damaged page: go on one id at a time
    try:
        top = db.execute(f"SELECT max(id) FROM {table}").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        return
    top = min(top, last + _MAX_PROBES)
    for row_id in range(last + 1, top + 1):
        try:
            row = db.execute(f"SELECT {columns} FROM {table} WHERE id = ?", (row_id,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None:
            yield row
