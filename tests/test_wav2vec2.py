"""wav2vec2 / HuBERT encoder variants against transformers' Wav2Vec2Model and HubertModel."""

from __future__ import annotations

import pytest
import torch

from engine.models import wav2vec2 as w2v
from tests.sed_fixtures import _spread_weights, _wav2vec2_config, clip

VARIANTS = {
    "layer-norm convs, stable layer norm, adapter with projection": dict(
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        add_adapter=True,
        output_hidden_size=24,
        num_adapter_layers=2,
    ),
    "group-norm convs, post-norm, odd position kernel": dict(
        feat_extract_norm="group", num_conv_pos_embeddings=15, hidden_act="gelu_new"
    ),
    "hubert: batch-norm position conv, no projection norm": dict(
        model_type="hubert", conv_pos_batch_norm=True, feat_proj_layer_norm=False
    ),
}


def _reference(variant: dict) -> torch.nn.Module:
    from transformers import HubertConfig, HubertModel, Wav2Vec2Model

    variant = dict(variant)
    hubert = variant.pop("model_type", None) == "hubert"
    config = _wav2vec2_config(**variant)
    model = HubertModel(HubertConfig(**config.to_dict())) if hubert else Wav2Vec2Model(config)
    _spread_weights(model.eval(), seed=7)
    if hubert:  # give the batch norm non-trivial running statistics
        norm = model.encoder.pos_conv_embed.batch_norm
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    return model


def _ours(reference: torch.nn.Module, old_weight_norm_names: bool = False) -> w2v.Wav2Vec2Encoder:
    values = reference.config.to_dict()
    encoder = w2v.Wav2Vec2Encoder(w2v.Wav2Vec2Config.from_dict(values)).eval()
    tensors = {}
    for name, tensor in reference.state_dict().items():
        if old_weight_norm_names:  # checkpoints saved before weight norm became a parametrization
            name = name.replace("parametrizations.weight.original0", "weight_g")
            name = name.replace("parametrizations.weight.original1", "weight_v")
        if (ours := w2v.rename_weight(name)) is not None:
            tensors[ours] = tensor
    encoder.load_state_dict(w2v.fold_weights(tensors, encoder.config.num_hidden_layers))
    return encoder


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_encoder_matches_reference(variant: dict) -> None:
    reference = _reference(variant)
    ours = _ours(reference)
    audio = torch.from_numpy(clip(0.8, seed=5))[None]
    with torch.inference_mode():
        expected = reference(audio).last_hidden_state
        got = ours(audio)
    assert got.shape == expected.shape
    assert got.shape[1] == ours.config.output_frames(audio.shape[1])
    assert (got - expected).abs().max().item() <= 1e-4


def test_old_weight_norm_names_fold_the_same() -> None:
    reference = _reference(VARIANTS["group-norm convs, post-norm, odd position kernel"])
    audio = torch.from_numpy(clip(0.5, seed=6))[None]
    with torch.inference_mode():
        expected = reference(audio).last_hidden_state
        got = _ours(reference, old_weight_norm_names=True)(audio)
    assert (got - expected).abs().max().item() <= 1e-4


def test_attention_adapters_are_refused() -> None:
    from engine.errors import ModelError

    values = _wav2vec2_config().to_dict() | {"adapter_attn_dim": 16}
    with pytest.raises(ModelError):
        w2v.Wav2Vec2Config.from_dict(values)
