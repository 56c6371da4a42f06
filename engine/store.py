"""The session store: every session's committed text in SQLite, searchable with FTS5.

One row per session; one row per segment and role ("caption" or "translation"). The open
segment's row is rewritten on every commit in its own transaction (WAL, synchronous=FULL),
so when `add()` returns the committed words are on disk and a crash or power cut loses
nothing committed. The database and its WAL files are readable by the user only.

Opening checks the file (`PRAGMA quick_check`): a damaged store is moved aside and replaced
(see engine/store_recovery.py), and `recovered` says so. A store that cannot be opened at all
raises StoreError naming the file and the cause. When a write fails (a full disk), the text
stays in memory: `add()` raises StoreError, and every later `add()` or `finish()` retries
everything not yet written, so what was said reaches the disk once there is room again.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from engine.errors import LivecapError
from engine.events import Commit, EndOfTurn, Word
from engine.store_recovery import DAMAGED, Recovery, damage_of, move_aside, salvage
from engine.transcript import Segment, Transcript, TranscriptBuilder

ROLES = ("caption", "translation")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    model TEXT NOT NULL,
    source TEXT NOT NULL,
    language TEXT,
    translation_model TEXT,
    translation_language TEXT,
    duration REAL
);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    text TEXT NOT NULL,
    words TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_by_session ON segments(session_id, role, start);
CREATE VIRTUAL TABLE IF NOT EXISTS segments_fts USING fts5(
    text, content='segments', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS segments_ai AFTER INSERT ON segments BEGIN
    INSERT INTO segments_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS segments_ad AFTER DELETE ON segments BEGIN
    INSERT INTO segments_fts(segments_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER IF NOT EXISTS segments_au AFTER UPDATE OF text ON segments BEGIN
    INSERT INTO segments_fts(segments_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO segments_fts(rowid, text) VALUES (new.id, new.text);
END;
"""

PREVIEW_CHARS = 160


def default_store_path() -> Path:
    """$XDG_DATA_HOME/livecap/sessions.db, else ~/.local/share/livecap/sessions.db."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "livecap" / "sessions.db"


@dataclass(frozen=True)
class SessionSummary:
    id: int
    started_at: datetime
    model: str
    source: str
    language: str | None
    duration: float | None  # None while the session runs (or if it ended in a crash)
    preview: str  # the beginning of the captions
    snippet: str | None  # the matching text, [marked], when listed by a search


class StoreError(LivecapError):
    """The session store cannot be opened or written; the message names the file and why."""


def store_error(path: Path, exc: OSError | sqlite3.Error) -> StoreError:
    """The real cause, in words: a full disk, a damaged file, or a place that can't be written."""
    code = getattr(exc, "sqlite_errorname", "")
    if code == "SQLITE_FULL" or getattr(exc, "errno", None) == errno.ENOSPC:
        return StoreError(
            f"The disk holding the session history {path} is full.",
            "Free some disk space: the text is kept in memory and saved once there is room.",
        )
    if code in DAMAGED:
        return StoreError(
            f"The session history {path} is damaged ({exc}).",
            "Restart Livecap: it checks the file, moves it aside and recovers what it can.",
        )
    cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return StoreError(
        f"The session history {path} cannot be opened or written ({cause}).",
        f"Make {path.parent} writable, or set XDG_DATA_HOME to a folder that is.",
    )


class SessionStore:
    """Thread-safe: worker threads add commits while the GUI lists and reads sessions."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self._lock = threading.Lock()
        # Per (session, role): the segment builder, the row id of its open segment, and the
        # closed segments (with their row ids) that could not be written yet.
        self._open: dict[tuple[int, str], _OpenSegments] = {}
        self.recovered: Recovery | None = None  # set when a damaged store was replaced
        try:
            self._db = self._connect()
            damage = damage_of(self._db)
        except sqlite3.DatabaseError as exc:
            if exc.sqlite_errorname not in DAMAGED:
                raise store_error(self.path, exc) from None
            damage = str(exc)
        except OSError as exc:
            raise store_error(self.path, exc) from None
        if damage is not None:
            self.recovered = self._replace(damage)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file 0600 before SQLite opens it; SQLite gives its -wal and -shm files
        # the database file's permissions.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)  # also for a file an older run left readable by others
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _replace(self, damage: str) -> Recovery:
        """Move the damaged file aside, start afresh, copy in what can still be read."""
        if getattr(self, "_db", None) is not None:
            self._db.close()
        try:
            moved_to = move_aside(self.path)
            self._db = self._connect()
            sessions, segments = salvage(moved_to, self._db)
        except (OSError, sqlite3.Error) as exc:
            raise store_error(self.path, exc) from None
        return Recovery(self.path, moved_to, damage, sessions, segments)

    def begin(
        self,
        model: str,
        source: str,
        language: str | None,
        translation_model: str | None = None,
        translation_language: str | None = None,
    ) -> int:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock, self._errors_named():
            cursor = self._db.execute(
                "INSERT INTO sessions (started_at, model, source, language, translation_model,"
                " translation_language) VALUES (?, ?, ?, ?, ?, ?)",
                (started, model, source, language, translation_model, translation_language),
            )
            return int(cursor.lastrowid)

    def add(self, session_id: int, role: str, event: Commit | EndOfTurn) -> None:
        """Record a commit (or a pause, which closes the open segment); durable on return.

        Raises StoreError when it cannot be written; the text is kept and written by the
        next add() or finish() that succeeds.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        with self._lock:
            state = self._open.setdefault((session_id, role), _OpenSegments())
            closed = state.builder.add(event)
            if closed is not None:
                state.unwritten.append((state.row, closed))
                state.row = None
            state.changed = True
            self._write_unsaved(session_id)

    def finish(self, session_id: int, duration: float) -> None:
        """Write whatever is still unsaved and the duration; StoreError if it can't be."""
        with self._lock:
            self._write_unsaved(session_id, duration)
            for role in ROLES:
                self._open.pop((session_id, role), None)

    def unsaved(self, session_id: int) -> bool:
        """Whether some of the session's text is still only in memory."""
        with self._lock:
            return any(self._open[key].changed for key in self._keys(session_id))

    def sessions(self, query: str | None = None) -> list[SessionSummary]:
        """All sessions, newest first; with `query`, only those whose text matches it."""
        match = _fts_query(query) if query else None
        if query and not match:
            return []
        with self._lock:
            if match is None:
                rows = self._db.execute(
                    "SELECT id, started_at, model, source, language, duration, NULL"
                    " FROM sessions ORDER BY id DESC"
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT s.id, s.started_at, s.model, s.source, s.language, s.duration,"
                    " (SELECT snippet(segments_fts, 0, '[', ']', '…', 12) FROM segments_fts"
                    "   JOIN segments g ON g.id = segments_fts.rowid"
                    "   WHERE segments_fts MATCH :q AND g.session_id = s.id LIMIT 1)"
                    " FROM sessions s WHERE s.id IN (SELECT g.session_id FROM segments_fts"
                    "   JOIN segments g ON g.id = segments_fts.rowid WHERE segments_fts MATCH :q)"
                    " ORDER BY s.id DESC",
                    {"q": match},
                ).fetchall()
            return [self._summary(row) for row in rows]

    def transcript(self, session_id: int) -> Transcript:
        with self._lock:
            session = self._db.execute(
                "SELECT model, language, translation_model, translation_language, duration"
                " FROM sessions WHERE id = ?",
                (session_id,),
            ).fetchone()
            if session is None:
                raise KeyError(f"no session {session_id}")
            model, language, t_model, t_language, duration = session
            captions = self._segments(session_id, "caption")
            translated = self._segments(session_id, "translation")
        if duration is None:  # the session never finished: it lasted at least this long
            duration = max((s.end for s in captions + translated), default=0.0)
        transcript = Transcript(model, language, duration, captions)
        if t_model is not None or translated:
            transcript.translation = Transcript(t_model or "", t_language, duration, translated)
        return transcript

    def delete(self, session_id: int) -> None:
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM segments WHERE session_id = ?", (session_id,))
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- rows ---------------------------------------------------------------------------------

    def _keys(self, session_id: int) -> list[tuple[int, str]]:
        return [(session_id, role) for role in ROLES if (session_id, role) in self._open]

    def _write_unsaved(self, session_id: int, duration: float | None = None) -> None:
        """In one transaction: every closed segment not yet written, each changed open
        segment, and the duration if given. Lock held."""
        rows: dict[tuple[int, str], int | None] = {}
        with self._errors_named(), self._transaction():
            for key in self._keys(session_id):
                state = self._open[key]
                if not state.changed:
                    continue
                for row, segment in state.unwritten:
                    self._write(session_id, key[1], row, segment)
                rows[key] = state.row
                if state.builder.current is not None:
                    rows[key] = self._write(session_id, key[1], state.row, state.builder.current)
            if duration is not None:
                self._db.execute(
                    "UPDATE sessions SET duration = ? WHERE id = ?", (duration, session_id)
                )
        for key, row in rows.items():  # only now are the rows really there
            state = self._open[key]
            state.row, state.unwritten, state.changed = row, [], False

    @contextmanager
    def _errors_named(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise store_error(self.path, exc) from None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")  # a full disk may fail here: the transaction stays open
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _write(self, session_id: int, role: str, row: int | None, segment: Segment) -> int:
        words = json.dumps([[w.text, w.start, w.end] for w in segment.words], ensure_ascii=False)
        values = (segment.start, segment.end, segment.text, words)
        if row is None:
            cursor = self._db.execute(
                "INSERT INTO segments (session_id, role, start, end, text, words)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, role, *values),
            )
            return int(cursor.lastrowid)
        self._db.execute(
            "UPDATE segments SET start = ?, end = ?, text = ?, words = ? WHERE id = ?",
            (*values, row),
        )
        return row

    def _segments(self, session_id: int, role: str) -> list[Segment]:
        rows = self._db.execute(
            "SELECT start, end, text, words FROM segments WHERE session_id = ? AND role = ?"
            " ORDER BY start, id",
            (session_id, role),
        ).fetchall()
        return [
            Segment(start, end, text, [Word(t, s, e) for t, s, e in json.loads(words)])
            for start, end, text, words in rows
        ]

    def _summary(self, row: tuple) -> SessionSummary:
        session_id, started_at, model, source, language, duration, snippet = row
        texts = self._db.execute(
            "SELECT text FROM segments WHERE session_id = ? AND role = 'caption'"
            " ORDER BY start, id LIMIT 8",
            (session_id,),
        ).fetchall()
        preview = " ".join(text for (text,) in texts)[:PREVIEW_CHARS]
        return SessionSummary(
            session_id,
            datetime.fromisoformat(started_at),
            model,
            source,
            language,
            duration,
            preview,
            snippet,
        )


@dataclass
class _OpenSegments:
    """One session role's text on its way to the disk."""

    builder: TranscriptBuilder = field(default_factory=TranscriptBuilder)
    row: int | None = None  # the open segment's row, once written
    unwritten: list[tuple[int | None, Segment]] = field(default_factory=list)  # closed segments
    changed: bool = False  # something here is not on disk yet


def _fts_query(query: str) -> str:
    """A user's words as an FTS5 query: every word must appear, each as a prefix."""
    words = re.findall(r"\w+", query)
    return " ".join(f'"{word}"*' for word in words)
