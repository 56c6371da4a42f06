"""The remote recognizer against a real websocket server on loopback (tests/protocol_server.py)
that speaks Kyutai's streaming protocol with scripted replies."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
import soundfile

import main
from engine import remote
from engine.audio.sources import FileSource
from engine.errors import ModelError
from engine.events import Commit, Error, Partial
from engine.recognizer import LoadOptions, load_recognizer, load_translation
from engine.session import LiveSession
from engine.store import SessionStore
from tests.protocol_server import RATE, ProtocolServer, Script

pytestmark = pytest.mark.timeout(30)

WORDS = [("Hello", 0.2, 0.5), ("remote", 0.6, 1.0), ("world.", 1.1, 1.5)]


def feed_seconds(recognizer, seconds: float) -> list:
    events = []
    for _ in range(round(seconds * RATE / 1920)):
        events += recognizer.feed(np.zeros(1920, np.float32))
    return events


def wait_for(recognizer, count: int, seconds: float = 5.0) -> list:
    """Events until `count` have arrived (feed() never blocks on the network)."""
    events, deadline = [], time.monotonic() + seconds
    while len(events) < count and time.monotonic() < deadline:
        events += recognizer.feed(np.zeros(0, np.float32))
        time.sleep(0.01)
    return events


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_words_come_as_a_partial_then_a_commit_with_the_servers_times():
    with ProtocolServer(Script(words=WORDS)) as server:
        recognizer = load_recognizer(server.address)
        events = feed_seconds(recognizer, 2.4)
        events += wait_for(recognizer, 6 - len(events))
        recognizer.flush()
    assert events == [
        Partial("Hello", 0.2),
        Commit("Hello", 0.2, 0.5, (remote.Word("Hello", 0.2, 0.5),)),
        Partial("remote", 0.6),
        Commit("remote", 0.6, 1.0, (remote.Word("remote", 0.6, 1.0),)),
        Partial("world.", 1.1),
        Commit("world.", 1.1, 1.5, (remote.Word("world.", 1.1, 1.5),)),
    ]
    assert recognizer.info.family == "remote" and recognizer.info.name == server.address
    assert recognizer.info.delay_seconds == remote.KYUTAI_DELAY_SECONDS


def test_a_word_without_its_end_commits_at_the_next_word():
    words = [("one", 0.1, 99.0), ("two", 0.4, 0.6)]  # "one" never gets its EndWord
    with ProtocolServer(Script(words=words)) as server:
        recognizer = load_recognizer(server.address)
        events = feed_seconds(recognizer, 1.2)
        events += wait_for(recognizer, 3 - len(events))
        events += recognizer.flush()
    assert events[:3] == [
        Partial("one", 0.1),
        Commit("one", 0.1, 0.4, (remote.Word("one", 0.1, 0.4),)),
        Partial("two", 0.4),
    ]
    assert events[3].text == "two"  # committed at the end of the stream


def test_the_key_travels_in_kyutais_header_and_never_in_the_name_or_repr():
    with ProtocolServer(Script(keys={"s3cret"})) as server:
        options = LoadOptions(api_key="s3cret")
        recognizer = load_recognizer(server.address, options)
        recognizer.flush()
    assert server.streams[0].key == "s3cret"
    assert server.streams[0].path == "/api/asr-streaming"
    assert "s3cret" not in repr(options) and "s3cret" not in repr(recognizer.info)


def test_the_servers_modules_info_gives_the_delay_and_languages():
    info = [{"path": "/api/asr-streaming", "delay_seconds": "2.5", "languages": "en, fr"}]
    with ProtocolServer(Script(modules_info=info)) as server:
        recognizer = load_recognizer(server.address)
        recognizer.flush()
    assert recognizer.info.delay_seconds == 2.5 and recognizer.info.languages == ("en", "fr")


@pytest.mark.parametrize("refuse_with", ["status", "error"])
def test_a_refused_key_is_a_clear_model_error(refuse_with):
    with ProtocolServer(Script(keys={"right"}, refuse_with=refuse_with)) as server:
        with pytest.raises(ModelError) as raised:
            load_recognizer(server.address, LoadOptions(api_key="wrong"))
    text = str(raised.value)
    assert server.address in text and "--api-key" in text
    assert ("refused the API key" if refuse_with == "status" else "invalid api key") in text


def test_a_missing_key_says_that_one_is_needed():
    with ProtocolServer(Script(keys={"right"})) as server:
        with pytest.raises(ModelError, match="needs an API key and none was given"):
            load_recognizer(server.address)


def test_a_busy_server_says_every_stream_is_in_use():
    with ProtocolServer(Script(busy=True)) as server:
        with pytest.raises(ModelError) as raised:
            load_recognizer(server.address)
    assert "no free channels" in raised.value.message and "--batch" in raised.value.hint


def test_a_server_that_is_not_there_is_a_clear_model_error():
    with pytest.raises(ModelError) as raised:
        load_recognizer(f"ws://127.0.0.1:{closed_port()}")
    assert "connection was refused" in raised.value.message
    assert "livecap serve" in raised.value.hint


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("ws://h:8080", "ws://h:8080/api/asr-streaming"),
        ("wss://h.example/", "wss://h.example/api/asr-streaming"),
        ("ws://h:8080/proxy/asr?auth_id=k", "ws://h:8080/proxy/asr?auth_id=k"),
    ],
)
def test_an_address_gets_kyutais_path_unless_it_has_one(address, expected):
    assert remote.stream_url(address) == expected


def test_a_name_never_shows_a_key_written_into_the_address():
    assert remote.display_name("ws://me:pw@h:1/asr?auth_id=k") == "ws://h:1/asr"


@pytest.mark.parametrize("address", ["http://h:8080", "ws://", "ws://h:port"])
def test_a_wrong_address_says_how_to_write_one(address):
    with pytest.raises(ModelError) as raised:
        load_recognizer(address)
    assert "ws://" in str(raised.value)


def test_a_server_cannot_be_a_translation_model():
    with pytest.raises(ModelError, match="does not translate"):
        load_translation("ws://127.0.0.1:1", LoadOptions())


def test_flush_sends_a_marker_and_bounded_silence_and_waits_for_the_echo():
    # "late." ends at the stream's end: the server says it only within the silence after the
    # marker, so a flush that did not wait for the echo would lose it.
    words = [("Early", 0.1, 0.4), ("late.", 0.9, 1.2)]
    with ProtocolServer(Script(words=words)) as server:
        recognizer = load_recognizer(server.address)
        events = feed_seconds(recognizer, 1.2)
        events += recognizer.flush()
    stream = server.streams[0]
    assert [e.text for e in events if isinstance(e, Commit)] == ["Early", "late."]
    ((marker, before),) = stream.markers
    assert marker in stream.echoed and before == round(1.2 * RATE / 1920) * 1920
    silence = (stream.samples - before) / RATE
    assert remote.KYUTAI_DELAY_SECONDS <= silence <= remote.KYUTAI_DELAY_SECONDS + 1.0
    assert stream.closed.wait(2)  # the stream is ended, its slot free


def test_a_marker_never_echoed_ends_the_flush_in_bounded_time(monkeypatch):
    monkeypatch.setattr(remote, "MARKER_SECONDS", 0.5)
    with ProtocolServer(Script(words=[("only", 0.1, 9.0)], echo_markers=False)) as server:
        recognizer = load_recognizer(server.address)
        events = feed_seconds(recognizer, 0.96)
        began = time.monotonic()
        events += recognizer.flush()
    assert time.monotonic() - began < 3
    assert Commit("only", 0.1, 0.96, (remote.Word("only", 0.1, 0.96),)) in events  # at the end
    warning = events[-1]
    assert isinstance(warning, Error) and not warning.fatal and "last words" in warning.message


def test_a_dropped_connection_keeps_the_words_and_ends_with_a_fatal_error():
    with ProtocolServer(Script(words=[*WORDS, ("never", 3.0, 3.2)], drop_after=2.0)) as server:
        recognizer = load_recognizer(server.address)
        events = feed_seconds(recognizer, 1.9)
        time.sleep(0.2)
        events += feed_seconds(recognizer, 1.0)
        events += wait_for(recognizer, 1)
        later = recognizer.feed(np.zeros(1920, np.float32)) + recognizer.flush()
    commits = [e for e in events if isinstance(e, Commit)]
    assert [c.text for c in commits] == ["Hello", "remote", "world."]
    # "world." had no EndWord yet: it is kept, ending where the audio fed so far ends
    assert commits[-1].start == 1.1 and commits[-1].end >= 1.9
    error = events[-1]
    assert isinstance(error, Error) and error.fatal
    assert "connection" in error.message and "lost" in error.message
    assert "reconnect" in error.hint and "kept" in error.hint
    assert later == []  # the rest of the lost stream is dropped, quietly


def test_a_stream_lost_mid_word_keeps_the_word_being_shown():
    with ProtocolServer(Script(words=[("half", 0.1, 9.0)], drop_after=1.5)) as server:
        recognizer = load_recognizer(server.address)
        events = feed_seconds(recognizer, 1.2)
        events += wait_for(recognizer, 1 - len(events))
        assert events == [Partial("half", 0.1)]
        events += feed_seconds(recognizer, 0.8)
        events += wait_for(recognizer, 3 - len(events))
    # committed where the audio fed ended when the loss was noticed: past the 1.5 s it cut at
    kept = events[1]
    assert isinstance(kept, Commit) and kept.text == "half" and 1.5 <= kept.end <= 2.0
    assert isinstance(events[2], Error) and events[2].fatal


def test_feed_waits_for_a_server_that_falls_behind_then_fails_it(monkeypatch):
    monkeypatch.setattr(remote, "MAX_AHEAD_SECONDS", 2.0)
    monkeypatch.setattr(remote, "STALL_SECONDS", 0.5)
    with ProtocolServer(Script(step_until=1.0)) as server:
        recognizer = load_recognizer(server.address)
        events = []
        for _ in range(6):
            events += recognizer.feed(np.zeros(RATE, np.float32))
    stream = server.streams[0]
    assert stream.samples <= 4 * RATE  # it stopped sending at 2 s ahead of the 1 s stepped
    assert isinstance(events[-1], Error) and "stopped transcribing" in events[-1].message


def test_reset_opens_a_new_stream_whose_times_start_again():
    with ProtocolServer(Script(words=[("again", 0.2, 0.4)])) as server:
        recognizer = load_recognizer(server.address)
        first = feed_seconds(recognizer, 1.0) + recognizer.flush()
        recognizer.reset()
        second = feed_seconds(recognizer, 1.0) + recognizer.flush()
    assert len(server.streams) == 2
    assert [e for e in first if isinstance(e, Commit)] == [
        e for e in second if isinstance(e, Commit)
    ]


def test_a_ready_that_never_comes_still_streams(monkeypatch):
    """Kyutai's single-stream server sends no Ready."""
    monkeypatch.setattr(remote, "READY_SECONDS", 0.2)
    with ProtocolServer(Script(words=[("hi", 0.1, 0.3)], ready=False)) as server:
        recognizer = load_recognizer(server.address)
        events = feed_seconds(recognizer, 1.0) + recognizer.flush()
    assert [e.text for e in events if isinstance(e, Commit)] == ["hi"]


def speech_file(tmp_path, seconds: float = 2.0):
    path = tmp_path / "talk.wav"
    soundfile.write(path, np.zeros(int(16000 * seconds), np.float32), 16000)
    return path


def test_a_live_session_through_the_server_is_saved_with_the_servers_words(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    with ProtocolServer(Script(words=WORDS)) as server:
        recognizer = load_recognizer(server.address)
        events = []
        source = FileSource(speech_file(tmp_path), realtime=False)
        session = LiveSession(source, recognizer, lambda r, e: events.append(e), store=store)
        session.start()
        assert session.wait(timeout=15)
    saved = store.transcript(session.session_id)
    assert " ".join(s.text for s in saved.segments) == "Hello remote world."
    assert [(w.start, w.end) for s in saved.segments for w in s.words] == [
        (0.2, 0.5),
        (0.6, 1.0),
        (1.1, 1.5),
    ]
    assert store.sessions()[0].model == server.address
    assert not any(isinstance(e, Error) for e in events)


def test_a_session_whose_server_drops_keeps_its_text_and_reports_the_loss(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    with ProtocolServer(Script(words=WORDS, drop_after=1.8)) as server:
        recognizer = load_recognizer(server.address)
        events = []
        source = FileSource(speech_file(tmp_path, 4.0), realtime=True)
        session = LiveSession(source, recognizer, lambda r, e: events.append(e), store=store)
        session.start()
        assert session.wait(timeout=15)
    errors = [e for e in events if isinstance(e, Error)]
    assert len(errors) == 1 and errors[0].fatal and "lost" in errors[0].message
    saved = " ".join(s.text for s in store.transcript(session.session_id).segments)
    assert saved.startswith("Hello remote")
    assert session.duration < 4.0  # the session ended at the loss, not at the file's end


def test_the_cli_transcribes_a_file_on_a_server(tmp_path, capsys):
    with ProtocolServer(Script(words=WORDS, keys={"k"})) as server:
        status = main.main(
            ["transcribe", str(speech_file(tmp_path)), "--model", server.address, "--api-key", "k"]
        )
    assert status == 0
    assert capsys.readouterr().out.strip() == "Hello remote world."


def test_the_cli_takes_the_key_from_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIVECAP_API_KEY", "k")
    with ProtocolServer(Script(words=WORDS, keys={"k"})) as server:
        status = main.main(["transcribe", str(speech_file(tmp_path)), "--model", server.address])
    assert status == 0 and server.streams[0].key == "k"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (Script(keys={"right"}), "refused the API key"),
        (Script(busy=True), "no free channels"),
        (None, "connection was refused"),
    ],
)
def test_the_cli_reports_a_server_it_cannot_use_with_status_2(tmp_path, capsys, script, expected):
    audio = str(speech_file(tmp_path))
    if script is None:
        status = main.main(["transcribe", audio, "--model", f"ws://127.0.0.1:{closed_port()}"])
    else:
        with ProtocolServer(script) as server:
            status = main.main(["transcribe", audio, "--model", server.address, "--api-key", "x"])
    err = capsys.readouterr().err
    assert status == 2 and expected in err and "Traceback" not in err


def test_the_cli_reports_a_server_lost_mid_file_with_status_2(tmp_path, capsys):
    with ProtocolServer(Script(words=WORDS, drop_after=1.0)) as server:
        status = main.main(["transcribe", str(speech_file(tmp_path)), "--model", server.address])
    err = capsys.readouterr().err
    assert status == 2 and "was lost" in err and "Traceback" not in err


def test_bench_refuses_a_server_with_status_2(capsys):
    assert main.main(["bench", "--model", "ws://127.0.0.1:1"]) == 2
    assert "bench measures a model on this machine" in capsys.readouterr().err
