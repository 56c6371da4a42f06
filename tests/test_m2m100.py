"""M2M100 against transformers' generate() on a tiny random model, and NLLB's tokenizer.json."""

from __future__ import annotations

import shutil

import pytest
import torch

from engine.errors import ModelError
from engine.models import loading, m2m100
from engine.models.contract import LoadOptions
from engine.models.text_encoder import build_network
from engine.models.text_tokenizer import M2M100_CODES
from tests.s2t_fixtures import one_thread
from tests.translation_fixtures import (
    SENTENCES,
    load_layout,
    m2m100_tokenizer,
    saved_layout,
    tiny,
)


@pytest.fixture(scope="module")
def folder():
    return tiny("m2m100")


@pytest.fixture(scope="module")
def model(folder):
    from transformers import M2M100ForConditionalGeneration

    return M2M100ForConditionalGeneration.from_pretrained(folder).eval()


@pytest.mark.parametrize(("beams", "source", "target"), [(1, "en", "fr"), (5, "fr", "de")])
def test_ids_and_text_match_generate(folder, model, beams, source, target):
    tokenizer = m2m100_tokenizer(folder, source, target)
    options = LoadOptions(beams=beams, target_lang=target, dtype="float32")
    ours = m2m100.load_model(folder, "tiny", options)
    assert ours.tokenizer.language_ids == {
        code: tokenizer.get_lang_id(code) for code in M2M100_CODES
    }
    # transformers' decode keeps language tokens, and shows fairseq's made-up words (after
    # them) as <unk>: a translation shows neither, only the vocabulary's pieces
    pieces = set(range(len(tokenizer.encoder))) - set(tokenizer.all_special_ids)
    with one_thread():
        for sentence in SENTENCES:
            ids = tokenizer(sentence, return_tensors="pt").input_ids
            assert ours.tokenizer.encode(sentence, source) == ids[0].tolist()
            forced = tokenizer.get_lang_id(target)
            expected = model.generate(ids, num_beams=beams, forced_bos_token_id=forced)
            expected = expected[0].tolist()
            got = ours.translate(sentence, source)
            assert list(got.ids) == expected[1:]
            assert got.ids[0] == forced
            assert got.text == tokenizer.decode([i for i in expected if i in pieces])


def test_a_target_language_is_required_and_checked(folder):
    with pytest.raises(ModelError, match="into many languages"):
        m2m100.load_model(folder, "tiny", LoadOptions())
    with pytest.raises(ModelError, match="cannot translate into 'xx'"):
        m2m100.load_model(folder, "tiny", LoadOptions(target_lang="xx"))


def test_nllb_tokenizer_json(folder, tmp_path):
    """NLLB's tokenizer.json: its language tokens by NLLB code and by ISO 639-1 code, the
    encoder's input as transformers' NLLB tokenizer builds it."""
    from transformers import NllbTokenizer

    codes = ["eng_Latn", "fra_Latn", "deu_Latn"]
    reference = NllbTokenizer(
        vocab_file=str(folder / "sentencepiece.bpe.model"),
        src_lang="eng_Latn",
        tgt_lang="fra_Latn",
        additional_special_tokens=codes,
    )
    copy = tmp_path / "nllb"
    copy.mkdir()
    reference.save_pretrained(copy)
    assert (copy / "tokenizer.json").exists()
    ours = m2m100.open_tokenizer(copy)
    assert isinstance(ours, m2m100.NllbTokenizer)
    assert {"en", "fr", "de", "eng_Latn"} <= set(ours.sources)
    sentence = SENTENCES[1]
    assert ours.encode(sentence, "en") == reference(sentence).input_ids
    assert ours.encode(sentence, "eng_Latn") == reference(sentence).input_ids
    assert ours.target_token("fr") == reference.convert_tokens_to_ids("fra_Latn")
    ids = reference(sentence).input_ids
    assert ours.decode(ids) == reference.decode(ids, skip_special_tokens=True)


def test_missing_tokenizer_is_a_model_error(folder, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(folder, copy)
    (copy / "sentencepiece.bpe.model").unlink()
    with pytest.raises(ModelError, match="has no tokenizer"):
        m2m100.load_model(copy, "tiny", LoadOptions(target_lang="fr"))


def test_full_size_config_reads_exactly_what_save_pretrained_writes(tmp_path):
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    config = M2M100Config(  # facebook/m2m100_418M
        vocab_size=128112, d_model=1024, encoder_layers=12, decoder_layers=12,
        encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
        decoder_ffn_dim=4096, max_position_embeddings=1024,
    )  # fmt: skip
    with torch.device("meta"):
        layout = saved_layout(M2M100ForConditionalGeneration(config))
        config.save_pretrained(tmp_path)
        values = loading.read_config(tmp_path)
        ours = build_network(
            values, tmp_path, True, "relu", True, sinusoidal_positions=True, pad_token_id=1
        )
    load_layout(ours, layout, tmp_path)
    assert len(ours.layers) == 12
    with pytest.raises(ModelError, match="unexpected tensor"):
        load_layout(ours, {**layout, "final_logits_bias": (1, 128112)}, tmp_path)
