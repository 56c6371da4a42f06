"""Kyutai STT's real weights on real speech, for every weight form: float32, bfloat16, int8
and int4 each transcribe an English and a French clip within a word error rate of their
transcripts, so whoever has the weights checks quantization on real speech in one command:

    LIVECAP_SPEECH_CLIPS=/path/to/clips .venv/bin/python -m pytest -q tests/test_real_checkpoints.py

Runs only where the checkpoint is in the local Hugging Face cache (nothing is downloaded).
The clips come from outside the repository: no speech recording with a transcript under a
licence that allows shipping it could be found in the package registries this project draws
on, so LIVECAP_SPEECH_CLIPS names a folder holding `en.wav` + `en.txt` and `fr.wav` + `fr.txt`
(any rate soundfile reads, mono or the first channel; the .txt holds the words spoken), e.g.
a few seconds of LibriSpeech (CC BY 4.0) and of Common Voice French (CC0).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from engine.hub import cached_snapshot
from engine.recognizer import LoadOptions

REPO = "kyutai/stt-1b-en_fr-trfs"
# Word error rate bounds on a few-second clip: float forms transcribe it nearly exactly;
# int8 may change a word; int4's accuracy is what this test measures, so it gets more room.
MAX_WER = {"float32": 0.15, "bfloat16": 0.15, "int8": 0.2, "int4": 0.35}

snapshot = cached_snapshot(REPO)
clips = Path(os.environ["LIVECAP_SPEECH_CLIPS"]) if "LIVECAP_SPEECH_CLIPS" in os.environ else None
pytestmark = [
    pytest.mark.skipif(snapshot is None, reason=f"{REPO} is not in the local Hugging Face cache"),
    pytest.mark.skipif(
        clips is None,
        reason="LIVECAP_SPEECH_CLIPS is not set: it names a folder with en.wav/en.txt and "
        "fr.wav/fr.txt (real speech and its transcript; none can ship in the repository)",
    ),
]


def words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """Edits (substitutions, insertions, deletions) over the reference's words."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1] / max(1, len(reference))


def read_clip(path: Path, rate: int) -> np.ndarray:
    import soundfile

    from engine.audio.resample import StreamResampler

    samples, clip_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    resampler = StreamResampler(int(clip_rate), rate)
    return np.concatenate((resampler.process(samples[:, 0]), resampler.flush()))


@pytest.fixture(scope="module", params=["float32", "bfloat16", "int8", "int4"])
def recognizer(request):
    from engine.streaming.kyutai_stream import load_recognizer

    loaded = load_recognizer(snapshot, REPO, LoadOptions(device="cpu", dtype=request.param))
    loaded.pause_flush = False  # a file's words as the model gives them
    return loaded


@pytest.mark.parametrize("language", ["en", "fr"])
def test_real_speech_within_word_error_rate(recognizer, language):
    from engine.events import Commit

    audio = read_clip(clips / f"{language}.wav", recognizer.sample_rate)
    expected = words((clips / f"{language}.txt").read_text(encoding="utf-8"))
    events = recognizer.feed(audio) + recognizer.flush()
    heard = words(" ".join(e.text for e in events if isinstance(e, Commit)))
    rate = word_error_rate(expected, heard)
    assert rate <= MAX_WER[recognizer.info.dtype], (rate, " ".join(heard))
