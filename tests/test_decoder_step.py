"""decoder_step.py: a text decoder's greedy step in one C call gives the logits of the same
decoder's PyTorch layers, for every layer order and activation the families use, on the same
caches as the PyTorch steps it is mixed with; the translators use it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.models import bart, decoder_step, kernel_choice, m2m100, marian, panels
from engine.models.contract import LoadOptions
from tests import translation_fixtures

pytestmark = pytest.mark.skipif(not panels.available(), reason="the C kernels do not build here")


def _int8_decoder(activation: str, pre_norm: bool) -> bart.BartDecoder:
    torch.manual_seed(0)
    config = bart.BartDecoderConfig(
        vocab_size=300, d_model=64, decoder_layers=2, decoder_attention_heads=4,
        decoder_ffn_dim=96, max_position_embeddings=96, activation_function=activation,
        pre_norm=pre_norm, output_bias=True,
    )  # fmt: skip
    decoder = bart.BartDecoder(config, memory_width=64)
    for parameter in decoder.parameters():
        nn.init.normal_(parameter, std=0.2)
    kernel_choice.prepare_decoder(decoder.eval(), "int8", beams=1, whole_steps=True)
    return decoder


def _greedy_logits(decoder, cross, tokens: int, first: list[int]) -> list[torch.Tensor]:
    """The logits of each step of a greedy run: `first` in one step, then one token a step
    (each step's argmax fed back)."""
    state = bart.CachedDecoderState(decoder, cross, 1)
    logits = [state.step(torch.tensor([first]))[:, -1]]
    for _ in range(tokens):
        logits.append(state.step(logits[-1].argmax(-1, keepdim=True))[:, -1])
    return logits


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_new", "swish"])
@pytest.mark.parametrize("pre_norm", [False, True])
def test_a_whole_step_gives_the_layers_logits(activation: str, pre_norm: bool) -> None:
    """40 greedy steps (the self-attention cache regrown past 32 positions) in one call each
    against the decoder's own layers, from a one-token and from a three-token first step."""
    decoder = _int8_decoder(activation, pre_norm)
    fused = decoder_step.fused(decoder)
    assert isinstance(fused, decoder_step.FusedDecoder)
    with torch.inference_mode():
        cross = decoder.cross_kv(torch.randn(1, 9, 64))
        for first in ([2], [2, 17, 40]):
            ours = _greedy_logits(fused, cross, 40, first)
            theirs = _greedy_logits(decoder, cross, 40, first)
            for got, expected in zip(ours, theirs, strict=True):
                # float32 rounding (LayerNorm, attention, summation order), which may move
                # an activation's 16-bit code (steps of 2⁻¹⁵ of its run's largest) by one
                assert (got - expected).norm() <= 1e-3 * expected.norm()
                assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_a_whole_step_is_the_same_on_any_number_of_threads() -> None:
    """Each output is summed by one thread, in input order, whichever thread: the logits are
    bit for bit the same on one thread as on two."""
    decoder = _int8_decoder("swish", pre_norm=False)
    fused = decoder_step.fused(decoder)
    threads = torch.get_num_threads()
    results = []
    with torch.inference_mode():
        cross = decoder.cross_kv(torch.randn(1, 9, 64))
        for count in (1, 2):
            torch.set_num_threads(count)
            try:
                results.append(_greedy_logits(fused, cross, 12, [2]))
            finally:
                torch.set_num_threads(threads)
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)


def test_decoders_it_cannot_step_are_left_as_they_are() -> None:
    """float32 step matrices (not on the panels) keep the decoder's own steps."""
    torch.manual_seed(0)
    values = {
        "vocab_size": 300, "d_model": 32, "decoder_layers": 2, "decoder_attention_heads": 4,
        "decoder_ffn_dim": 64, "max_position_embeddings": 64,
    }  # fmt: skip
    decoder = bart.build_decoder(values, memory_width=32).eval()
    kernel_choice.prepare_decoder(decoder, "float32", beams=1, whole_steps=True)
    assert decoder_step.fused(decoder) is decoder


@pytest.mark.parametrize("family", ["marian", "m2m100"])
def test_translators_step_in_one_call_and_translate_as_their_layers_do(family: str) -> None:
    """An int8 translator of either family steps through decoder_step, and its translations
    (greedy, and checked against a draft) are those its PyTorch layers give."""
    module = {"marian": marian, "m2m100": m2m100}[family]
    target = None if family == "marian" else "fr"
    options = LoadOptions(device="cpu", dtype="int8", beams=1, target_lang=target)
    translator = module.load_model(translation_fixtures.tiny(family), family, options)
    assert isinstance(translator.decoder, decoder_step.FusedDecoder)
    sentences = ["the cat sleeps on the warm chair", "we will meet again tomorrow"]
    fused = [translator.translate(text, "en") for text in sentences]
    drafts = zip(sentences, [t.ids[:4] for t in fused], strict=True)
    drafted = [translator.translate(text, "en", draft=draft) for text, draft in drafts]
    translator.decoder = translator.model.decoder
    layers = [translator.translate(text, "en") for text in sentences]
    assert [t.ids for t in fused] == [t.ids for t in layers] == [t.ids for t in drafted]
    assert all(len(t.ids) > 3 for t in fused)


def test_text_translation_is_int8_by_default_where_the_panels_run() -> None:
    """--dtype auto on a CPU: int8, stepped in one call; float32 when asked."""
    folder = translation_fixtures.tiny("marian")
    default = marian.load_model(folder, "tiny", LoadOptions(beams=1))
    assert default.info.dtype == "int8"
    assert isinstance(default.decoder, decoder_step.FusedDecoder)
    exact = marian.load_model(folder, "tiny", LoadOptions(beams=1, dtype="float32"))
    assert exact.info.dtype == "float32" and exact.decoder is exact.model.decoder
