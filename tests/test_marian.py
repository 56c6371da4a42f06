"""MarianMT against transformers' generate() on a tiny random opus-mt-style model."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from engine.errors import ModelError
from engine.models import loading, marian
from engine.models.contract import LoadOptions
from tests.s2t_fixtures import one_thread
from tests.translation_fixtures import SENTENCES, load_layout, saved_layout, tiny


@pytest.fixture(scope="module")
def folder():
    return tiny("marian")


@pytest.fixture(scope="module")
def reference(folder):
    from transformers import MarianMTModel, MarianTokenizer

    return MarianMTModel.from_pretrained(folder).eval(), MarianTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("beams", [1, 4])
def test_ids_and_text_match_generate(folder, reference, beams):
    model, tokenizer = reference
    ours = marian.load_model(folder, "tiny", LoadOptions(beams=beams, dtype="float32"))
    assert (ours.sources, ours.info.language) == (("en",), "fr")  # from tokenizer_config.json
    with one_thread():
        for sentence in SENTENCES:
            ids = tokenizer(sentence, return_tensors="pt").input_ids
            assert ours.tokenizer.encode(sentence, "en") == ids[0].tolist()
            expected = model.generate(ids, num_beams=beams)[0].tolist()
            got = ours.translate(sentence, "en")
            assert list(got.ids) == expected[1:]
            assert got.text == tokenizer.decode(expected, skip_special_tokens=True)


def test_settings_changed_after_loading_are_the_ones_used(folder, reference):
    """A caller may change the search (the live path makes it greedy): the steps it forces,
    whose logits a decoder may skip, follow the new settings, not the loaded ones."""
    model, tokenizer = reference
    ours = marian.load_model(folder, "tiny", LoadOptions(beams=1))
    ours.generation = dataclasses.replace(ours.generation, max_length=30)  # loaded: 24
    ids = tokenizer(SENTENCES[2], return_tensors="pt").input_ids
    expected = model.generate(ids, num_beams=1, max_length=30)[0].tolist()
    assert len(expected) == 30
    assert list(ours.translate(SENTENCES[2], "en").ids) == expected[1:]


def test_a_draft_changes_nothing_but_speed(folder):
    ours = marian.load_model(folder, "tiny", LoadOptions(beams=1))
    plain = ours.translate(SENTENCES[1], "en")
    wrong_draft = [plain.ids[0], *[(i + 1) % 50 for i in plain.ids[1:]]]
    assert ours.translate(SENTENCES[1], "en", draft=plain.ids[:5]) == plain
    assert ours.translate(SENTENCES[1], "en", draft=wrong_draft) == plain


@pytest.mark.parametrize("beams", [1, 4])
def test_the_pad_token_is_banned(folder, tmp_path, beams):
    """Marian's pad is its start token: generation_config bans it, and a model that would
    write it everywhere writes the next best tokens instead, as generate() does."""
    from safetensors.torch import load_file, save_file
    from transformers import MarianMTModel

    pad = json.loads((folder / "config.json").read_text())["pad_token_id"]
    assert json.loads((folder / "generation_config.json").read_text())["bad_words_ids"] == [[pad]]
    copy = tmp_path / "pad-loving"
    shutil.copytree(folder, copy)
    tensors = load_file(copy / "model.safetensors")
    tensors["final_logits_bias"][0, pad] = 100.0
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    ours = marian.load_model(copy, "tiny", LoadOptions(beams=beams))
    got = ours.translate(SENTENCES[0], "en")
    ids = torch.tensor([ours.tokenizer.encode(SENTENCES[0], "en")])
    expected = MarianMTModel.from_pretrained(copy).eval().generate(ids, num_beams=beams)
    assert list(got.ids) == expected[0, 1:].tolist()
    assert pad not in got.ids


def test_languages_come_from_the_hub_name_without_tokenizer_config(folder, tmp_path):
    copy = tmp_path / "opus-mt-en-fr"
    shutil.copytree(folder, copy)
    (copy / "tokenizer_config.json").unlink()
    ours = marian.load_model(copy, "Helsinki-NLP/opus-mt-en-fr", LoadOptions())
    assert (ours.sources, ours.info.language) == (("en",), "fr")
    with pytest.raises(ModelError, match="which languages"):
        marian.MarianTokenizer(copy, "my-model")


def test_a_language_the_pair_lacks_is_refused(folder):
    with pytest.raises(ModelError, match="cannot translate into 'de'"):
        marian.load_model(folder, "tiny", LoadOptions(target_lang="de"))
    ours = marian.load_model(folder, "tiny", LoadOptions())
    with pytest.raises(ModelError, match="cannot translate from 'de'"):
        ours.translate("hallo", "de")


def test_missing_tokenizer_file_is_a_model_error(folder, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(folder, copy)
    (copy / "target.spm").unlink()
    with pytest.raises(ModelError, match="has no target.spm"):
        marian.load_model(copy, "tiny", LoadOptions())


def test_positions_match_transformers_table():
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    for width in (32, 33):
        theirs = MarianSinusoidalPositionalEmbedding(40, width).create_weight()
        ours = marian.MarianPositions(40, width)
        ours.fill()
        torch.testing.assert_close(ours.table, theirs, rtol=0, atol=1e-6)


def test_full_size_config_reads_exactly_what_save_pretrained_writes(tmp_path):
    from transformers import MarianConfig, MarianMTModel

    config = MarianConfig(  # Helsinki-NLP/opus-mt-en-de
        vocab_size=58101, d_model=512, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048,
        decoder_ffn_dim=2048, max_position_embeddings=512, activation_function="swish",
        scale_embedding=True, pad_token_id=58100, decoder_start_token_id=58100,
    )  # fmt: skip
    with torch.device("meta"):
        layout = saved_layout(MarianMTModel(config))
        config.save_pretrained(tmp_path)
        ours = marian.build_model(loading.read_config(tmp_path), tmp_path / "config.json")
    load_layout(ours, layout, tmp_path)
    assert ours.decoder.lm_head.weight is ours.decoder.embed_tokens.weight
    with pytest.raises(ModelError, match="missing"):
        load_layout(ours, {k: v for k, v in layout.items() if k != "final_logits_bias"}, tmp_path)
