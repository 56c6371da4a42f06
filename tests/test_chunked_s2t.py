"""The chunked policy and the offline path driven by a tiny Speech2Text checkpoint, with
transformers' generate() as the oracle for what a pause, a flush or a file must commit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.events import Commit, EndOfTurn, Partial
from engine.models.speech2text import load_model
from engine.recognizer import LoadOptions
from engine.streaming.chunked import ChunkedRecognizer, load_speech2text
from tests.s2t_fixtures import one_thread, speech_like, tiny

transformers = pytest.importorskip("transformers")
RATE = 16000


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def tiny_st():
    return tiny("st")


@pytest.fixture(scope="session")
def oracle(tiny_st):
    """audio → the text transformers' generate() decodes from it (checkpoint settings)."""
    model = transformers.Speech2TextForConditionalGeneration.from_pretrained(tiny_st).eval()
    tokenizer = transformers.Speech2TextTokenizer.from_pretrained(tiny_st)
    extractor = transformers.Speech2TextFeatureExtractor()

    def decode(audio: np.ndarray) -> str:
        feats = extractor(audio, sampling_rate=RATE, return_tensors="pt").input_features
        with torch.no_grad():
            ids = model.generate(feats)[0]
        return tokenizer.decode(ids, skip_special_tokens=True)

    return decode


class Recorder:
    """Wraps a SpeechSeq2Seq and keeps what each decode was asked and answered."""

    sample_rate = RATE

    def __init__(self, model) -> None:
        self.model = model
        self.calls: list[tuple[list[int], list[int], float]] = []  # prefix, ids, seconds

    def decode(self, audio: np.ndarray, prefix: Sequence[int] = (), draft: Sequence[int] = ()):
        hypothesis = self.model.decode(audio, prefix, draft)
        self.calls.append((list(prefix), list(hypothesis.ids), len(audio) / RATE))
        return hypothesis

    def text(self, ids: Sequence[int]) -> str:
        return self.model.text(ids)


def commit_text(events) -> str:
    return " ".join(e.text for e in events if isinstance(e, Commit))


def test_flush_commits_what_generate_decodes(tiny_st, oracle):
    audio = speech_like(1.6, seed=11)
    model, info = load_model(tiny_st, "tiny", LoadOptions(target_lang="de"))
    recognizer = ChunkedRecognizer(model, info, step_seconds=30.0)
    events = recognizer.feed(audio)
    assert not any(isinstance(e, Commit) for e in events)
    events = recognizer.flush()
    assert commit_text(events) == oracle(audio) != ""
    commit = next(e for e in events if isinstance(e, Commit))
    assert commit.start == 0.0 and 0.0 < commit.end <= 1.6  # the span a translation covers


def test_a_pause_commits_the_utterance(tiny_st, oracle):
    speech = speech_like(1.3, seed=12)
    audio = np.concatenate([speech, np.zeros(RATE, np.float32), speech_like(0.6, seed=13)])
    model, info = load_model(tiny_st, "tiny", LoadOptions(target_lang="de"))
    recognizer = ChunkedRecognizer(model, info, step_seconds=30.0)
    events = []
    for at in range(0, len(audio), 1600):
        events += recognizer.feed(audio[at : at + 1600])
    turns = [e for e in events if isinstance(e, EndOfTurn)]
    assert len(turns) == 1 and turns[0].time == pytest.approx(1.3, abs=0.03)
    cut = round((turns[0].time + 0.25) * RATE)
    assert commit_text(events) == oracle(audio[:cut]) != ""
    assert events.index(turns[0]) > max(i for i, e in enumerate(events) if isinstance(e, Commit))
    # the next utterance (speech again at 2.3 s) is decoded with a 0.5 s lead-in
    assert commit_text(recognizer.flush()) == oracle(audio[round(1.8 * RATE) :])


def feed_in_frames(recognizer, recorder: Recorder, audio: np.ndarray, model) -> list:
    """Feed 0.1 s at a time; check that each commit is what the last two hypotheses agreed
    on after their forced prefix (LocalAgreement-2), or a forced commit of the last one."""
    events = []
    for at in range(0, len(audio), 1600):
        new = recognizer.feed(audio[at : at + 1600])
        for commit in (e for e in new if isinstance(e, Commit)):
            (old_prefix, old_ids, _), (prefix, ids, _) = recorder.calls[-2:]
            latest = model.text(ids[len(prefix) :])
            assert latest.startswith(commit.text)
            forced = commit.text == latest  # all of it: only a forced commit takes a last word
            assert forced or commit.text in model.text(old_ids[len(old_prefix) :])
        events += new
    return events


def test_live_commits_agree_force_the_prefix_and_trim(tiny_st):
    model, info = load_model(tiny_st, "tiny", LoadOptions(target_lang="de", beams=1))
    with torch.no_grad():  # listen weakly, so that successive hypotheses mostly agree
        for layer in model.model.decoder.layers:
            layer.cross_attn.out.weight.mul_(0.1)
    # its text has no spaces ("enenen…"): run it as an unspaced language, token by token
    recorder = Recorder(model)
    recognizer = ChunkedRecognizer(
        recorder, replace(info, language="ja"), step_seconds=0.5, trim_seconds=3.0
    )
    events = feed_in_frames(recognizer, recorder, speech_like(6.0, seed=14), model)
    commits = [e for e in events if isinstance(e, Commit)]
    assert len(commits) >= 3 and all(len(c.words) == 1 for c in commits)
    assert [c.start for c in commits] == sorted(c.start for c in commits)
    for prefix, ids, _ in recorder.calls:
        assert ids[: len(prefix)] == prefix
    assert any(prefix for prefix, _, _ in recorder.calls)  # committed text was forced ...
    assert recorder.calls[-1][2] < 5.0  # ... and the window trimmed behind it


def test_live_window_stays_bounded_without_agreement(tiny_st):
    model, info = load_model(tiny_st, "tiny", LoadOptions(target_lang="de", beams=1))
    recorder = Recorder(model)
    recognizer = ChunkedRecognizer(recorder, info, step_seconds=2.0, max_buffer_seconds=8.0)
    events = feed_in_frames(recognizer, recorder, speech_like(12.0, seed=15), model)
    assert max(seconds for _, _, seconds in recorder.calls) <= 8.0
    assert any(isinstance(e, Commit) for e in events)  # forced out when the window filled
    assert not [e for e in recognizer.flush() if isinstance(e, Partial) and e.text]


def test_offline_transcribes_a_short_clip_exactly(tiny_st, oracle):
    audio = speech_like(4.2, seed=15)
    recognizer = load_speech2text(tiny_st, "tiny", LoadOptions(target_lang="de", offline=True))
    assert recognizer.info.task == "translate" and recognizer.info.language == "de"
    events = recognizer.feed(audio[: RATE * 2]) + recognizer.feed(audio[RATE * 2 :])
    assert events == []
    events = recognizer.flush()
    assert [e.text for e in events] == [oracle(audio)]
    assert events[0].start == 0.0 and events[0].end == pytest.approx(4.2)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    main = Path(__file__).resolve().parents[1] / "main.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a tiny model: one thread is fastest
    return subprocess.run(
        [sys.executable, str(main), *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_transcribe_offline_prints_the_reference_decode(tiny_st, oracle, tmp_path):
    import soundfile

    audio = speech_like(3.5, seed=16)
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, audio, RATE, subtype="FLOAT")
    done = run_cli(
        "transcribe", str(clip), "--model", str(tiny_st), "--target-lang", "de", "--offline"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == oracle(audio) + "\n"
