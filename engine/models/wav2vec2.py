"""wav2vec2 and HuBERT speech encoders: 16 kHz waveform → hidden states at 50 Hz (or less).

A stack of strided 1-D convolutions turns the waveform into 20 ms frames, a projection lifts
them to the model width, a grouped convolution adds relative position, and transformer layers
follow: post-norm for base models, pre-norm ("stable layer norm") for large and XLS-R ones.
An optional adapter (strided Conv1d + GLU layers) shortens the output further for a text
decoder. HuBERT is the same network with a few switches (no adapter, optional projection
norm, optional batch-norm before the position convolution), so it lives here too.

The position convolution is stored weight-normed (a gain g and a direction v); we fold it
into one plain weight at load time, so nothing is recomputed per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelError

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def activation(name: str):
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ModelError(
            f"The activation '{name}' in this model's config is not supported.",
            f"Livecap knows: {', '.join(sorted(_ACTIVATIONS))}.",
        ) from None


@dataclass(frozen=True)
class Wav2Vec2Config:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    conv_dim: tuple[int, ...]
    conv_kernel: tuple[int, ...]
    conv_stride: tuple[int, ...]
    conv_bias: bool = False
    feat_extract_norm: str = "group"  # "group": GroupNorm on the first conv; "layer": on all
    feat_extract_activation: str = "gelu"
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False  # pre-norm layers, final norm after the stack
    feat_proj_layer_norm: bool = True  # HuBERT may skip the norm before the projection
    conv_pos_batch_norm: bool = False  # HuBERT variant: batch norm instead of weight norm
    add_adapter: bool = False
    output_hidden_size: int | None = None
    adapter_kernel_size: int = 3
    adapter_stride: int = 2
    num_adapter_layers: int = 3

    @classmethod
    def from_dict(cls, values: dict) -> Wav2Vec2Config:
        if values.get("adapter_attn_dim"):
            raise ModelError(
                "This wav2vec2 model uses per-language attention adapters (MMS), "
                "which Livecap does not run.",
                "Choose a speech encoder-decoder model without attention adapters.",
            )
        known = cls.__dataclass_fields__
        config = {k: v for k, v in values.items() if k in known and v is not None}
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            config[name] = tuple(config[name])
        if values.get("model_type") == "hubert":
            config["add_adapter"] = False
        return cls(**config)

    @property
    def output_size(self) -> int:
        if self.add_adapter and self.output_hidden_size:
            return self.output_hidden_size
        return self.hidden_size

    def output_frames(self, samples: int, adapter: bool = True) -> int:
        """How many frames `samples` of audio give after the convs (and the adapter)."""
        for kernel, stride in zip(self.conv_kernel, self.conv_stride, strict=True):
            samples = (samples - kernel) // stride + 1
        if adapter and self.add_adapter:
            for _ in range(self.num_adapter_layers):
                samples = (samples - 1) // self.adapter_stride + 1
        return samples


class FeatureEncoder(nn.Module):
    """Strided convolutions over the waveform: [B, N] → [B, T, C], T ≈ N / 320.

    Frames stay channels-last, so each convolution is one matrix product over overlapping
    windows: the k input frames of a window lie next to each other in memory, so a strided
    view (no copy) of the input is the im2col matrix. This avoids the layout changes a
    Conv1d + LayerNorm stack needs, which costs more than the product itself on a CPU
    (tests/benchmarks/sed_vs_transformers.py times the encoder).
    """

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        channels = (1, *config.conv_dim)
        self.kernels, self.strides = config.conv_kernel, config.conv_stride
        # conv weight [out, in, k] is stored as a Linear over windows: [out, k * in]
        self.convs = nn.ModuleList(
            nn.Linear(k * channels[i], channels[i + 1], bias=config.conv_bias)
            for i, k in enumerate(config.conv_kernel)
        )
        if config.feat_extract_norm == "layer":
            self.norms = nn.ModuleList(nn.LayerNorm(c) for c in config.conv_dim)
        elif config.feat_extract_norm == "group":  # per-channel norm over time, first conv only
            self.norms = nn.ModuleList([nn.GroupNorm(config.conv_dim[0], config.conv_dim[0])])
        else:
            raise ModelError(
                f"Unknown feat_extract_norm '{config.feat_extract_norm}' in the model config.",
                "The model folder may be damaged; download it again.",
            )
        self.layer_norm = config.feat_extract_norm == "layer"
        self.act = activation(config.feat_extract_activation)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = waveform[:, :, None]  # [B, N, 1]
        for i, conv in enumerate(self.convs):
            x = _strided_conv(x, conv, self.kernels[i], self.strides[i])
            if self.layer_norm:
                x = self.norms[i](x)
            elif i == 0:
                x = _group_norm_over_time(x, self.norms[0])
            x = self.act(x)
        return x


def _strided_conv(x: torch.Tensor, conv: nn.Linear, kernel: int, stride: int) -> torch.Tensor:
    """Conv1d on channels-last frames [B, T, C] as windows [B, T', k*C] @ weight."""
    x = x.contiguous()
    batch, frames, channels = x.shape
    out_frames = (frames - kernel) // stride + 1
    windows = x.as_strided(
        (batch, out_frames, kernel * channels), (x.stride(0), stride * channels, 1)
    )
    # one 2-D product per row: a 2-D strided view goes to the matmul without a copy
    rows = [F.linear(row_windows, conv.weight, conv.bias) for row_windows in windows]
    return rows[0][None] if batch == 1 else torch.stack(rows)


def _group_norm_over_time(x: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm with one group per channel, on channels-last [B, T, C]: each channel is
    normalised over time."""
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    return (x - mean) * torch.rsqrt(var + norm.eps) * norm.weight + norm.bias


class PositionalConv(nn.Module):
    """Grouped conv over time added to the frames; weight norm already folded at load."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        kernel, width = config.num_conv_pos_embeddings, config.hidden_size
        self.conv = nn.Conv1d(
            width, width, kernel, padding=kernel // 2, groups=config.num_conv_pos_embedding_groups
        )
        self.batch_norm = nn.BatchNorm1d(width) if config.conv_pos_batch_norm else None
        self.trim = 1 if kernel % 2 == 0 else 0  # an even kernel with k//2 padding gives 1 extra
        self.act = activation(config.feat_extract_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] → [B, T, D]
        y = x.transpose(1, 2)
        if self.batch_norm is not None:
            y = self.batch_norm(y)
        y = self.conv(y)
        if self.trim:
            y = y[:, :, : -self.trim]
        return self.act(y).transpose(1, 2)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)  # q, k, v projections fused: one matmul
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        width = config.hidden_size
        self.pre_norm = config.do_stable_layer_norm
        self.attention = SelfAttention(width, config.num_attention_heads)
        self.attn_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(width, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, width)
        self.ffn_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.act = activation(config.hidden_act)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_out(self.act(self.ffn_in(x)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attention(self.attn_norm(x), mask)
            return x + self._ffn(self.ffn_norm(x))
        x = self.attn_norm(x + self.attention(x, mask))
        return self.ffn_norm(x + self._ffn(x))


class Adapter(nn.Module):
    """Optional width projection, then strided Conv1d + GLU layers halving the frame rate."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        out = config.output_size
        self.proj = nn.Linear(config.hidden_size, out) if out != config.hidden_size else None
        self.proj_norm = nn.LayerNorm(out) if self.proj is not None else None
        self.convs = nn.ModuleList(
            nn.Conv1d(out, 2 * out, config.adapter_kernel_size, config.adapter_stride, padding=1)
            for _ in range(config.num_adapter_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is not None:
            x = self.proj_norm(self.proj(x))
        y = x.transpose(1, 2)
        for conv in self.convs:
            y = F.glu(conv(y), dim=1)
        return y.transpose(1, 2)


class Wav2Vec2Encoder(nn.Module):
    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.config = config
        self.features = FeatureEncoder(config)
        conv_out = config.conv_dim[-1]
        self.feature_norm = (
            nn.LayerNorm(conv_out, eps=config.layer_norm_eps)
            if config.feat_proj_layer_norm
            else None
        )
        self.feature_proj = nn.Linear(conv_out, config.hidden_size)
        self.pos_conv = PositionalConv(config)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.adapter = Adapter(config) if config.add_adapter else None

    @property
    def dtype(self) -> torch.dtype:
        return self.feature_proj.weight.dtype

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """waveform [B, N] (normalised) → hidden states [B, T, output_size].

        `lengths` [B] gives the valid samples per row of a right-padded batch; padded frames
        are then zeroed and masked out of attention, as the reference does with a mask.
        """
        x = self.features(waveform)  # [B, T, C]
        if self.feature_norm is not None:
            x = self.feature_norm(x)
        x = self.feature_proj(x)
        mask = None
        if lengths is not None:
            valid = self._valid_frames(lengths, x.shape[1])  # [B, T] bool
            x = x * valid[:, :, None]
            mask = valid[:, None, None, :]  # keys only: [B, 1, 1, T]
        x = x + self.pos_conv(x)
        if not self.config.do_stable_layer_norm:
            x = self.norm(x)
        for layer in self.layers:
            x = layer(x, mask)
        if self.config.do_stable_layer_norm:
            x = self.norm(x)
        if self.adapter is not None:
            x = self.adapter(x)
        return x

    def _valid_frames(self, lengths: torch.Tensor, frames: int) -> torch.Tensor:
        counts = torch.tensor([self.config.output_frames(int(n), adapter=False) for n in lengths])
        return torch.arange(frames)[None, :] < counts[:, None]


# ---- weights: the Hub names (after the "encoder." prefix) → ours ---------------------------


def rename_weight(name: str) -> str | None:
    """Map a checkpoint name to this module's, or None for weights we do not use."""
    if name.startswith(("masked_spec_embed", "quantizer", "project_", "lm_head")):
        return None
    rules = (
        ("feature_extractor.conv_layers.", "features."),
        ("feature_projection.layer_norm.", "feature_norm."),
        ("feature_projection.projection.", "feature_proj."),
        ("encoder.pos_conv_embed.", "pos_conv."),
        ("encoder.layer_norm.", "norm."),
        ("encoder.layers.", "layers."),
        ("adapter.proj_layer_norm.", "adapter.proj_norm."),
        ("adapter.layers.", "adapter.convs."),
    )
    for old, new in rules:
        if name.startswith(old):
            name = new + name[len(old) :]
            break
    parts = name.split(".")
    if parts[0] == "features":  # features.<i>.conv.w / features.<i>.layer_norm.w
        kind = "convs" if parts[2] == "conv" else "norms"
        return ".".join(["features", kind, parts[1], *parts[3:]])
    if parts[0] == "adapter" and parts[1] == "convs":  # adapter.convs.<i>.conv.w
        return ".".join(["adapter", "convs", parts[2], *parts[4:]])
    if parts[0] == "layers":
        sub = {
            "attention.out_proj": "attention.out",
            "layer_norm": "attn_norm",
            "final_layer_norm": "ffn_norm",
            "feed_forward.intermediate_dense": "ffn_in",
            "feed_forward.output_dense": "ffn_out",
        }
        rest = ".".join(parts[2:-1])
        if rest in sub:
            return ".".join(["layers", parts[1], sub[rest], parts[-1]])
        return name  # attention.{q,k,v}_proj: fused by fold_weights
    return name


def fold_weights(tensors: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """Fold the weight-normed position conv into one weight, lay the feature convs out as
    window matrices, and fuse the q/k/v projections."""
    out = dict(tensors)
    gain = out.pop("pos_conv.conv.parametrizations.weight.original0", None)
    direction = out.pop("pos_conv.conv.parametrizations.weight.original1", None)
    if gain is None:  # older checkpoints name them weight_g / weight_v
        gain, direction = (
            out.pop("pos_conv.conv.weight_g", None),
            out.pop("pos_conv.conv.weight_v", None),
        )
    if gain is not None and direction is not None:
        # weight norm over dim 2 (the kernel axis): each kernel tap k has its own gain
        norm = direction.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
        out["pos_conv.conv.weight"] = direction * (gain / norm)
    for name in [n for n in out if n.startswith("features.convs.") and n.endswith("weight")]:
        weight = out[name]  # Conv1d [out, in, k] → Linear over windows [out, k * in]
        out[name] = weight.permute(0, 2, 1).reshape(weight.shape[0], -1)
    for i in range(layers):
        prefix = f"layers.{i}.attention."
        for kind in ("weight", "bias"):
            parts = [out.pop(f"{prefix}{p}_proj.{kind}", None) for p in "qkv"]
            if all(p is not None for p in parts):
                out[f"{prefix}qkv.{kind}"] = torch.cat(parts)
    return out
