"""The per-stream front of Kyutai recognition, around the model (shared by the single-stream
recognizer in kyutai_stream.py and the batched one in engine/serving): the model audio a
stream's audio becomes, its timeline back to stream time, and its words.

Audio timeline. The model sees: the silence prefix its checkpoint expects, then the user's
audio, with silence inserted where pauses are flushed. `Timeline` maps positions in that
model audio back to stream time, so word times are always in the user's audio.

Pause flush. When the pause detector confirms a pause, the text still owed for the last
`delay` seconds is pushed out at once by inserting that much silence into the model's audio
(less the quiet already heard). The silence becomes part of the stream the model sees: no
state is rolled back, every real sample is consumed exactly once, so no word is lost or
repeated; word times skip over the inserted silence. The model hears a somewhat longer pause,
which is what it was trained to handle. Insertion happens at a fixed sample position (where
the pause is confirmed), so how the audio is cut into `feed()` calls never changes the output.

Tokens. 3 = pad (nothing new), 0 = a word starts next; other ids are SentencePiece pieces,
"▁" starting a word. A word is committed when the next word starts, at a pause, or at the end.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from tokenizers import Tokenizer

from engine.events import Commit, EndOfTurn, Event, Partial, Word
from engine.models.kyutai.config import SAMPLE_RATE, KyutaiConfig
from engine.streaming.pause import PauseDetector

_PAUSE_MARGIN_SECONDS = 0.16  # past the delay when flushing at a pause (two frames)
_WORD_START_ID = 0  # "end of padding": the model's own marker that a word starts next


class Timeline:
    """Model-audio sample positions → stream seconds, across the prefix and inserted silence."""

    def __init__(self, prefix_samples: int) -> None:
        self.prefix = prefix_samples
        self.inserts: list[tuple[int, int]] = []  # (model position, length), in order
        self.dropped = 0  # inserted samples of spans forgotten as too old to matter

    def insert(self, position: int, length: int) -> None:
        self.inserts.append((position, length))

    def to_stream(self, position: int) -> float:
        offset = self.prefix + self.dropped
        for start, length in self.inserts:
            if position < start:
                break
            offset += min(length, position - start)
        return max(0, position - offset) / SAMPLE_RATE

    def forget_before(self, position: int) -> None:
        """Spans wholly before `position` will never be asked about again: fold them."""
        while self.inserts and sum(self.inserts[0]) < position:
            self.dropped += self.inserts.pop(0)[1]


class Words:
    """SentencePiece pieces → Partial events for the word being built, Commit when done."""

    def __init__(self, tokenizer: Tokenizer, skip_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.skip_ids = skip_ids
        self.ids: list[int] = []
        self.start = 0.0

    def push(self, token: int, at: float) -> list[Event]:
        if token in self.skip_ids:
            return []
        piece = self.tokenizer.id_to_token(token)
        if piece is None:
            return []
        events: list[Event] = []
        if piece.startswith("▁") and self.ids:
            events += self.finish(at)
        if not self.ids:
            self.start = at
        self.ids.append(token)
        events.append(Partial(self._text(), self.start))
        return events

    def finish(self, end: float) -> list[Event]:
        """Commit the word being built, if any, ending at `end`."""
        if not self.ids:
            return []
        text, start = self._text(), self.start
        self.ids = []
        if not text:
            return []
        end = max(end, start)
        return [Commit(text, start, end, (Word(text, start, end),))]

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True).strip()


class StreamFront:
    """One stream's side of Kyutai recognition, around the model: the user's audio becomes
    whole frames of model audio (the silence prefix, then the audio with silence inserted at
    each flushed pause), and the text tokens of those frames, in order, become word events.
    `KyutaiRecognizer` steps its frames itself; `engine/serving` steps many streams' at once."""

    def __init__(
        self, config: KyutaiConfig, tokenizer: Tokenizer, skip_ids: set[int], pause_flush: bool
    ) -> None:
        self.frame_size = config.mimi.frame_size
        self.delay_samples = round(config.delay_seconds * SAMPLE_RATE)
        self.pause_flush = pause_flush
        prefix = round(config.silence_prefix_seconds * SAMPLE_RATE)
        self.words = Words(tokenizer, skip_ids)
        self.timeline = Timeline(prefix)
        self.pauses = PauseDetector(SAMPLE_RATE)
        self.pending = np.zeros(prefix, dtype=np.float32)  # model audio short of a frame
        self.framed = 0  # model-audio samples cut into whole frames
        self.model_samples = 0  # model-audio samples whose frame's token was taken
        self.stream_samples = 0  # real samples received
        self._pause_checked = 0  # real samples the pause detector has seen
        self._turn_ends: deque[tuple[int, float]] = deque()  # (model position, pause time)

    def push(self, samples: np.ndarray) -> list[tuple[np.ndarray, bool]]:
        """Stream audio in → whole frames of model audio out, in segments: (audio, whether
        it ends a flushed pause, so its words are wanted at once)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        segments: list[tuple[np.ndarray, bool]] = []
        while len(samples):
            take, pause = self._until_pause(samples)
            segments.append((self.frames(samples[:take]), False))
            self.stream_samples += take
            samples = samples[take:]
            if pause is not None:
                segments += self._flush_pause(pause)
        return segments

    def frames(self, samples: np.ndarray) -> np.ndarray:
        """Model audio appended as is (no pause detection: the end-of-stream silence) →
        the whole frames it completes."""
        audio = np.concatenate((self.pending, samples))
        whole = len(audio) // self.frame_size * self.frame_size
        self.pending = audio[whole:]
        self.framed += whole
        return audio[:whole]

    def token(self, token: int) -> list[Event]:
        """The next frame's text token → its word events (and a turn's end once reached)."""
        at = self.timeline.to_stream(self.model_samples - self.delay_samples)
        self.model_samples += self.frame_size
        events = self.words.push(token, at)
        self.timeline.forget_before(self.model_samples - self.delay_samples)
        return events + self.due()

    def due(self) -> list[Event]:
        """The ends of turn whose audio (and inserted silence) has been stepped."""
        events: list[Event] = []
        while self._turn_ends and self._turn_ends[0][0] <= self.model_samples:
            _, pause_time = self._turn_ends.popleft()
            events += self.words.finish(pause_time) + [EndOfTurn(pause_time)]
        return events

    def transcribed_seconds(self) -> float:
        """Stream time before which every word has been emitted: the next token's time."""
        return self.timeline.to_stream(self.model_samples - self.delay_samples)

    def _until_pause(self, samples: np.ndarray) -> tuple[int, float | None]:
        """How many samples to consume before the next confirmed pause, and its time."""
        if not self.pause_flush:
            return len(samples), None
        detector = self.pauses
        taken = 0
        while taken < len(samples):
            # Slices end on the detector's block boundaries, so a pause is confirmed exactly
            # at a slice's end, whatever the sizes of the feed() calls.
            size = detector.block - self._pause_checked % detector.block
            pauses = detector.feed(samples[taken : taken + size])
            step = min(size, len(samples) - taken)
            taken += step
            self._pause_checked += step
            if pauses:
                return taken, pauses[0]
        return len(samples), None

    def _flush_pause(self, pause_time: float) -> list[tuple[np.ndarray, bool]]:
        heard = self.stream_samples - round(pause_time * SAMPLE_RATE)  # quiet already fed
        owed = self.delay_samples + round(_PAUSE_MARGIN_SECONDS * SAMPLE_RATE) - heard
        segments = []
        if owed > 0:
            owed += -(len(self.pending) + owed) % self.frame_size  # end on a frame boundary
            self.timeline.insert(self.framed + len(self.pending), owed)
            segments.append((self.frames(np.zeros(owed, dtype=np.float32)), True))
        self._turn_ends.append((self.framed, pause_time))
        return segments


def skipped_ids(config: KyutaiConfig, tokenizer: Tokenizer) -> set[int]:
    """Token ids that are no text: the tokenizer's specials, pad and the word-start marker."""
    specials = {id_ for id_, token in tokenizer.get_added_tokens_decoder().items() if token.special}
    return specials | {config.pad_token_id, _WORD_START_ID}
