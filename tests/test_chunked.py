"""The chunked live policy over a scripted model: the audio itself says which word is spoken.

During word k the samples alternate ±(0.1 + k / 10000); silence is zero. The fake model reads
the words present in a window and answers like a real one would: the forced prefix first,
then the words after it, each word two tokens ("▁wK" + "s"); a word still being spoken when
the window ends comes out garbled ("▁wK" + "?"), so consecutive hypotheses disagree on it.
Because every word has an identity, the committed stream can be checked exactly: every word,
in order, once — nothing lost at a trim, nothing repeated at a seam.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from engine.events import Commit, EndOfTurn, Partial
from engine.models.contract import Hypothesis
from engine.recognizer import ModelInfo
from engine.streaming.chunked import ChunkedRecognizer, OfflineRecognizer

RATE = 16000
GARBLED = 7
INFO = ModelInfo("scripted", "test", ("en",), "en", 0.0, "cpu", "float32")


def word_amplitude(k: int) -> float:
    return 0.1 + k / 10000


class ScriptedModel:
    sample_rate = RATE

    def __init__(self, with_times: bool = True, unstable: bool = False) -> None:
        self.with_times = with_times
        self.unstable = unstable  # every decode garbles every word differently: no agreement
        self.windows: list[float] = []  # seconds of audio per decode
        self.calls: list[tuple[list[int], list[int], list[int]]] = []  # prefix, draft, ids

    @staticmethod
    def words_in(audio: np.ndarray) -> list[tuple[int, int, bool]]:
        """(word, end sample, still going at the window's end) for each run of one word."""
        level = np.abs(audio[::16]).astype(np.float64)
        ids = np.where(level > 0.05, np.round((level - 0.1) * 10000), -1).astype(int)
        edges = np.flatnonzero(np.diff(ids)) + 1
        runs = []
        for start, stop in zip(np.r_[0, edges], np.r_[edges, len(ids)], strict=True):
            if ids[start] >= 0:
                runs.append((int(ids[start]), int(stop) * 16, stop == len(ids)))
        return runs

    def decode(self, audio: np.ndarray, prefix: Sequence[int] = (), draft=()) -> Hypothesis:
        self.windows.append(len(audio) / RATE)
        runs = self.words_in(audio)
        ends = {word: end / RATE for word, end, _ in runs}
        last_forced = max((t - 10) // 2 for t in prefix) if prefix else -1
        ids, times = list(prefix), [ends.get((t - 10) // 2, 0.0) for t in prefix]
        for word, end, open_ended in runs:
            if word <= last_forced:
                continue
            garbled = open_ended or (self.unstable and len(self.windows) % 2)
            ids += [2 * word + 10, GARBLED if garbled else 2 * word + 11]
            times += [end / RATE] * 2
        self.calls.append((list(prefix), list(draft), ids))
        return Hypothesis(ids=ids, times=times if self.with_times else None)

    def text(self, ids: Sequence[int]) -> str:
        pieces = {GARBLED: "?"}
        out = "".join(
            pieces.get(i, f"▁w{(i - 10) // 2}" if i % 2 == 0 else "s") for i in ids if i >= 7
        )
        return out.replace("▁", " ").strip()


def script(seconds: float, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Sentences of back-to-back words (0.2-0.6 s), some very long, between silences; some
    silences are pauses (1 s), some are not (0.2 s). Returns audio and each pause's word."""
    rng = np.random.default_rng(seed)
    parts, pauses, word, total = [], [], 0, 0
    while total < seconds * RATE:
        length = int(rng.choice([4, 12, 90]))  # 90 words ≈ 36 s: longer than the buffer
        for _ in range(length):
            n = int(rng.uniform(0.2, 0.6) * RATE)
            sign = np.where(np.arange(n) % 2, 1.0, -1.0)
            parts.append((word_amplitude(word) * sign).astype(np.float32))
            word, total = word + 1, total + n
        gap = 1.0 if rng.random() < 0.6 else 0.2
        parts.append(np.zeros(int(gap * RATE), np.float32))
        total += int(gap * RATE)
        if gap == 1.0:
            pauses.append((total, word))
    return np.concatenate(parts), pauses


def committed_words(events) -> list[str]:
    return [w for e in events if isinstance(e, Commit) for w in e.text.split()]


def run(recognizer, audio: np.ndarray, chunk: int = 1600) -> list:
    events = []
    for at in range(0, len(audio), chunk):
        events += recognizer.feed(audio[at : at + chunk])
    return events + recognizer.flush()


@pytest.mark.parametrize("with_times", [True, False])
def test_every_word_committed_once_in_order(with_times):
    audio, _ = script(240, seed=1)
    recognizer = ChunkedRecognizer(ScriptedModel(with_times), INFO)
    events = run(recognizer, audio)
    words = committed_words(events)
    spoken = sorted({w for w, _, _ in ScriptedModel.words_in(audio)})
    assert words == [f"w{k}s" for k in spoken]
    assert len(spoken) > 300


def test_without_agreement_the_window_is_bounded_and_nothing_repeats():
    audio, _ = script(300, seed=6)
    model = ScriptedModel(unstable=True)
    events = run(ChunkedRecognizer(model, INFO), audio, chunk=8000)
    assert max(model.windows) <= 20.0
    numbers = [w.removeprefix("w").rstrip("s?") for w in committed_words(events)]
    spoken = sorted({w for w, _, _ in ScriptedModel.words_in(audio)})
    assert numbers == [str(k) for k in spoken]


def test_each_decode_gets_the_last_ones_uncommitted_tokens_as_its_draft():
    audio, _ = script(60, seed=3)
    model = ScriptedModel()
    run(ChunkedRecognizer(model, INFO), audio)
    drafted = 0
    for (_, _, before), (_, draft, _) in zip(model.calls, model.calls[1:], strict=False):
        if draft:  # what the last decode said after what is now committed
            assert before[-len(draft) :] == draft
            drafted += 1
    assert drafted > len(model.calls) // 2


def test_commits_are_timed_in_order():
    audio, _ = script(120, seed=2)
    events = run(ChunkedRecognizer(ScriptedModel(), INFO), audio)
    commits = [e for e in events if isinstance(e, Commit)]
    previous_end = 0.0
    for commit in commits:
        assert previous_end <= commit.start <= commit.end <= len(audio) / RATE
        assert commit.words and commit.words[0].start == commit.start
        assert commit.words[-1].end == pytest.approx(commit.end, abs=1e-3)
        assert " ".join(w.text for w in commit.words) == commit.text
        previous_end = commit.end
    # a commit ends where its last word's audio ends (the scripted alignment is exact)
    ends = {f"w{k}s": end / RATE for k, end, _ in ScriptedModel.words_in(audio)}
    for commit in commits:
        assert commit.end == pytest.approx(ends[commit.words[-1].text], abs=2e-3)
    assert sum(1 for e in events if isinstance(e, Partial) and e.text) > 20


def test_buffer_stays_bounded_over_thirty_minutes():
    audio, _ = script(30 * 60, seed=3)
    model = ScriptedModel()
    events = run(ChunkedRecognizer(model, INFO), audio, chunk=8000)
    assert max(model.windows) <= 20.0
    assert len(model.windows) > 1000
    spoken = sorted({w for w, _, _ in ScriptedModel.words_in(audio)})
    assert committed_words(events) == [f"w{k}s" for k in spoken]


def test_a_pause_commits_the_tail_and_ends_the_turn():
    audio, pauses = script(150, seed=4)
    recognizer = ChunkedRecognizer(ScriptedModel(), INFO)
    events, done = [], 0
    for at in range(0, len(audio), 1600):
        events += recognizer.feed(audio[at : at + 1600])
        while done < len(pauses) and at + 1600 >= pauses[done][0]:
            # by the end of the 1 s silence, every word before it is committed
            last_word = pauses[done][1] - 1
            assert committed_words(events)[-1] == f"w{last_word}s"
            assert isinstance(events[-1], (EndOfTurn, Partial))
            assert any(isinstance(e, EndOfTurn) for e in events)
            done += 1
    assert done == len(pauses) >= 3


@pytest.mark.parametrize("policy", [ChunkedRecognizer, OfflineRecognizer])
def test_silence_is_never_decoded(policy):
    model = ScriptedModel()
    hiss = np.random.default_rng(0).normal(0, 1e-4, 25 * RATE).astype(np.float32)
    events = run(policy(model, INFO), hiss)
    assert events == [] and model.windows == []


def test_offline_windows_cut_at_quiet_points():
    audio, _ = script(70, seed=5)
    model = ScriptedModel()
    events = run(OfflineRecognizer(model, INFO), audio, chunk=RATE * 7)
    assert max(model.windows) <= 20.0
    commits = [e for e in events if isinstance(e, Commit)]
    assert commits[0].start == 0.0 and commits[-1].end == pytest.approx(len(audio) / RATE, abs=1e-3)
    for before, after in zip(commits, commits[1:], strict=False):
        assert before.end == after.start
    # cut at the quietest point: no word is split unless a window had no silence at all
    spoken = [f"w{k}" for k, _, _ in ScriptedModel.words_in(audio)]
    heard = [w.removesuffix("s").removesuffix("?") for w in committed_words(events)]
    assert set(heard) == set(spoken)


def test_a_long_feed_is_decoded_once():
    audio, _ = script(30, seed=7)
    model = ScriptedModel()
    recognizer = ChunkedRecognizer(model, INFO)
    speech = np.flatnonzero(np.abs(audio) > 0)[0]
    recognizer.feed(audio[: speech + RATE])  # a second of speech: a step is due
    before = len(model.windows)
    recognizer.feed(audio[speech + RATE : speech + 5 * RATE])  # 4 s that waited for a slow decode
    assert before >= 1 and len(model.windows) == before + 1


class SlowScriptedModel(ScriptedModel):
    """Each decode costs 0.3 s plus 0.15 s per second of window on a fake clock: at one
    decode per 1 s step with a ~10 s window that is 1.8× slower than real time."""

    def __init__(self, clock) -> None:
        super().__init__()
        self.clock = clock

    def decode(self, audio, prefix=(), draft=()):
        self.clock.now += 0.3 + 0.15 * len(audio) / RATE
        return super().decode(audio, prefix, draft)


def test_a_model_slower_than_real_time_keeps_pace_with_longer_steps(monkeypatch):
    """Replayed live (the worker feeds everything that arrived while the model decoded): the
    steps stretch, so captions trail by a bounded delay instead of falling ever further
    behind, and every word is still committed once, in order."""
    import engine.bench as bench

    class Clock:
        now = 0.0

    clock = Clock()
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock.now)
    audio, _ = script(300, seed=8)
    model = SlowScriptedModel(clock)
    recognizer = ChunkedRecognizer(model, INFO)
    events = []
    original_feed = recognizer.feed
    recognizer.feed = lambda samples: events.extend(original_feed(samples)) or []
    _, lag_ms = bench.replay_live(recognizer, audio)
    events += recognizer.flush()
    assert max(lag_ms[len(lag_ms) // 2 :]) < 5000.0  # at most a couple of decodes behind
    assert max(model.windows) <= 20.0
    spoken = sorted({w for w, _, _ in ScriptedModel.words_in(audio)})
    numbers = [w.removeprefix("w").rstrip("s?") for w in committed_words(events)]
    assert numbers == [str(k) for k in spoken]
