"""Speech2Text (fairseq S2T): log-mel features → conv subsampler → transformer encoder → the
shared text decoder.

Checkpoints: `facebook/s2t-small-librispeech-asr` (English ASR) and the MuST-C speech
translation models such as `facebook/s2t-medium-mustc-multilingual-st`, whose decoder is
told the output language by a forced `<lang:xx>` token right after the start token.

Only what differs from the other families lives here: the config, the tokenizer, the conv
subsampler and encoder, and the checkpoint's names for them. The features are
engine/models/filterbank.py's; the decoder is bart.BartDecoder in its mBART form with fixed
sinusoidal positions; `load_model` gives a seq2seq.WindowDecoder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelError
from engine.models import bart, kernel_choice, loading
from engine.models.contract import LoadOptions, ModelInfo
from engine.models.filterbank import FRAME_LENGTH, FRAME_SHIFT, SAMPLE_RATE, FilterbankFeatures
from engine.models.generation import GenerationConfig
from engine.models.seq2seq import WindowDecoder

_LANG_TOKEN = re.compile(r"^<lang:([A-Za-z_-]+)>$")
_SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>")
_COUNTS = (
    "vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
    "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "conv_channels",
    "input_feat_per_channel", "input_channels", "max_source_positions", "max_target_positions",
)  # fmt: skip


@dataclass(frozen=True)
class Speech2TextConfig:
    vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    conv_kernel_sizes: tuple[int, ...]
    conv_channels: int
    input_feat_per_channel: int
    input_channels: int
    scale_embedding: bool
    pad_token_id: int
    max_source_positions: int
    max_target_positions: int
    tie_word_embeddings: bool

    @classmethod
    def from_dict(cls, raw: dict, path: Path) -> Speech2TextConfig:
        if raw.get("activation_function", "relu") != "relu":
            raise ModelError(
                f"Speech2Text with activation '{raw['activation_function']}' is not supported.",
                "Livecap runs the published Speech2Text checkpoints, which use ReLU.",
            )
        loading.require_counts(raw, _COUNTS, path)
        values = {
            "conv_kernel_sizes": (5, 5),
            "conv_channels": 1024,
            "input_feat_per_channel": 80,
            "input_channels": 1,
            "scale_embedding": True,
            "pad_token_id": 1,
            "max_source_positions": 6000,
            "max_target_positions": 1024,
            "tie_word_embeddings": True,
        }
        values.update({k: v for k, v in raw.items() if k in cls.__dataclass_fields__})
        try:
            values["conv_kernel_sizes"] = tuple(values["conv_kernel_sizes"])
            return cls(**values)
        except TypeError as exc:
            raise ModelError(
                f"{path} lacks a Speech2Text setting ({exc}).", loading.damaged_hint(path.parent)
            ) from None

    @property
    def max_positions(self) -> int:
        return max(self.max_source_positions, self.max_target_positions)

    def decoder(self) -> bart.BartDecoderConfig:
        return bart.BartDecoderConfig(
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            decoder_layers=self.decoder_layers,
            decoder_attention_heads=self.decoder_attention_heads,
            decoder_ffn_dim=self.decoder_ffn_dim,
            max_position_embeddings=self.max_positions,
            activation_function="relu",
            scale_embedding=self.scale_embedding,
            tie_word_embeddings=self.tie_word_embeddings,
            pre_norm=True,
            sinusoidal_positions=True,
            embedding_norm=False,
            pad_token_id=self.pad_token_id,
        )


# ---- tokenizer: ids → text through vocab.json ------------------------------------------------


class Speech2TextTokenizer:
    def __init__(self, folder: Path) -> None:
        path = folder / "vocab.json"
        if not path.exists():
            raise ModelError(
                f"{folder} has no vocab.json, so its Speech2Text tokenizer is missing.",
                loading.damaged_hint(folder),
            )
        vocab = loading.read_json(path)
        if not all(isinstance(index, int) for index in vocab.values()):
            raise ModelError(
                f"{path} does not map pieces to token ids.", loading.damaged_hint(folder)
            )
        self.pieces = {index: piece for piece, index in vocab.items()}
        self.languages = {
            match.group(1): index
            for piece, index in vocab.items()
            if (match := _LANG_TOKEN.match(piece))
        }
        self.special_ids = {vocab[p] for p in _SPECIAL_PIECES if p in vocab}
        self.special_ids |= set(self.languages.values())
        settings = loading.read_json(folder / "tokenizer_config.json", missing_ok=True)
        self.upper_case = bool(settings.get("do_upper_case", False))

    def decode(self, ids: Sequence[int]) -> str:
        pieces = [self.pieces.get(i, "") for i in ids if i not in self.special_ids]
        text = "".join(pieces).replace("▁", " ").strip()
        return text.upper() if self.upper_case else text


# ---- the encoder -----------------------------------------------------------------------------


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (bart.split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.out(bart.merge_heads(F.scaled_dot_product_attention(q, k, v)))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.relu(self.up(self.norm(x))))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.ffn = FeedForward(dim, ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(x + self.attn(self.attn_norm(x)))


class ConvSubsampler(nn.Module):
    """Features [B, T, C] → [B, ~T/4, D]: stride-2 convolutions, each halved again by a GLU."""

    def __init__(self, config: Speech2TextConfig) -> None:
        super().__init__()
        channels_in = config.input_feat_per_channel * config.input_channels
        last = len(config.conv_kernel_sizes) - 1
        self.convs = nn.ModuleList()
        for i, kernel in enumerate(config.conv_kernel_sizes):
            channels_out = 2 * config.d_model if i == last else config.conv_channels
            self.convs.append(
                nn.Conv1d(channels_in, channels_out, kernel, stride=2, padding=kernel // 2)
            )
            channels_in = channels_out // 2

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.transpose(1, 2)
        for conv in self.convs:
            x = F.glu(conv(x), dim=1)
        return x.transpose(1, 2)


class Speech2Text(nn.Module):
    def __init__(self, config: Speech2TextConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.d_model
        self.embed_scale = math.sqrt(dim) if config.scale_embedding else 1.0
        self.subsample = ConvSubsampler(config)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(dim, config.encoder_attention_heads, config.encoder_ffn_dim)
            for _ in range(config.encoder_layers)
        )
        self.encoder_norm = nn.LayerNorm(dim)
        self.decoder = bart.BartDecoder(config.decoder(), dim)

    @property
    def positions(self) -> bart.SinusoidalPositions:
        """The encoder's positions: the decoder's table, read from row pad_token_id + 1 on."""
        return self.decoder.embed_positions

    def encode(self, feats: torch.Tensor) -> torch.Tensor:
        """Normalised features [1, T, 80] → encoder output [1, S, D], S = ceil(ceil(T/2)/2)."""
        x = self.subsample(feats) * self.embed_scale
        first = self.config.pad_token_id + 1
        x = x + self.positions.table[first : first + x.shape[1]]
        for layer in self.encoder_layers:
            x = layer(x)
        return self.encoder_norm(x)


# ---- weights: checkpoint (transformers layout) names → ours ------------------------------------


def _encoder_names(config: Speech2TextConfig) -> dict[str, list[str]]:
    """Our encoder parameter → the checkpoint tensors it is made of (concatenated on dim 0)."""
    names: dict[str, list[str]] = {}

    def linear(ours: str, theirs: list[str]) -> None:
        for part in ("weight", "bias"):
            names[f"{ours}.{part}"] = [f"{t}.{part}" for t in theirs]

    for i in range(len(config.conv_kernel_sizes)):
        linear(f"subsample.convs.{i}", [f"model.encoder.conv.conv_layers.{i}"])
    for i in range(config.encoder_layers):
        src, dst = f"model.encoder.layers.{i}", f"encoder_layers.{i}"
        linear(f"{dst}.attn_norm", [f"{src}.self_attn_layer_norm"])
        linear(f"{dst}.attn.qkv", [f"{src}.self_attn.{p}_proj" for p in "qkv"])
        linear(f"{dst}.attn.out", [f"{src}.self_attn.out_proj"])
        linear(f"{dst}.ffn.norm", [f"{src}.final_layer_norm"])
        linear(f"{dst}.ffn.up", [f"{src}.fc1"])
        linear(f"{dst}.ffn.down", [f"{src}.fc2"])
    linear("encoder_norm", ["model.encoder.layer_norm"])
    return names


# sinusoidal tables some checkpoints carry: computed here, never read
_COMPUTED = re.compile(r"model\.(en|de)coder\.embed_positions\.weights?$")


def load_weights(model: Speech2Text, checkpoint: loading.Checkpoint) -> None:
    tensors = checkpoint.tensors()
    state, decoder, sources = {}, {}, {}
    try:
        for ours, theirs in _encoder_names(model.config).items():
            missing = [name for name in theirs if name not in tensors]
            if missing:
                checkpoint.fail(f"tensor '{missing[0]}' is missing from the checkpoint")
            parts = [tensors.pop(name) for name in theirs]
            state[ours] = parts[0] if len(parts) == 1 else torch.cat(parts)
            sources[ours] = " + ".join(theirs)
        for name, tensor in tensors.items():
            if _COMPUTED.match(name):
                continue
            if name != "lm_head.weight" and not name.startswith("model.decoder."):
                checkpoint.unexpected(name)
            decoder[bart.rename_weight(name)] = tensor
            sources[f"decoder.{bart.rename_weight(name)}"] = name
        fused = bart.fuse_projections(decoder, model.config.decoder_layers)
    except RuntimeError as exc:  # parts of one fused matrix that do not fit together
        checkpoint.fail(f"tensors of one layer do not fit together ({exc})")
    state.update({f"decoder.{name}": tensor for name, tensor in fused.items()})
    loading.assign(model, state, checkpoint, sources)


# ---- loading -----------------------------------------------------------------------------------


def _pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if requested not in dtypes:
        raise ModelError(
            f"Speech2Text cannot run in {requested}.",
            "Choose --dtype float32 or bfloat16 for Speech2Text models.",
        )
    return dtypes[requested]


def _target_language(
    name: str, tokenizer: Speech2TextTokenizer, wanted: str | None
) -> tuple[str | None, int | None]:
    """The output language and its token, for a model that writes several; else None."""
    if not tokenizer.languages:
        return None, None
    known = ", ".join(sorted(tokenizer.languages))
    if wanted is None:
        raise ModelError(
            f"{name} translates speech and needs a target language.",
            f"Pass a target language (--target-lang), one of: {known}.",
        )
    if wanted not in tokenizer.languages:
        raise ModelError(f"{name} cannot translate into '{wanted}'.", f"Choose one of: {known}.")
    return wanted, tokenizer.languages[wanted]


@loading.returning_freed_blocks()
def load_model(folder: Path, name: str, options: LoadOptions) -> tuple[WindowDecoder, ModelInfo]:
    """Build the model from `folder` (Hub layout) for the chunked policy, with its info."""
    config = Speech2TextConfig.from_dict(loading.read_config(folder), folder / "config.json")
    tokenizer = Speech2TextTokenizer(folder)
    language, language_id = _target_language(name, tokenizer, options.target_lang)
    generation = GenerationConfig.from_folder(folder, num_beams=options.beams)
    generation = replace(generation, forced_bos_token_id=language_id)
    device = loading.resolve_device(options.device)
    dtype = _pick_dtype(options.dtype, device)
    model = loading.build(lambda: Speech2Text(config), folder)
    load_weights(model, loading.Checkpoint(folder))
    model.decoder.embed_positions.fill()
    model = model.to(device=device, dtype=dtype).eval()
    precision = str(dtype).removeprefix("torch.")
    kernel_choice.prepare_decoder(model.decoder, precision, generation.num_beams)
    features = FilterbankFeatures(config.input_feat_per_channel)
    transcriber = WindowDecoder(
        model,
        features=lambda audio: features(audio).to(device, dtype)[None],
        tokenizer=tokenizer,
        generation=generation,
        language_id=language_id,
        specials=tokenizer.special_ids,
        min_samples=FRAME_LENGTH,  # one feature frame
        seconds_per_frame=lambda _samples: 4 * FRAME_SHIFT / SAMPLE_RATE,  # 40 ms frames
        prefix_outside_budget=True,  # a forced prefix is text already said
    )
    info = ModelInfo(
        name=name,
        family="speech2text",
        languages=tuple(sorted(tokenizer.languages)),
        language=language,
        delay_seconds=0.0,
        device=device.type,
        dtype=precision,
        task="translate" if tokenizer.languages else "transcribe",
    )
    return transcriber, info
