"""Transcripts: committed words grouped into segments, and exporters to TXT, SRT, WebVTT, JSON.

A recognizer commits text a little at a time; `TranscriptBuilder` groups those commits into
segments (subtitle-sized lines) that close at a pause, at the end of a sentence, or when
they grow too long to read at once. Times are stream seconds throughout.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from engine.events import Commit, EndOfTurn, Word

FORMATS = ("txt", "srt", "vtt", "json")

# A segment closes before it grows past either limit: about two subtitle lines.
MAX_SEGMENT_CHARS = 84
MAX_SEGMENT_SECONDS = 7.0

_SENTENCE_END = re.compile(r"[.!?。！？]['\"”’)\]]*$")
# Scripts written without spaces between words: joining their pieces adds no space.
_NO_SPACE_SCRIPT = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]"
)


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    model: str
    language: str | None
    duration: float
    segments: list[Segment]
    translation: Transcript | None = None


def join_text(left: str, right: str) -> str:
    """Append committed text, with a space between words unless the script uses none."""
    left, right = left.rstrip(), right.strip()
    if not left or not right:
        return left or right
    if _NO_SPACE_SCRIPT.match(left[-1]) and _NO_SPACE_SCRIPT.match(right[0]):
        return left + right
    if right[0] in ",.;:!?)]}%。、，！？":
        return left + right
    return f"{left} {right}"


class TranscriptBuilder:
    """Groups Commit events into segments; EndOfTurn and sentence ends close a segment."""

    def __init__(self, model: str = "", language: str | None = None) -> None:
        self.model = model
        self.language = language
        self.segments: list[Segment] = []
        self.current: Segment | None = None  # the open segment, still growing

    @property
    def open_text(self) -> str:
        return self.current.text if self.current else ""

    def add(self, event: object) -> Segment | None:
        """Take one event; return the segment it closed, if any (other events are ignored)."""
        if isinstance(event, EndOfTurn):
            return self.close()
        if not isinstance(event, Commit) or not event.text.strip():
            return None
        closed = None
        if self.current is not None and self._would_overflow(event):
            closed = self.close()
        if self.current is None:
            self.current = Segment(event.start, event.end, event.text.strip(), list(event.words))
        else:
            self.current.text = join_text(self.current.text, event.text)
            self.current.end = max(self.current.end, event.end)
            self.current.words.extend(event.words)
        if closed is None and _SENTENCE_END.search(self.current.text):
            closed = self.close()
        return closed

    def close(self) -> Segment | None:
        """Close the open segment, if there is one, and return it."""
        segment, self.current = self.current, None
        if segment is not None:
            self.segments.append(segment)
        return segment

    def finish(self, duration: float) -> Transcript:
        self.close()
        return Transcript(self.model, self.language, duration, list(self.segments))

    def _would_overflow(self, commit: Commit) -> bool:
        assert self.current is not None
        too_long = len(self.current.text) + 1 + len(commit.text.strip()) > MAX_SEGMENT_CHARS
        return too_long or commit.end - self.current.start > MAX_SEGMENT_SECONDS


# ---------------------------------------------------------------------------------------------
# Exporters


def export(transcript: Transcript, fmt: str) -> str:
    """Write `transcript` in one of FORMATS. TXT, SRT and VTT hold the captions only."""
    if fmt == "txt":
        return "".join(f"{segment.text}\n" for segment in transcript.segments)
    if fmt == "srt":
        return _srt(transcript.segments)
    if fmt == "vtt":
        return _vtt(transcript.segments)
    if fmt == "json":
        return json.dumps(to_dict(transcript), ensure_ascii=False, indent=2) + "\n"
    raise ValueError(f"unknown transcript format {fmt!r}; expected one of {FORMATS}")


def to_dict(transcript: Transcript) -> dict:
    """The JSON shape: model, language, duration, segments with words, translation or null."""
    out = {
        "model": transcript.model,
        "language": transcript.language,
        "duration": round(transcript.duration, 3),
        "segments": [_segment_dict(segment) for segment in transcript.segments],
        "translation": None,
    }
    if transcript.translation is not None:
        out["translation"] = {
            "model": transcript.translation.model,
            "language": transcript.translation.language,
            "segments": [_segment_dict(s) for s in transcript.translation.segments],
        }
    return out


def _segment_dict(segment: Segment) -> dict:
    return {
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": segment.text,
        "words": [
            {"start": round(w.start, 3), "end": round(w.end, 3), "text": w.text}
            for w in segment.words
        ],
    }


def _timestamp(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _cue_times(segment: Segment, decimal: str) -> str:
    end = max(segment.end, segment.start)
    return f"{_timestamp(segment.start, decimal)} --> {_timestamp(end, decimal)}"


def _one_line(text: str) -> str:
    # A blank line ends a cue in both formats; "-->" would read as a timing line.
    return " ".join(text.split()).replace("-->", "->")


def _vtt_text(text: str) -> str:
    # WebVTT cue text is markup: "<" opens a tag and "&" an entity, so both are written as
    # entities, or "<b>" in speech would turn the rest of the cue bold.
    return _one_line(text).replace("&", "&amp;").replace("<", "&lt;")


def _srt(segments: list[Segment]) -> str:
    cues = [
        f"{number}\n{_cue_times(segment, ',')}\n{_one_line(segment.text)}\n"
        for number, segment in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def _vtt(segments: list[Segment]) -> str:
    cues = [f"{_cue_times(segment, '.')}\n{_vtt_text(segment.text)}\n" for segment in segments]
    return "WEBVTT\n\n" + "\n".join(cues)
