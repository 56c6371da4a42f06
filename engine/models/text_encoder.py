"""Text encoder-decoder translation models (Marian, M2M100/NLLB) as one network shape.

Both families are BART-like: token embeddings (scaled by √width where `scale_embedding`)
plus fixed sinusoidal positions, a stack of encoder layers, and bart.BartDecoder over the
encoder's output, the input and output embeddings being one tied matrix. They differ in the
layer order (Marian post-norm, M2M100 pre-norm with a final LayerNorm), in how positions
are tabled, and in Marian's bias on the logits; marian.py and m2m100.py say which.

The checkpoint names are transformers' `*ForConditionalGeneration` layout: `model.shared`,
`model.encoder.*`, `model.decoder.*` (each stack named as BART's decoder names its layers,
so bart.rename_weight maps both) and Marian's `final_logits_bias`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.errors import ModelError
from engine.models import bart, loading, panels
from engine.models.speech2text import SelfAttention
from engine.models.wav2vec2 import activation


@dataclass(frozen=True)
class TextEncoderConfig:
    d_model: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    activation_function: str
    scale_embedding: bool
    pre_norm: bool  # M2M100: norm before each block, plus a final LayerNorm


COUNTS = (
    "vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
    "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings",
)  # fmt: skip


class EncoderLayer(nn.Module):
    """Self-attention over the whole sentence, then a feed-forward block (BART's names)."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        width = config.d_model
        self.pre_norm = config.pre_norm
        self.self_attn = SelfAttention(width, config.encoder_attention_heads)
        self.self_norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, width)
        self.ffn_norm = nn.LayerNorm(width)
        self.act = activation(config.activation_function)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = (
            (self.self_norm, self.self_attn),
            (self.ffn_norm, lambda h: self.fc2(self.act(self.fc1(h)))),
        )
        for norm, block in blocks:
            x = x + block(norm(x)) if self.pre_norm else norm(x + block(x))
        return x


class TextEncoderDecoder(nn.Module):
    """Token ids → encoder memory (`encode`), and the shared text decoder (`decoder`).

    The encoder reads the decoder's token embeddings and position table: one matrix, one
    table, as the checkpoints store them."""

    def __init__(
        self, config: TextEncoderConfig, decoder: bart.BartDecoder, max_positions: int
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.max_positions = max_positions
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.final_norm = nn.LayerNorm(config.d_model) if config.pre_norm else None

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [1, T] → memory [1, T, D]."""
        decoder = self.decoder
        x = decoder.embed_tokens(ids) * self.embed_scale + decoder.embed_positions(ids, 0)
        for layer in self.layers:
            x = layer(x)
        return x if self.final_norm is None else self.final_norm(x)


def build_network(
    values: dict,
    path: Path,
    pre_norm: bool,
    activation_function: str,
    scale_embedding: bool,
    **decoder: object,
) -> TextEncoderDecoder:
    """The network config.json (`values`, read from `path`) describes; the family gives its
    layer order, the defaults its checkpoints leave out, and the decoder's own settings."""
    loading.require_counts(values, COUNTS, path)
    act = values.get("activation_function") or activation_function
    scale = bool(values.get("scale_embedding", scale_embedding))
    width, count = values["d_model"], values["max_position_embeddings"]
    shared = dict(d_model=width, activation_function=act, scale_embedding=scale, pre_norm=pre_norm)
    sizes = ("layers", "attention_heads", "ffn_dim")
    encoder = TextEncoderConfig(
        **shared, **{f"encoder_{size}": values[f"encoder_{size}"] for size in sizes}
    )
    decoder_config = bart.BartDecoderConfig(
        **shared,
        **{f"decoder_{size}": values[f"decoder_{size}"] for size in sizes},
        vocab_size=values["vocab_size"],
        max_position_embeddings=count,
        embedding_norm=False,
        **decoder,
    )
    return TextEncoderDecoder(encoder, bart.BartDecoder(decoder_config, width), count)


# ---- weights ---------------------------------------------------------------------------------

# computed position tables, and tied copies of the shared embeddings some checkpoints carry
_SKIPPED = re.compile(r"model\.(en|de)coder\.embed_positions\.weights?$")
_TIED_COPIES = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight")


def load_weights(model: TextEncoderDecoder, checkpoint: loading.Checkpoint) -> None:
    """Read a transformers-layout checkpoint into `model` (built on the meta device)."""
    tensors = checkpoint.tensors()
    if "model.shared.weight" in tensors:
        for name in (*_TIED_COPIES, "lm_head.weight"):
            tensors.pop(name, None)
    encoder, decoder, sources = {}, {}, {}
    for name, tensor in tensors.items():
        if _SKIPPED.match(name):
            continue
        if name == "final_logits_bias":
            decoder["lm_head.bias"], sources["decoder.lm_head.bias"] = tensor.reshape(-1), name
        elif name in ("model.shared.weight", *_TIED_COPIES):
            decoder["embed_tokens.weight"] = tensor
            sources["decoder.embed_tokens.weight"] = name
        elif name.startswith("model.encoder."):
            ours = bart.rename_weight("model.decoder." + name.removeprefix("model.encoder."))
            encoder[ours], sources[ours] = tensor, name
        elif name.startswith("model.decoder.") or name == "lm_head.weight":
            ours = bart.rename_weight(name)
            decoder[ours], sources[f"decoder.{ours}"] = tensor, name
        else:
            checkpoint.unexpected(name)
    try:
        state = bart.fuse_projections(encoder, len(model.layers))
        fused = bart.fuse_projections(decoder, model.decoder.num_layers)
    except RuntimeError as exc:  # parts of one fused matrix that do not fit together
        checkpoint.fail(f"tensors of one layer do not fit together ({exc})")
    state.update({f"decoder.{name}": tensor for name, tensor in fused.items()})
    loading.assign(model, state, checkpoint, sources)
    model.decoder.embed_positions.fill()


def translation_dtype(requested: str, device: torch.device) -> tuple[torch.dtype, str]:
    """The weights' dtype and the decoder kernels' precision for `--dtype`: auto is int8 on a
    CPU where the panels run (each greedy step in one call, decoder_step.py, reading a quarter
    of float32's bytes, so live translation takes that much less time from the captions), else
    float32; bfloat16 on a GPU. int8 keeps float32 weights for the encoder and quantises the
    decoder's step matrices (CPU only)."""
    if requested == "auto":
        fast = "int8" if panels.available() else "float32"
        requested = "bfloat16" if device.type == "cuda" else fast
    if requested == "int8" and device.type == "cpu":
        return torch.float32, "int8"
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if requested not in dtypes:
        raise ModelError(
            f"Translation models cannot run in {requested} here.",
            "Choose --dtype float32 or bfloat16 (int8 on the CPU).",
        )
    return dtypes[requested], requested
