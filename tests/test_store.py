"""The SQLite session store: round trip, search, privacy, and durability across SIGKILL."""

from __future__ import annotations

import os
import signal
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
