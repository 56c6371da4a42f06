"""Speech2Text against transformers on tiny random checkpoints saved in the Hub layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import ModelError
from engine.models.speech2text import FilterbankFeatures, load_model
from engine.recognizer import LoadOptions
from tests import s2t_fixtures as fixtures
from tests.s2t_fixtures import one_thread, speech_like

transformers = pytest.importorskip("transformers")
RATE = 16000


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def tiny() -> dict[str, Path]:
    return {kind: fixtures.tiny(kind) for kind in ("asr", "st")}


@pytest.fixture(scope="session")
def reference(tiny):
    """kind → (transformers model, tokenizer), loaded once."""
    out = {}
    for kind, folder in tiny.items():
        model = transformers.Speech2TextForConditionalGeneration.from_pretrained(folder).eval()
        out[kind] = (model, transformers.Speech2TextTokenizer.from_pretrained(folder))
    return out


def reference_features(audio: np.ndarray, normalise: bool = True) -> np.ndarray:
    extractor = transformers.Speech2TextFeatureExtractor(do_ceptral_normalize=normalise)
    return extractor(audio, sampling_rate=RATE, return_tensors="np").input_features[0]


def options(kind: str, **kw) -> LoadOptions:
    return LoadOptions(target_lang="de" if kind == "st" else None, **kw)


# -- features ---------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.05, 0.77, 3.0, 9.31])
@pytest.mark.parametrize("loudness", [1.0, 0.001])  # speech-like, and near silence
def test_features_match_reference(seconds, loudness):
    audio = speech_like(seconds, seed=int(seconds * 100)) * loudness
    ours = FilterbankFeatures()(audio).numpy()
    ref = reference_features(audio)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= 1e-3


@pytest.mark.parametrize("samples", [400, 1000, 16000, 48123])
def test_digital_silence_gives_zeros_not_nan(samples):
    silence = np.zeros(samples, np.float32)
    features = FilterbankFeatures()
    # before normalisation the filterbank itself matches (log of the energy floor) ...
    raw = features.log_mel(silence).numpy()
    assert np.abs(raw - reference_features(silence, normalise=False)).max() <= 1e-3
    # ... and normalisation leaves silence at zero where the reference divides 0 by 0
    ours = features(silence).numpy()
    assert np.isfinite(ours).all() and np.abs(ours).max() < 1e-6


def test_too_short_audio_has_no_frames():
    assert FilterbankFeatures()(np.zeros(399, np.float32)).shape == (0, 80)


# -- generation -------------------------------------------------------------------------

CLIPS = [(0.7, 0), (2.3, 1)]


@pytest.mark.parametrize("beams", [1, 4])
@pytest.mark.parametrize("kind", ["asr", "st"])
def test_tokens_and_text_match_generate(tiny, reference, kind, beams):
    ref_model, ref_tokenizer = reference[kind]
    ours, info = load_model(tiny[kind], "tiny", options(kind, beams=beams))
    generated = []
    for seconds, seed in CLIPS:
        audio = speech_like(seconds, seed)
        feats = torch.from_numpy(reference_features(audio))[None]
        with torch.no_grad():
            expected = ref_model.generate(feats, num_beams=beams)[0].tolist()
        assert ours.generate_ids(audio) == expected
        hypothesis = ours.decode(audio)
        assert ours.text(hypothesis.ids) == ref_tokenizer.decode(expected, skip_special_tokens=True)
        assert len(hypothesis.times) == len(hypothesis.ids)
        assert hypothesis.times == sorted(hypothesis.times)
        assert all(0 < t <= seconds for t in hypothesis.times)
        generated += expected[1:]
    # the tiny model says something, and not always the same thing
    assert len(set(generated) - {2}) >= 4
    if kind == "st":
        assert info.task == "translate" and info.language == "de"
        assert generated.count(ref_tokenizer.convert_tokens_to_ids("<lang:de>")) >= len(CLIPS)


def test_forced_prefix_matches_generate_with_decoder_input_ids(tiny, reference):
    ref_model, ref_tokenizer = reference["st"]
    ours, _ = load_model(tiny["st"], "tiny", options("st", beams=3))
    prefix = ref_tokenizer("the quick brown", add_special_tokens=False).input_ids
    audio = speech_like(2.0, seed=7)
    start = [2, ref_tokenizer.convert_tokens_to_ids("<lang:de>"), *prefix]
    feats = torch.from_numpy(reference_features(audio))[None]
    with torch.no_grad():
        expected = ref_model.generate(
            feats,
            decoder_input_ids=torch.tensor([start]),
            num_beams=3,
            forced_bos_token_id=None,
            max_length=24 + len(prefix),  # the checkpoint's 24, not counting the forced prefix
        )[0].tolist()
    assert ours.generate_ids(audio, prefix) == expected
    assert len(expected) > len(start) + 2


# -- loading ----------------------------------------------------------------------------


def test_translation_model_needs_a_valid_target_language(tiny):
    with pytest.raises(ModelError, match="target language") as missing:
        load_model(tiny["st"], "tiny-st", LoadOptions())
    assert "de" in missing.value.hint and "fr" in missing.value.hint
    with pytest.raises(ModelError, match="'xx'") as wrong:
        load_model(tiny["st"], "tiny-st", LoadOptions(target_lang="xx"))
    assert "de, es, fr, it, nl, pt, ro, ru" in wrong.value.hint
    _, info = load_model(tiny["asr"], "tiny-asr", LoadOptions())
    assert info.task == "transcribe" and info.family == "speech2text"


def test_missing_files_are_model_errors(tiny, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(tiny["asr"], folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="safetensors"):
        load_model(folder, "broken", LoadOptions())
    config = json.loads((folder / "config.json").read_text())
    config["activation_function"] = "gelu"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="gelu"):
        load_model(folder, "broken", LoadOptions())
