"""Live captions from encoder-decoder speech models that only decode whole windows.

`ChunkedRecognizer` re-decodes a bounded audio buffer once `step_seconds` of new audio are in
(once per feed: a model slower than real time decodes less often instead of queueing up) and
commits what two consecutive hypotheses agree on (LocalAgreement-2), whole words at a time;
the rest is shown as a partial. Committed tokens still inside the buffer are forced as the
decoder's prefix, so a new hypothesis can only continue them: committed text never changes
and never repeats at a seam. Once the buffer is long, its oldest committed words are cut
away at their aligned end time; a pause (or `flush()`) commits everything and starts afresh.

`OfflineRecognizer` is the file path: windows of at most 20 s, cut at quiet points, each
decoded once. Both work over any `SpeechSeq2Seq` (Speech2Text, speech encoder-decoder).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engine.events import Commit, EndOfTurn, Event, Partial, Word
from engine.models.contract import LoadOptions, ModelInfo, SpeechSeq2Seq
from engine.streaming.local_agreement import LocalAgreement
from engine.streaming.pause import PauseDetector

# written without spaces between words: one Word per commit
_UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "yue", "bo"})


def load_speech2text(
    folder: Path, name: str, options: LoadOptions
) -> ChunkedRecognizer | OfflineRecognizer:
    from engine.models.speech2text import load_model

    return chunked_recognizer(*load_model(folder, name, options), options)


def load_speech_encoder_decoder(
    folder: Path, name: str, options: LoadOptions
) -> ChunkedRecognizer | OfflineRecognizer:
    from engine.models.speech_encoder_decoder import load_model

    # wav2vec2 encoders re-encode the whole window on every step, far dearer than
    # Speech2Text's: stepping every 2 s halves the live cost for a second more delay
    return chunked_recognizer(*load_model(folder, name, options), options, step_seconds=2.0)


def chunked_recognizer(
    model: SpeechSeq2Seq, info: ModelInfo, options: LoadOptions, step_seconds: float = 1.0
) -> ChunkedRecognizer | OfflineRecognizer:
    if options.offline:
        return OfflineRecognizer(model, info)
    return ChunkedRecognizer(model, info, step_seconds=step_seconds)


class _AudioWindow:
    """Stream samples [start, end) not yet let go of, in a reusable array."""

    def __init__(self, capacity: int) -> None:
        self.data = np.zeros(capacity, dtype=np.float32)
        self.length = 0
        self.start = 0  # stream index of data[0]

    @property
    def end(self) -> int:
        return self.start + self.length

    def append(self, samples: np.ndarray) -> None:
        needed = self.length + len(samples)
        if needed > len(self.data):
            self.data = np.concatenate([self.data[: self.length], np.zeros(needed, np.float32)])
        self.data[self.length : needed] = samples
        self.length = needed

    def audio(self, until: int | None = None) -> np.ndarray:
        stop = self.length if until is None else min(self.length, until - self.start)
        return self.data[:stop]

    def drop_until(self, index: int) -> None:
        cut = min(max(index - self.start, 0), self.length)
        self.data[: self.length - cut] = self.data[cut : self.length]
        self.length -= cut
        self.start += cut


@dataclass(frozen=True)
class _Token:
    id: int
    end: float  # stream seconds


def _has_sound(audio: np.ndarray) -> bool:
    """Anything above digital silence / faint hiss (-60 dBFS)? A model only invents text
    for a silent window."""
    return len(audio) > 0 and float(np.abs(audio).max()) > 1e-3


def _commit(text: str, start: float, end: float, spaced: bool) -> Commit:
    """A commit whose words share its time span in proportion to their length."""
    pieces = text.split() if spaced else [text]
    total = sum(len(p) for p in pieces) or 1
    words, at = [], start
    for piece in pieces:
        after = at + (end - start) * len(piece) / total
        words.append(Word(piece, round(at, 3), round(after, 3)))
        at = after
    return Commit(text, round(start, 3), round(end, 3), tuple(words))


class ChunkedRecognizer:
    """The live LocalAgreement-2 policy; see the module docstring."""

    frame_seconds = 0.1

    def __init__(
        self,
        model: SpeechSeq2Seq,
        info: ModelInfo,
        *,
        step_seconds: float = 1.0,
        trim_seconds: float = 10.0,
        max_buffer_seconds: float = 20.0,
        keep_words: int = 2,
        min_pause: float = 0.5,
        lead_in_seconds: float = 0.5,
    ) -> None:
        self.model = model
        self.sample_rate = model.sample_rate
        self.frame_size = round(self.sample_rate * self.frame_seconds)
        self.info = replace(info, delay_seconds=2 * step_seconds)
        self.spaced = info.language not in _UNSPACED_LANGUAGES
        self.step = round(step_seconds * self.sample_rate)
        self.trim_samples = round(trim_seconds * self.sample_rate)
        self.max_samples = round(max_buffer_seconds * self.sample_rate)
        self.keep_words = keep_words
        self.min_pause = min_pause
        self.lead_in = round(lead_in_seconds * self.sample_rate)
        self.reset()

    def reset(self) -> None:
        self.window = _AudioWindow(self.max_samples + 2 * self.step)
        self.pauses = PauseDetector(self.sample_rate, self.min_pause)
        self.agreement = LocalAgreement()
        self.prefix: list[_Token] = []  # committed tokens whose audio is still in the window
        self.last_end = 0.0  # end of the last commit, stream seconds
        self.since_decode = 0
        self.heard_speech = False

    def feed(self, samples: np.ndarray) -> list[Event]:
        """Take `samples`, then decode once if a step's worth of new audio is in. A model
        slower than real time gets more audio per feed from the worker (everything that
        arrived during its last decode), so its steps stretch instead of queueing up: the
        captions come later, but they keep pace with the speech."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        events: list[Event] = []
        for at in range(0, len(samples), self.frame_size):
            events += self._feed_frame(samples[at : at + self.frame_size])
        if self._step_due():
            events += self._decode_step()
        return events

    def flush(self) -> list[Event]:
        events = self._finish_utterance(self.window.end) if self.heard_speech else []
        self.window.drop_until(self.window.end)
        return events

    # -- the policy ----------------------------------------------------------------------

    def _feed_frame(self, frame: np.ndarray) -> list[Event]:
        self.window.append(frame)
        self.since_decode += len(frame)
        events: list[Event] = []
        for pause in self.pauses.feed(frame):
            cut = round((pause + self.min_pause / 2) * self.sample_rate)
            events += self._finish_utterance(cut)
            events.append(EndOfTurn(round(pause, 3)))
        self.heard_speech = self.heard_speech or self.pauses.in_speech
        if not self.heard_speech:  # nothing said yet: keep a short lead-in, decode nothing
            self.window.drop_until(self.window.end - self.lead_in)
            self.since_decode = 0
        elif self._step_due() and self.window.length + self.step > self.max_samples:
            events += self._decode_step()  # a long feed: the buffer is full, commit and cut now
        return events

    def _step_due(self) -> bool:
        return self.heard_speech and self.since_decode >= self.step

    def _decode_step(self) -> list[Event]:
        self.since_decode = 0
        tokens = self._hypothesis()
        agreed = self.agreement.agree([t.id for t in tokens])
        count = self._whole_words(tokens, agreed)
        events: list[Event] = []
        if count:
            events += self._commit_tokens(tokens[:count])
            self.agreement.committed(count)
        tentative = tokens[count:]
        if self.window.length + self.step > self.max_samples:  # no agreement for too long
            forced = self._whole_words(tentative, len(tentative)) or len(tentative)
            events += self._commit_tokens(tentative[:forced])
            self._cut_after_commits()
            tentative = tentative[forced:]
        self._trim()
        start = max(self.last_end, self.window.start / self.sample_rate)
        events.append(Partial(self.model.text([t.id for t in tentative]), round(start, 3)))
        return events

    def _finish_utterance(self, cut: int) -> list[Event]:
        """Commit everything heard up to stream index `cut`, then start a new utterance."""
        cut = min(max(cut, self.window.start), self.window.end)
        events: list[Event] = []
        if cut - self.window.start >= self.frame_size:
            events += self._commit_tokens(self._hypothesis(until=cut))
            events.append(Partial("", round(self.last_end, 3)))
        self.window.drop_until(cut)
        self.prefix = []
        self.agreement.reset()
        self.heard_speech = False
        self.since_decode = 0
        return events

    def _hypothesis(self, until: int | None = None) -> list[_Token]:
        """Decode the window (forcing the committed prefix); the tokens that follow it."""
        audio = self.window.audio(until)
        forced = [t.id for t in self.prefix]
        # the last decode's tokens after the committed ones: mostly said again, so cheap
        hypothesis = self.model.decode(audio, forced, self.agreement.previous or [])
        ids = hypothesis.ids
        offset = self.window.start / self.sample_rate
        if hypothesis.times is not None:
            ends = [offset + t for t in hypothesis.times]
        else:  # no alignment: spread the tokens evenly over the audio
            seconds = len(audio) / self.sample_rate
            ends = [offset + seconds * (i + 1) / len(ids) for i in range(len(ids))]
        skip = len(forced) if ids[: len(forced)] == forced else 0
        floor = self.last_end
        tokens = []
        for token, end in zip(ids[skip:], ends[skip:], strict=True):
            floor = max(floor, end)
            tokens.append(_Token(token, floor))
        return tokens

    def _whole_words(self, tokens: list[_Token], agreed: int) -> int:
        """How many of the `agreed` leading tokens form whole words: a word is known to be
        complete only when an agreed token starts the next one."""
        if not self.spaced:
            return agreed
        ids = [t.id for t in tokens]
        starts = [k for k in range(1, agreed) if self._starts_word(ids, k)]
        return starts[-1] if starts else 0

    def _starts_word(self, ids: list[int], k: int) -> bool:
        before = len(self.model.text(ids[:k]).split())
        return len(self.model.text(ids[: k + 1]).split()) > before

    def _commit_tokens(self, tokens: list[_Token]) -> list[Commit]:
        """Commit `tokens` (they follow the prefix): the new text, or nothing if it is empty."""
        if not tokens:
            return []
        start = max(self.last_end, self.window.start / self.sample_rate)
        end = max(start, min(tokens[-1].end, self.window.end / self.sample_rate))
        text = self.model.text([t.id for t in self.prefix + tokens])
        before = self.model.text([t.id for t in self.prefix])
        self.prefix += tokens
        self.last_end = end
        if text.startswith(before):
            added = text[len(before) :].strip()
        else:
            added = self.model.text([t.id for t in tokens]).strip()
        return [_commit(added, start, end, self.spaced)] if added else []

    def _trim(self) -> None:
        """Past `trim_seconds`, cut the window after its oldest committed words, keeping the
        last `keep_words` of them as the forced prefix (so an imprecise cut loses nothing)."""
        if self.window.length <= self.trim_samples:
            return
        ids = [t.id for t in self.prefix]
        starts = [k for k in range(1, len(ids)) if self._starts_word(ids, k)]
        if len(starts) < self.keep_words:
            return
        keep_from = starts[-self.keep_words]
        cut = round(self.prefix[keep_from - 1].end * self.sample_rate)
        self.window.drop_until(min(cut, self.window.end))
        self.prefix = self.prefix[keep_from:]

    def _cut_after_commits(self) -> None:
        """All but the last word was committed without agreement: drop the audio it came
        from (the last word's stays), and bound the window whatever the times said."""
        self.window.drop_until(round(self.last_end * self.sample_rate))
        self.prefix = []
        self.agreement.reset()
        if self.window.length + self.step > self.max_samples:
            self.window.drop_until(self.window.end - self.max_samples // 2)


class OfflineRecognizer:
    """Files: windows of at most `window_seconds`, cut at quiet points, decoded once each."""

    frame_seconds = 0.1
    quiet_block_seconds = 0.05

    def __init__(self, model: SpeechSeq2Seq, info: ModelInfo, window_seconds: float = 20.0):
        self.model = model
        self.sample_rate = model.sample_rate
        self.frame_size = round(self.sample_rate * self.frame_seconds)
        self.info = replace(info, delay_seconds=0.0)
        self.spaced = info.language not in _UNSPACED_LANGUAGES
        self.window_samples = round(window_seconds * self.sample_rate)
        self.reset()

    def reset(self) -> None:
        self.window = _AudioWindow(self.window_samples + self.frame_size)

    def feed(self, samples: np.ndarray) -> list[Event]:
        self.window.append(np.asarray(samples, dtype=np.float32).reshape(-1))
        events: list[Event] = []
        while self.window.length > self.window_samples:
            events += self._decode_until(self._quiet_cut())
        return events

    def flush(self) -> list[Event]:
        return self._decode_until(self.window.end)

    def _quiet_cut(self) -> int:
        """The quietest point in the second half of the next window (stream index)."""
        block = round(self.quiet_block_seconds * self.sample_rate)
        first = self.window_samples // 2 // block
        audio = self.window.audio()[: self.window_samples // block * block]
        energy = (audio.reshape(-1, block).astype(np.float64) ** 2).mean(axis=1)[first:]
        quietest = first + len(energy) - 1 - int(np.argmin(energy[::-1]))  # the latest minimum
        return self.window.start + quietest * block + block // 2

    def _decode_until(self, cut: int) -> list[Event]:
        audio = self.window.audio(cut)
        start, end = self.window.start / self.sample_rate, cut / self.sample_rate
        text = self.model.text(self.model.decode(audio).ids) if _has_sound(audio) else ""
        self.window.drop_until(cut)
        return [_commit(text, start, end, self.spaced)] if text else []
