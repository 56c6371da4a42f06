"""The session store: every session's committed text in SQLite, searchable with FTS5.

One row per session; one row per segment and role ("caption" or "translation"). The open
segment's row is rewritten on every commit in its own transaction (WAL, synchronous=FULL),
so when `add()` returns the committed words are on disk and a crash or power cut loses
nothing committed. The database and its WAL files are readable by the user only.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.events import Commit, EndOfTurn, Word
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


class SessionStore:
    """Thread-safe: worker threads add commits while the GUI lists and reads sessions."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file 0600 before SQLite opens it; SQLite gives its -wal and -shm files
        # the database file's permissions.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)  # also for a file an older run left readable by others
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        # Per (session, role): the segment builder and the row id of its open segment.
        self._open: dict[tuple[int, str], tuple[TranscriptBuilder, int | None]] = {}

    def begin(
        self,
        model: str,
        source: str,
        language: str | None,
        translation_model: str | None = None,
        translation_language: str | None = None,
    ) -> int:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO sessions (started_at, model, source, language, translation_model,"
                " translation_language) VALUES (?, ?, ?, ?, ?, ?)",
                (started, model, source, language, translation_model, translation_language),
            )
            return int(cursor.lastrowid)

    def add(self, session_id: int, role: str, event: Commit | EndOfTurn) -> None:
        """Record a commit (or a pause, which closes the open segment); durable on return."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        with self._lock:
            builder, row = self._open.get((session_id, role)) or (TranscriptBuilder(), None)
            closed = builder.add(event)
            with self._transaction():  # the closed segment and the new open one together
                if closed is not None:
                    self._write(session_id, role, row, closed)
                    row = None
                if builder.current is not None:
                    row = self._write(session_id, role, row, builder.current)
            self._open[(session_id, role)] = (builder, row)

    def finish(self, session_id: int, duration: float) -> None:
        with self._lock:
            for role in ROLES:
                self._open.pop((session_id, role), None)
            with self._transaction():
                self._db.execute(
                    "UPDATE sessions SET duration = ? WHERE id = ?", (duration, session_id)
                )

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

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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


def _fts_query(query: str) -> str:
    """A user's words as an FTS5 query: every word must appear, each as a prefix."""
    words = re.findall(r"\w+", query)
    return " ".join(f'"{word}"*' for word in words)
