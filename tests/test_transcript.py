"""Segments from commits, and exporters parsed back by independent SRT / WebVTT readers."""

from __future__ import annotations

import html
import io
import json
from datetime import timedelta

import pytest
import srt
import webvtt
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.events import Commit, EndOfTurn, Word
from engine.transcript import (
    FORMATS,
    MAX_SEGMENT_CHARS,
    MAX_SEGMENT_SECONDS,
    Segment,
    Transcript,
    TranscriptBuilder,
    export,
    join_text,
)


def commit(text: str, start: float, end: float) -> Commit:
    return Commit(text, start, end, (Word(text, start, end),))


def test_builder_closes_segments_at_pause_and_sentence_end():
    builder = TranscriptBuilder("m", "en")
    assert builder.add(commit("Hello", 0.0, 0.4)) is None
    assert builder.add(commit("there", 0.5, 0.9)) is None
    assert builder.open_text == "Hello there"
    closed = builder.add(EndOfTurn(1.2))
    assert closed == Segment(
        0.0, 0.9, "Hello there", [Word("Hello", 0.0, 0.4), Word("there", 0.5, 0.9)]
    )
    builder.add(commit("How are", 2.0, 2.5))
    closed = builder.add(commit("you?", 2.6, 2.9))
    assert closed is not None and closed.text == "How are you?" and closed.start == 2.0
    builder.add(commit("Fine", 3.0, 3.3))
    transcript = builder.finish(4.0)
    assert [s.text for s in transcript.segments] == ["Hello there", "How are you?", "Fine"]
    assert transcript.duration == 4.0 and transcript.model == "m"


def test_builder_length_limit_starts_a_new_segment_with_the_new_commit():
    builder = TranscriptBuilder()
    for n in range(40):
        builder.add(commit(f"word{n}", n * 0.1, n * 0.1 + 0.1))
    segments = builder.finish(4.0).segments
    assert len(segments) > 1
    assert all(len(s.text) <= MAX_SEGMENT_CHARS for s in segments)
    assert " ".join(s.text for s in segments) == " ".join(f"word{n}" for n in range(40))


def test_join_text_spacing():
    assert join_text("Hello", "world") == "Hello world"
    assert join_text("Hello", ", world") == "Hello, world"
    assert join_text("日本", "語です") == "日本語です"
    assert join_text("", " x ") == "x"


def long_transcript() -> Transcript:
    texts = ["Grüße aus Köln — ça va?", "日本語のテキスト", "Line with --> arrow", "Ünïcödé ✓"]
    segments = [
        Segment(start, start + 2.345, text, [Word(text.split()[0], start, start + 0.5)])
        for start, text in zip([0.0, 59.999, 3599.5, 3723.456], texts, strict=True)
    ]
    translation = Transcript("tr", "de", 3730.0, [Segment(0.0, 2.0, "Hallo Welt")])
    return Transcript("model-x", "en", 3730.0, segments, translation)


def test_srt_round_trip_with_non_ascii_and_over_an_hour():
    transcript = long_transcript()
    parsed = list(srt.parse(export(transcript, "srt")))
    assert len(parsed) == len(transcript.segments)
    for cue, segment in zip(parsed, transcript.segments, strict=True):
        assert cue.start == timedelta(seconds=round(segment.start, 3))
        assert cue.end == timedelta(seconds=round(segment.end, 3))
        assert cue.content == segment.text.replace("-->", "->")
    assert parsed[3].start == timedelta(hours=1, minutes=2, seconds=3, milliseconds=456)


def seconds(stamp: str) -> float:
    hours, minutes, secs = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(secs)


def test_vtt_round_trip_with_non_ascii_and_over_an_hour():
    transcript = long_transcript()
    captions = webvtt.from_buffer(io.StringIO(export(transcript, "vtt")))
    assert len(captions) == len(transcript.segments)
    for caption, segment in zip(captions, transcript.segments, strict=True):
        assert seconds(caption.start) == pytest.approx(round(segment.start, 3))
        assert seconds(caption.end) == pytest.approx(round(segment.end, 3))
        assert caption.text == segment.text.replace("-->", "->")
    assert captions[3].start == "01:02:03.456"
    assert captions[3].end == "01:02:05.801"


def test_json_has_the_documented_shape():
    transcript = long_transcript()
    data = json.loads(export(transcript, "json"))
    assert set(data) == {"model", "language", "duration", "segments", "translation"}
    assert data["model"] == "model-x" and data["language"] == "en" and data["duration"] == 3730.0
    first = data["segments"][0]
    assert first == {
        "start": 0.0,
        "end": 2.345,
        "text": "Grüße aus Köln — ça va?",
        "words": [{"start": 0.0, "end": 0.5, "text": "Grüße"}],
    }
    assert data["translation"] == {
        "model": "tr",
        "language": "de",
        "segments": [{"start": 0.0, "end": 2.0, "text": "Hallo Welt", "words": []}],
    }
    assert json.loads(export(Transcript("m", None, 1.0, []), "json"))["translation"] is None


def test_txt_is_one_segment_per_line():
    transcript = long_transcript()
    lines = export(transcript, "txt").splitlines()
    assert lines == [s.text for s in transcript.segments]


def test_unknown_format_is_refused():
    assert FORMATS == ("txt", "srt", "vtt", "json")
    with pytest.raises(ValueError):
        export(long_transcript(), "docx")


words = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("C", "Z")), min_size=1, max_size=12
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(words, st.floats(0.01, 3.0)), min_size=1, max_size=40))
def test_segments_keep_every_commit_in_order(commits):
    builder = TranscriptBuilder()
    time = 0.0
    for text, length in commits:
        builder.add(commit(text, time, time + length))
        time += length
    segments = builder.finish(time).segments
    assert [w.text for s in segments for w in s.words] == [text for text, _ in commits]
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:], strict=False))
    assert all(len(s.words) == 1 or s.end - s.start <= MAX_SEGMENT_SECONDS for s in segments)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(words, st.floats(0, 20_000), st.floats(0.001, 30)), max_size=10))
@example(cues=[("<b>", 0.0, 1.0), ("&amp;", 1.0, 1.0), ("<>", 2.0, 1.0)])  # markup in speech
def test_any_text_and_times_survive_srt_and_vtt(cues):
    segments = [Segment(start, start + length, text) for text, start, length in cues]
    transcript = Transcript("m", None, 0.0, segments)
    parsed_srt = list(srt.parse(export(transcript, "srt")))
    parsed_vtt = webvtt.from_buffer(io.StringIO(export(transcript, "vtt")))
    for segment, cue, caption in zip(segments, parsed_srt, parsed_vtt, strict=True):
        # webvtt-py hands back cue text as written, entities undecoded: decode them as a player does
        assert cue.content == html.unescape(caption.text) == segment.text.replace("-->", "->")
        assert cue.start.total_seconds() == pytest.approx(segment.start, abs=5e-4)
        assert seconds(caption.end) == pytest.approx(segment.end, abs=5e-4)
