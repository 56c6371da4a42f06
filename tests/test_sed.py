"""Speech encoder-decoder models against transformers' SpeechEncoderDecoderModel.

Three tiny random models saved in the Hub layout (tests/sed_fixtures.py): wav2vec2 (stable
layer norm, adapter) + mBART-50, wav2vec2 (group norm, post-norm) + BART with a width
projection, and HuBERT + BERT. Ours must give the same encoder states, the same greedy and
beam tokens as transformers' generate(), the same text as its tokenizer, and token times
from the same cross-attention as transformers' forward pass.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

from engine.errors import ModelError
from engine.events import Commit
from engine.models import bart, kernels
from engine.models.alignment import monotonic_path
from engine.models.kernels import native_bfloat16
from engine.models.speech_encoder_decoder import load_model
from engine.models.text_tokenizer import TextTokenizer
from engine.recognizer import LoadOptions, load_recognizer
from tests import sed_fixtures as fx

KINDS = ("mbart", "bart", "bert")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """kind → (folder, reference model, reference tokenizer, reference feature extractor)."""
    base = tmp_path_factory.mktemp("sed")
    built = {}
    for kind in KINDS:
        folder = fx.build(kind, base / kind)
        built[kind] = (folder, *fx.reference(folder))
    return built


def _ours(folder: Path, kind: str, **options):
    target = fx.TARGET_LANG if kind == "mbart" else None
    options = {"dtype": "float32"} | options  # the parity tests compare float32
    model, info = load_model(folder, str(folder), LoadOptions(target_lang=target, **options))
    return model, info


def _reference_kwargs(kind: str, tokenizer) -> dict:
    if kind != "mbart":
        return {}
    return {"forced_bos_token_id": tokenizer.convert_tokens_to_ids(fx.TARGET_CODE)}


def _inputs(extractor, audio: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(extractor(audio, sampling_rate=fx.SAMPLE_RATE).input_values[0])[None]


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_hidden_states_match(tiny, kind: str) -> None:
    folder, ref, _, extractor = tiny[kind]
    ours, _ = _ours(folder, kind)
    audio = fx.clip(1.0, seed=1)
    with torch.inference_mode():
        expected = ref.encoder(_inputs(extractor, audio)).last_hidden_state
        got = ours.model.encoder(ours.features(audio))
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("beams", [1, 3])
def test_generated_tokens_and_text_match(tiny, kind: str, beams: int) -> None:
    folder, ref, tokenizer, extractor = tiny[kind]
    ours, _ = _ours(folder, kind, beams=beams)
    audio = fx.clip(1.0)
    with torch.inference_mode():
        expected = ref.generate(
            _inputs(extractor, audio), num_beams=beams, **_reference_kwargs(kind, tokenizer)
        )[0].tolist()
    assert ours.generate_ids(audio) == expected
    text_ids = ours.decode(audio).ids
    assert len(set(text_ids)) >= 3, "the tiny model should say something varied"
    assert ours.text(text_ids) == tokenizer.decode(expected, skip_special_tokens=True)
    if kind == "mbart":
        assert expected[1] == tokenizer.convert_tokens_to_ids(fx.TARGET_CODE)


@pytest.mark.parametrize("kind", ["mbart", "bert"])
def test_forced_prefix_matches_reference_prompt(tiny, kind: str) -> None:
    """A committed prefix is forced after the start tokens, as a decoder prompt would be."""
    folder, ref, tokenizer, extractor = tiny[kind]
    ours, _ = _ours(folder, kind, beams=2)
    audio = fx.clip(1.0, seed=2)
    full = ours.generate_ids(audio)
    start = full[:2] if kind == "mbart" else full[:1]
    prefix = [i for i in full[len(start) :] if i not in ours.specials][:3]
    with torch.inference_mode():
        expected = ref.generate(
            _inputs(extractor, audio),
            decoder_input_ids=torch.tensor([start + prefix]),
            num_beams=2,
        )[0].tolist()
    assert ours.generate_ids(audio, prefix) == expected
    assert ours.decode(audio, prefix).ids[:3] == prefix


@pytest.mark.parametrize("kind", KINDS)
def test_a_draft_takes_fewer_decoder_steps_and_keeps_the_tokens(tiny, kind: str) -> None:
    """Live decodes pass the previous window's text as a draft; greedy checks it several
    tokens per step. With or without a prefix, right or wrong, the hypothesis is the same."""
    folder = tiny[kind][0]
    ours, _ = _ours(folder, kind, beams=1)
    ours.generation = replace(ours.generation, max_length=24, min_length=20)  # long texts
    steps = []
    step = ours.model.decoder.step
    ours.model.decoder.step = lambda *args, **kwargs: steps.append(1) or step(*args, **kwargs)
    audio = fx.clip(1.5, seed=4)
    for prefix_length in (0, 3):
        plain = ours.decode(audio, ours.decode(audio).ids[:prefix_length])
        prefix, text = plain.ids[:prefix_length], plain.ids[prefix_length:]
        assert len(text) >= 6
        counts = {}
        for name, draft in {
            "none": [],
            "right": text,
            "wrong from the 3rd": text[:2] + [t + 1 for t in text[2:]],
        }.items():
            steps.clear()
            assert ours.decode(audio, prefix, draft) == plain, (prefix_length, name)
            counts[name] = len(steps)
        if kind == "bert":  # its random decoder emits start and pad tokens inside the text,
            continue  # which a hypothesis leaves out: no draft lines up, the search is plain
        assert counts["right"] < counts["wrong from the 3rd"] < counts["none"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("forced", [0, 3])
def test_token_times_follow_the_reference_cross_attention(tiny, kind: str, forced: int) -> None:
    """Token end times come from cross-attention averaged over layers and heads in one
    teacher-forced pass over the generated sequence (forced prefix included): ours is
    transformers' forward pass's, so is the monotonic token → frame path, and each token
    ends where its frame does, the frames splitting the window evenly."""
    folder, ref, _, extractor = tiny[kind]
    ours, _ = _ours(folder, kind)
    audio = fx.clip(1.3, seed=5)
    prefix = ours.decode(audio).ids[:forced]
    sequence = ours.generate_ids(audio, prefix)
    eager = copy.deepcopy(ref)
    eager.set_attn_implementation("eager")  # the only one that returns attention weights
    tokens = torch.tensor([sequence])
    with torch.inference_mode():
        attentions = eager(
            _inputs(extractor, audio), decoder_input_ids=tokens, output_attentions=True
        ).cross_attentions
        expected = torch.stack(attentions).mean(dim=(0, 2))[0]  # [L, 1, H, T, S] → [T, S]
        got = bart.cross_attention(ours.model.decoder, tokens, ours.cross_kv(audio))
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4

    rows = ours.text_rows(sequence)
    frames = monotonic_path(np.log(expected[rows].numpy() + 1e-6))
    assert monotonic_path(np.log(got[rows].numpy() + 1e-6)).tolist() == frames.tolist()
    assert len(set(frames.tolist())) >= 2, "the path should move through the window"
    hypothesis = ours.decode(audio, prefix)
    assert hypothesis.ids == [sequence[row] for row in rows]
    assert hypothesis.ids[:forced] == prefix
    duration = len(audio) / fx.SAMPLE_RATE
    seconds_per_frame = duration / expected.shape[1]
    ends = [min(duration, (f + 1) * seconds_per_frame) for f in frames]
    assert hypothesis.times == pytest.approx(ends)
    assert hypothesis.times == sorted(hypothesis.times)
    assert all(0 < t <= duration for t in hypothesis.times)

    short = audio[:100]  # no encoder frame: the prefix ends with the window
    assert ours.decode(short, prefix).times == [len(short) / fx.SAMPLE_RATE] * forced


def test_padded_batch_encoder_matches_attention_mask(tiny) -> None:
    """Right-padded rows give the reference's states when it is given the attention mask."""
    folder, ref, _, extractor = tiny["mbart"]
    ours, _ = _ours(folder, "mbart")
    clips = [fx.clip(1.0, seed=3), fx.clip(0.6, seed=4)]
    batch = extractor(clips, sampling_rate=fx.SAMPLE_RATE, padding=True, return_tensors="pt")
    lengths = torch.tensor([len(c) for c in clips])
    with torch.inference_mode():
        expected = ref.encoder(
            batch.input_values, attention_mask=batch.attention_mask
        ).last_hidden_state
        got = ours.model.encoder(batch.input_values, lengths)
    short = ours.model.encoder_config.output_frames(len(clips[1]))
    assert (got[0] - expected[0]).abs().max().item() <= 1e-4
    assert (got[1, :short] - expected[1, :short]).abs().max().item() <= 1e-4


def test_sentencepiece_tokenizer_follows_mbart50_ids(tiny, tmp_path: Path) -> None:
    """Without tokenizer.json the sentencepiece model gives mBART-50's ids and codes."""
    folder, _, tokenizer, _ = tiny["mbart"]
    only_spm = tmp_path / "spm"
    only_spm.mkdir()
    shutil.copy(folder / "sentencepiece.bpe.model", only_spm)
    ours = TextTokenizer(only_spm)
    assert ours.language_ids == tokenizer.lang_code_to_id
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids = rng.integers(0, len(tokenizer), size=12).tolist()
        assert ours.decode(ids) == tokenizer.decode(ids, skip_special_tokens=True)
    sentence = tokenizer(fx.TEXT[:60]).input_ids
    assert ours.decode(sentence) == tokenizer.decode(sentence, skip_special_tokens=True)


@pytest.mark.parametrize("kind", ["bart", "bert"])
def test_tokenizer_json_decode_matches(tiny, kind: str) -> None:
    folder, _, tokenizer, _ = tiny[kind]
    ours = TextTokenizer(folder)
    sentence = tokenizer(fx.TEXT[:80]).input_ids
    assert sentence and ours.decode(sentence) == tokenizer.decode(
        sentence, skip_special_tokens=True
    )


def test_target_language_is_validated(tiny) -> None:
    folder = tiny["mbart"][0]
    with pytest.raises(ModelError) as wrong:
        load_model(folder, "tiny", LoadOptions(target_lang="xx"))
    assert "'xx'" in wrong.value.message and "de, " in wrong.value.hint
    with pytest.raises(ModelError) as missing:
        load_model(folder, "tiny", LoadOptions())
    assert "de" in missing.value.hint
    _, info = load_model(folder, "tiny", LoadOptions(target_lang="de_DE"))
    assert info.language == "de" and info.task == "translate" and "ja" in info.languages
    with pytest.raises(ModelError):
        load_model(tiny["bart"][0], "tiny", LoadOptions(target_lang="de"))


def test_known_model_uses_its_model_card_language_table(tiny, monkeypatch) -> None:
    """en-to-15 maps its 15 targets (ca and cy included) to the tokens it was trained with."""
    from engine.models import speech_encoder_decoder as sed

    folder = tiny["mbart"][0]
    table = {"de": 63, "cy": 67}
    monkeypatch.setitem(sed.KNOWN_TARGETS, "some/en-to-2", table)
    model, info = load_model(folder, "some/en-to-2", LoadOptions(target_lang="cy"))
    assert info.languages == ("de", "cy") and model.language_id == 67
    with pytest.raises(ModelError) as wrong:
        load_model(folder, "some/en-to-2", LoadOptions(target_lang="fr"))
    assert wrong.value.hint == "Choose one of: cy, de."
    en_to_15 = sed.KNOWN_TARGETS["facebook/wav2vec2-xls-r-300m-en-to-15"]
    assert len(en_to_15) == 15 and en_to_15["de"] == 250003 and en_to_15["ja"] == 250012
    cached = Path("/hub/models--facebook--wav2vec2-xls-r-300m-en-to-15/snapshots/0123abc")
    assert sed._repo_id(cached, str(cached)) == "facebook/wav2vec2-xls-r-300m-en-to-15"


def _reference_text(tiny, audio: np.ndarray) -> str:
    folder, ref, tokenizer, extractor = tiny["mbart"]
    with torch.inference_mode():
        ids = ref.generate(_inputs(extractor, audio), **_reference_kwargs("mbart", tokenizer))
    return tokenizer.decode(ids[0], skip_special_tokens=True)


def test_offline_recognizer_gives_reference_text(tiny) -> None:
    folder = tiny["mbart"][0]
    audio = fx.clip(1.0)
    options = LoadOptions(target_lang=fx.TARGET_LANG, offline=True)
    recognizer = load_recognizer(str(folder), options)
    events = recognizer.feed(audio) + recognizer.flush()
    text = " ".join(e.text for e in events if isinstance(e, Commit))
    assert text == _reference_text(tiny, audio).strip()


@pytest.mark.skipif(not (ROOT / "main.py").exists(), reason="main.py transcribe not written yet")
def test_cli_transcribe_prints_reference(tiny, tmp_path: Path) -> None:
    folder = tiny["mbart"][0]
    audio = fx.clip(1.0)
    wav = tmp_path / "clip.wav"
    soundfile.write(wav, audio, fx.SAMPLE_RATE, subtype="FLOAT")
    command = [sys.executable, "main.py", "transcribe", str(wav), "--model", str(folder)]
    command += ["--offline", "--target-lang", fx.TARGET_LANG]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == _reference_text(tiny, audio).strip()


def test_int8_decoder_keeps_reference_tokens(tiny) -> None:
    """Weight-only int8 decoder Linears (BERT's widths fit the kernel's 16-wide blocks), the
    output layer on fbgemm's kernel where PyTorch has it."""
    from engine.models.kernels import Int8Linear

    folder, ref, _, extractor = tiny["bert"]
    ours, info = _ours(folder, "bert", dtype="int8")
    assert info.dtype == "int8"
    assert sum(isinstance(m, Int8Linear) for m in ours.model.decoder.modules()) >= 10
    if kernels.fbgemm_int8():
        assert isinstance(ours.model.decoder.lm_head, kernels.PackedInt8Linear)
    else:  # fbgemm inexact here: the output layer is on the int8-weight kernel too
        assert isinstance(ours.model.decoder.lm_head, Int8Linear)
    audio = fx.clip(1.0)
    with torch.inference_mode():
        expected = ref.generate(_inputs(extractor, audio))[0].tolist()
    got = ours.generate_ids(audio)
    agree = sum(a == b for a, b in zip(got, expected, strict=False)) / len(expected)
    assert agree >= 0.8


@pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no native bfloat16")
def test_int8_mode_runs_the_encoder_in_bfloat16_as_the_reference_would(tiny) -> None:
    """int8 mode's bfloat16 encoder stays within rounding of transformers' own encoder in
    bfloat16 (the tiny random models amplify rounding: that one is itself 17% off its
    float32), and the whole decode runs on its states."""
    folder, ref, tokenizer, extractor = tiny["mbart"]
    ours, _ = _ours(folder, "mbart", dtype="int8")
    assert ours.model.encoder.dtype == torch.bfloat16
    audio = fx.clip(1.0, seed=1)
    with torch.inference_mode():
        reference = copy.deepcopy(ref.encoder).to(torch.bfloat16)
        expected = reference(_inputs(extractor, audio).bfloat16()).last_hidden_state.float()
        got = ours.model.encode(ours.features(audio))
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert ((got - expected).norm() / expected.norm()).item() <= 0.03
    ids = ours.generate_ids(audio)
    language = tokenizer.convert_tokens_to_ids(fx.TARGET_CODE)
    assert ids[:2] == [2, language] and len(set(ids)) >= 4


def test_float32_greedy_uses_the_screened_head_and_beams_exact_logits(tiny) -> None:
    """float32 on a CPU reads the output layer through ScreenedHead (the greedy parity tests
    above then cover it for all three decoders); beams get float32 logits."""
    from engine.models.generation import Screened
    from engine.models.kernels import ScreenedHead

    if not kernels.fbgemm_int8():
        pytest.skip("fbgemm's int8 sums are not exact on this CPU: the screen is not used")
    for decoder in ("mbart", "bart"):
        ours, _ = _ours(tiny[decoder][0], decoder)
        assert isinstance(ours.model.decoder.lm_head, ScreenedHead)
    ours, _ = _ours(tiny["bert"][0], "bert")
    head = ours.model.decoder.lm_head
    assert isinstance(head, ScreenedHead)
    x = torch.randn(2, 1, head.weight.shape[1])
    with torch.inference_mode():
        assert isinstance(head(x[:1]), Screened)
        assert torch.equal(head(x), F.linear(x, head.weight, head.bias))
    int8, _ = _ours(tiny["bert"][0], "bert", dtype="int8")
    assert not isinstance(int8.model.decoder.lm_head, ScreenedHead)


def _float_head(decoder: torch.nn.Module) -> kernels.RowLinear:
    """The float32 output layer, screened or not (the screen needs fbgemm's exact sums)."""
    return getattr(decoder.lm_head, "linear", decoder.lm_head)


def test_beam_steps_read_weights_packed_for_their_number(tiny, monkeypatch) -> None:
    """Loaded for 3 beams in float32, every decoder matrix (output layer included) keeps its
    weights in MKL's layout for 3 rows: beam steps get the float32 products (bias included)
    from that copy, any other number of rows from the plain weights. Greedy loads and a
    machine short of memory keep the plain weights only."""
    ours, _ = _ours(tiny["bert"][0], "bert", beams=3)
    decoder = ours.model.decoder
    if not kernels.BeamRowsWeight.available(decoder.lm_head.weight):
        pytest.skip("this PyTorch has no MKL")
    linears = [m for m in decoder.modules() if isinstance(m, kernels.RowLinear)]
    head = _float_head(decoder)
    assert head in linears and len(linears) > 5
    assert all(m.beam_rows is not None and m.beam_rows.rows == 3 for m in linears)
    torch.manual_seed(2)
    for linear in (head, linears[0]):
        for rows in (3, 2, 4):
            x = torch.randn(rows, 1, linear.in_features)
            assert linear.beam_rows.fits(x) == (rows == 3)
            with torch.inference_mode():
                y = linear(x)
            expected = F.linear(x, linear.weight, linear.bias)
            torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    greedy, _ = _ours(tiny["bert"][0], "bert")
    assert _float_head(greedy.model.decoder).beam_rows is None
    monkeypatch.setattr(kernels, "available_memory", lambda: 2**30)
    short, _ = _ours(tiny["bert"][0], "bert", beams=3)
    assert _float_head(short.model.decoder).beam_rows is None


def test_forced_steps_skip_the_output_layer(tiny) -> None:
    """After the start token (forced language) and one short of max_length (forced end),
    the output layer is not run; the tokens stay the reference's (tests above)."""
    folder = tiny["mbart"][0]
    ours, _ = _ours(folder, "mbart")
    config = ours.generation
    assert config.forced_bos_token_id is not None and config.forced_eos_token_id is not None
    calls = []
    ours.model.decoder.lm_head.register_forward_hook(lambda *_: calls.append(1))
    ids = ours.generate_ids(fx.clip(1.0))
    forced = 1 + (len(ids) == config.max_length)
    assert len(calls) == len(ids) - 1 - forced


def test_auto_precision_is_int8_live_and_float32_for_files_on_a_cpu(tiny) -> None:
    """Live captions must keep up (int8 is ~2x faster on a CPU); files get the reference's
    float32. An explicit choice is kept."""
    folder = tiny["mbart"][0]
    live = LoadOptions(target_lang=fx.TARGET_LANG)
    _, info = load_model(folder, "tiny", live)
    assert info.dtype == "int8"
    _, info = load_model(folder, "tiny", LoadOptions(target_lang=fx.TARGET_LANG, offline=True))
    assert info.dtype == "float32"
    _, info = load_model(folder, "tiny", LoadOptions(target_lang=fx.TARGET_LANG, dtype="bfloat16"))
    assert info.dtype == "bfloat16"


def test_without_exact_fbgemm_float32_greedy_reads_the_plain_output_layer(
    tiny, monkeypatch
) -> None:
    """Where fbgemm's sums are not exact, float32 keeps the float32 output layer (the exact
    argmax without a screen) and int8 puts it on the int8-weight kernel; tokens stay the
    reference's."""
    from engine.models.generation import Screened
    from engine.models.kernels import Int8Linear, ScreenedHead

    monkeypatch.setattr(kernels, "fbgemm_int8", lambda: False)
    folder, ref, tokenizer, extractor = tiny["mbart"]
    ours, _ = _ours(folder, "mbart")
    head = ours.model.decoder.lm_head
    assert isinstance(head, kernels.RowLinear) and not isinstance(head, ScreenedHead)
    x = torch.randn(1, 1, head.weight.shape[1])
    with torch.inference_mode():
        logits = head(x)
    assert not isinstance(logits, Screened) and torch.equal(logits, F.linear(x, head.weight))
    audio = fx.clip(1.0)
    with torch.inference_mode():
        expected = ref.generate(_inputs(extractor, audio), **_reference_kwargs("mbart", tokenizer))
    assert ours.generate_ids(audio) == expected[0].tolist()
    int8, _ = _ours(tiny["bert"][0], "bert", dtype="int8")
    assert isinstance(int8.model.decoder.lm_head, Int8Linear)
