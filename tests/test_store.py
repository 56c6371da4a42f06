"""The SQLite session store: round trip, search, privacy, and durability across SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.events import Commit, EndOfTurn, Word
from engine.store import SessionStore, default_store_path


def commit(text: str, start: float) -> Commit:
    return Commit(text, start, start + 0.4, (Word(text, start, start + 0.4),))


def test_default_path_follows_xdg_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_store_path() == tmp_path / "livecap" / "sessions.db"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_store_path() == Path.home() / ".local/share/livecap/sessions.db"


def test_round_trip_with_translation(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    sid = store.begin("kyutai/x", "Built-in mic", "en", "s2t-st", "de")
    for n, word in enumerate(["Hello", "world."]):
        store.add(sid, "caption", commit(word, n * 0.5))
    store.add(sid, "caption", commit("Again", 2.0))
    store.add(sid, "translation", commit("Hallo Welt", 0.0))
    store.add(sid, "translation", EndOfTurn(1.0))
    store.finish(sid, 3.5)
    transcript = store.transcript(sid)
    assert [s.text for s in transcript.segments] == ["Hello world.", "Again"]
    assert transcript.segments[0].words == [Word("Hello", 0.0, 0.4), Word("world.", 0.5, 0.9)]
    assert (transcript.model, transcript.language, transcript.duration) == ("kyutai/x", "en", 3.5)
    assert transcript.translation.model == "s2t-st"
    assert transcript.translation.language == "de"
    assert [s.text for s in transcript.translation.segments] == ["Hallo Welt"]
    [summary] = store.sessions()
    assert summary.id == sid and summary.source == "Built-in mic" and summary.duration == 3.5
    assert summary.preview == "Hello world. Again" and summary.snippet is None
    with pytest.raises(ValueError):
        store.add(sid, "subtitles", commit("x", 0))


def test_search_finds_sessions_by_their_words_newest_first(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    ids = []
    for words in (["the", "quarterly", "budget"], ["lunch", "plans"], ["budget", "review"]):
        sid = store.begin("m", "mic", "en")
        for n, word in enumerate(words):
            store.add(sid, "caption", commit(word, n))
        store.finish(sid, 3.0)
        ids.append(sid)
    assert [s.id for s in store.sessions()] == ids[::-1]
    found = store.sessions("budget")
    assert [s.id for s in found] == [ids[2], ids[0]]
    assert "[budget]" in found[0].snippet
    assert [s.id for s in store.sessions("quart")] == [ids[0]]  # prefix match as one types
    assert store.sessions("nothing-like-this") == []
    assert store.sessions('"(*') == []  # FTS syntax in user input is not an error
    store.delete(ids[0])
    assert [s.id for s in store.sessions("budget")] == [ids[2]]


def test_files_are_private_to_the_user(tmp_path):
    path = tmp_path / "data" / "livecap" / "sessions.db"
    store = SessionStore(path)
    sid = store.begin("m", "mic", "en")
    store.add(sid, "caption", commit("secret", 0.0))
    for file in path.parent.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    assert {p.name for p in path.parent.iterdir()} >= {"sessions.db", "sessions.db-wal"}
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_readable_file_left_by_an_older_run_is_made_private(tmp_path):
    path = tmp_path / "sessions.db"
    path.touch()
    path.chmod(0o644)
    SessionStore(path).begin("m", "mic", "en")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


WRITER = textwrap.dedent(
    """
    import sys
    from engine.events import Commit, EndOfTurn
    from engine.store import SessionStore
    store = SessionStore(sys.argv[1])
    sid = store.begin("m", "mic", "en")
    n = 0
    while True:
        store.add(sid, "caption", Commit(f"w{n}", n * 0.1, n * 0.1 + 0.1))
        if n % 7 == 6:
            store.add(sid, "caption", EndOfTurn(n * 0.1 + 0.1))
        print(n, flush=True)  # reported only after add() returned
        n += 1
    """
)


def test_every_commit_before_sigkill_is_in_the_store(tmp_path):
    path = tmp_path / "s.db"
    root = Path(__file__).resolve().parents[1]
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    acknowledged = -1
    deadline = time.monotonic() + 60
    while acknowledged < 40 and time.monotonic() < deadline:
        acknowledged = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert acknowledged >= 40
    store = SessionStore(path)
    [summary] = store.sessions()
    assert summary.duration is None  # it never finished
    words = " ".join(s.text for s in store.transcript(summary.id).segments).split()
    assert len(words) >= acknowledged + 1
    assert words[: acknowledged + 1] == [f"w{n}" for n in range(acknowledged + 1)]


# -- a full disk ------------------------------------------------------------------------------


def all_words(store: SessionStore, session_id: int) -> list[str]:
    return " ".join(s.text for s in store.transcript(session_id).segments).split()


def test_a_full_disk_keeps_the_text_and_writes_it_once_there_is_room(small_tmpfs):
    from engine.store import StoreError
    from tests.conftest import fill_disk

    store = SessionStore(small_tmpfs / "sessions.db")
    sid = store.begin("m", "mic", "en")
    store.add(sid, "caption", commit("before", 0.0))
    filler = fill_disk(small_tmpfs)
    failures = []
    for n in range(60):  # pauses close segments while nothing can be written
        try:
            store.add(sid, "caption", commit(f"w{n}", 1.0 + n))
            store.add(sid, "caption", EndOfTurn(1.5 + n)) if n % 10 == 9 else None
        except StoreError as exc:
            failures.append(exc)
    assert failures and "is full" in failures[0].message and "sessions.db" in failures[0].message
    assert "disk space" in failures[0].hint
    assert store.unsaved(sid)
    filler.unlink()
    store.add(sid, "caption", commit("after", 100.0))
    store.finish(sid, 101.0)
    assert not store.unsaved(sid)
    reopened = SessionStore(small_tmpfs / "sessions.db")
    assert all_words(reopened, sid) == ["before", *(f"w{n}" for n in range(60)), "after"]
    assert reopened.sessions()[0].duration == 101.0


class FullDisk:
    """A connection whose transcript writes fail with SQLite's "disk full" while `full` is
    set (a new session's row still goes in, as the first page written is often free)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.full = db, False

    def execute(self, sql: str, *args):
        writes = sql.split()[0] in {"INSERT", "UPDATE", "COMMIT"}
        if self.full and writes and not sql.startswith("INSERT INTO sessions"):
            exc = sqlite3.OperationalError("database or disk is full")
            exc.sqlite_errorname = "SQLITE_FULL"
            raise exc
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self.db, name)


def test_failed_writes_are_retried_in_order_across_roles_and_finish(tmp_path):
    from engine.store import StoreError

    store = SessionStore(tmp_path / "s.db")
    disk = store._db = FullDisk(store._db)
    sid = store.begin("m", "mic", "en", "t", "de")
    disk.full = True
    with pytest.raises(StoreError):
        store.add(sid, "translation", commit("eins", 0.0))
    with pytest.raises(StoreError):
        store.add(sid, "caption", commit("one", 0.0))
    with pytest.raises(StoreError):
        store.add(sid, "caption", EndOfTurn(0.5))
    with pytest.raises(StoreError):
        store.finish(sid, 2.0)
    disk.full = False
    store.finish(sid, 2.0)
    transcript = store.transcript(sid)
    assert [s.text for s in transcript.segments] == ["one"]
    assert [s.text for s in transcript.translation.segments] == ["eins"]
    assert store.sessions()[0].duration == 2.0


# -- a damaged or unusable store --------------------------------------------------------------


def filled_store(path: Path, sessions: int = 3, segments: int = 200) -> None:
    store = SessionStore(path)
    for s in range(sessions):
        sid = store.begin(f"model-{s}", "mic", "en")
        for n in range(segments):
            store.add(sid, "caption", commit(f"needle-{s}-{n} " + "filler " * 20, n))
            store.add(sid, "caption", EndOfTurn(n + 0.5))
        store.finish(sid, float(segments))
    store.close()  # the last connection checkpoints the WAL into the file


def corrupt_page_holding(path: Path, marker: bytes) -> None:
    """Overwrite the whole database page that stores `marker` with garbage."""
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    start = data.index(marker) // page_size * page_size
    data[start : start + page_size] = bytes([0xA5]) * page_size
    path.write_bytes(bytes(data))


def test_a_damaged_page_is_found_moved_aside_and_what_is_readable_recovered(tmp_path):
    path = tmp_path / "sessions.db"
    filled_store(path)
    corrupt_page_holding(path, b"needle-1-100 ")
    before = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError):
        before.execute("SELECT count(*) FROM segments WHERE text LIKE '%1-1%'").fetchall()
    before.close()

    store = SessionStore(path)
    recovery = store.recovered
    assert recovery is not None and recovery.moved_to.exists()
    assert recovery.moved_to.name.startswith("sessions.db.damaged-")
    assert str(path) in recovery.message and str(recovery.moved_to) in recovery.message
    assert recovery.sessions == 3 and 550 < recovery.segments < 600
    assert store._db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert all_words(store, 3).count("filler") == 20 * 200  # past the bad page: whole
    damaged = all_words(store, 2)  # the second session: its rows on that page are lost
    assert "needle-1-100" not in damaged and {"needle-1-0", "needle-1-199"} <= set(damaged)
    assert [s.id for s in store.sessions("needle")] == [3, 2, 1]  # searchable again
    assert SessionStore(path).recovered is None  # the fresh store is sound


def test_a_truncated_store_is_replaced_and_kept(tmp_path):
    path = tmp_path / "sessions.db"
    filled_store(path, sessions=1, segments=50)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    store = SessionStore(path)
    assert store.recovered is not None and store.recovered.moved_to.stat().st_size == size // 2
    assert store.sessions() or store.recovered.sessions == 0


def test_a_file_that_is_not_a_database_is_moved_aside(tmp_path):
    path = tmp_path / "sessions.db"
    path.write_bytes(b"this is not SQLite " * 500)
    store = SessionStore(path)
    assert store.recovered is not None and "not a database" in store.recovered.reason
    assert store.recovered.moved_to.read_bytes().startswith(b"this is not SQLite")
    assert store.sessions() == []
