"""Kyutai STT configuration, read from a model folder in the transformers layout.

`config.json` holds the text LM fields and, under `codec_config`, the Mimi fields;
`generation_config.json` the start token; `preprocessor_config.json` the text delay and the
silence prefix the model was trained with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelError
from engine.models.loading import damaged_hint, read_config, read_json, require_counts

SAMPLE_RATE = 24_000
# Public model cards: the 1B model lags 0.5 s, the 2.6B 2.5 s and wants 1 s of silence first.
# Used only when a folder's preprocessor_config.json does not say.
_DEFAULT_DELAY_SECONDS = 0.5
_DEFAULT_SILENCE_PREFIX_SECONDS = 0.0
_COUNTS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "ffn_dim", "intermediate_size", "sliding_window", "num_codebooks",
    "codebook_vocab_size", "codebook_size", "num_quantizers", "num_semantic_quantizers",
)  # fmt: skip


@dataclass(frozen=True)
class MimiConfig:
    num_filters: int
    ratios: tuple[int, ...]  # encoder order: the reverse of the decoder's upsampling ratios
    kernel_size: int
    last_kernel_size: int
    residual_kernel_size: int
    dilation_growth_rate: int
    num_residual_layers: int
    compress: int
    pad_mode: str  # "constant" | "replicate": how a causal conv's first tail is filled
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    norm_eps: float
    rope_theta: float
    context: int  # attention window of the encoder transformer, in 25 Hz steps
    codebook_size: int
    codebook_dim: int
    quantizer_dim: int  # vector_quantization_hidden_dimension
    num_semantic: int
    num_quantizers: int  # codebooks in the checkpoint; the LM may use fewer

    @property
    def frame_size(self) -> int:
        """Samples per 12.5 Hz frame: SEANet strides times the x2 downsampling."""
        return math.prod(self.ratios) * 2


@dataclass(frozen=True)
class KyutaiConfig:
    mimi: MimiConfig
    vocab_size: int  # text vocabulary (the head's width)
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_dim: int  # fc1 width: gate and value halves
    rms_norm_eps: float
    rope_theta: float
    sliding_window: int
    num_codebooks: int
    codebook_vocab_size: int
    audio_bos_token_id: int
    pad_token_id: int
    bos_token_id: int  # first text input, indexing the shared embedding table as it is
    delay_seconds: float
    silence_prefix_seconds: float

    @property
    def embedding_rows(self) -> int:
        return self.vocab_size + self.num_codebooks * self.codebook_vocab_size + 1


def _rope_theta(fields: dict[str, Any]) -> float:
    rope = fields.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ModelError(
            f"RoPE type '{rope['rope_type']}' is not supported by the Kyutai engine.",
            "Use a Kyutai STT checkpoint with default rotary embeddings.",
        )
    return float(rope.get("rope_theta", fields.get("rope_theta", 10000.0)))


def _mimi_config(codec: dict[str, Any]) -> MimiConfig:
    if not codec.get("use_causal_conv", True) or codec.get("use_conv_shortcut", False):
        raise ModelError(
            "This Mimi codec is not causal (or uses conv shortcuts), so it cannot stream.",
            "Use a Kyutai STT checkpoint (kyutai/stt-*-trfs).",
        )
    if codec.get("hidden_act", "gelu") != "gelu" or codec.get("attention_bias", False):
        raise ModelError(
            "This Mimi codec's transformer differs from Kyutai STT's (activation or bias).",
            "Use a Kyutai STT checkpoint (kyutai/stt-*-trfs).",
        )
    hidden = codec.get("hidden_size", 512)
    heads = codec.get("num_attention_heads", 8)
    ratios = codec.get("upsampling_ratios") or [8, 6, 5, 4]
    return MimiConfig(
        num_filters=codec.get("num_filters", 64),
        ratios=tuple(reversed(ratios)),
        kernel_size=codec.get("kernel_size", 7),
        last_kernel_size=codec.get("last_kernel_size", 3),
        residual_kernel_size=codec.get("residual_kernel_size", 3),
        dilation_growth_rate=codec.get("dilation_growth_rate", 2),
        num_residual_layers=codec.get("num_residual_layers", 1),
        compress=codec.get("compress", 2),
        pad_mode=codec.get("pad_mode", "constant"),
        hidden_size=hidden,
        num_layers=codec.get("num_hidden_layers", 8),
        num_heads=heads,
        num_kv_heads=codec.get("num_key_value_heads") or heads,
        head_dim=codec.get("head_dim") or hidden // heads,
        intermediate_size=codec.get("intermediate_size", 2048),
        norm_eps=codec.get("norm_eps", 1e-5),
        rope_theta=_rope_theta(codec),
        context=codec.get("sliding_window", 250),
        codebook_size=codec.get("codebook_size", 2048),
        codebook_dim=codec.get("codebook_dim") or hidden,
        quantizer_dim=codec.get("vector_quantization_hidden_dimension", 256),
        num_semantic=codec.get("num_semantic_quantizers", 1),
        num_quantizers=codec.get("num_quantizers", 32),
    )


def load_config(folder: Path) -> KyutaiConfig:
    """Read config.json, generation_config.json and preprocessor_config.json of `folder`."""
    fields = read_config(folder)
    codec = fields.get("codec_config") or {}
    for section in (fields, codec):
        require_counts(section, _COUNTS, folder / "config.json")
    generation = read_json(folder / "generation_config.json", missing_ok=True)
    preprocessor = read_json(folder / "preprocessor_config.json", missing_ok=True)
    try:
        mimi = _mimi_config(codec)
        heads = fields["num_attention_heads"]
        config = KyutaiConfig(
            mimi=mimi,
            vocab_size=fields["vocab_size"],
            hidden_size=fields["hidden_size"],
            num_layers=fields["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=fields.get("num_key_value_heads") or heads,
            head_dim=fields.get("head_dim") or fields["hidden_size"] // heads,
            ffn_dim=fields["ffn_dim"],
            rms_norm_eps=fields.get("rms_norm_eps", 1e-8),
            rope_theta=_rope_theta(fields),
            sliding_window=fields["sliding_window"],
            num_codebooks=fields.get("num_codebooks", 32),
            codebook_vocab_size=fields.get("codebook_vocab_size", 2049),
            audio_bos_token_id=fields.get("audio_bos_token_id", 2048),
            pad_token_id=fields.get("pad_token_id", 3),
            bos_token_id=generation.get("bos_token_id", fields.get("bos_token_id", 48000)),
            delay_seconds=preprocessor.get("audio_delay_seconds", _DEFAULT_DELAY_SECONDS),
            silence_prefix_seconds=preprocessor.get(
                "audio_silence_prefix_seconds", _DEFAULT_SILENCE_PREFIX_SECONDS
            ),
        )
    except (KeyError, TypeError) as exc:
        raise ModelError(
            f"{folder / 'config.json'} lacks a Kyutai field ({exc}).",
            damaged_hint(folder),
        ) from None
    if fields.get("hidden_act", "silu") != "silu":
        raise ModelError(
            f"Activation '{fields['hidden_act']}' is not Kyutai STT's (silu).",
            "Use a Kyutai STT checkpoint (kyutai/stt-*-trfs).",
        )
    fitting = mimi.num_semantic <= config.num_codebooks <= mimi.num_quantizers
    if not fitting or mimi.frame_size * 12.5 != SAMPLE_RATE:
        raise ModelError(
            "The codec's codebooks or frame rate do not fit the text model.",
            "Use a Kyutai STT checkpoint (kyutai/stt-*-trfs).",
        )
    return config
