"""The encoder half of Mimi, in streaming form: 24 kHz audio → 32 codes per 80 ms frame.

SEANet causal convolutions (each keeps the tail of its input as state) bring the audio to
25 Hz; a transformer with a bounded KV ring adds context; a strided conv halves the rate to
12.5 Hz; residual vector quantization (semantic, then acoustic codebooks) gives the codes.
Offline encoding is the same code fed everything at once: state makes chunking invisible.
Weights arrive through `tensor(name)`, named as in the transformers checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine.models.kyutai.config import MimiConfig
from engine.models.kyutai.layers import KVRing, Linear, Rotary, apply_rotary

TensorSource = Callable[[str], torch.Tensor]
_MAX_CHUNK = 16  # 25 Hz steps the transformer takes at once (offline input is cut to this)
# Longest (padded) conv input computed as a matmul: a streamed 1920-sample frame's convs after
# the first downsampling (and the 1x1 convs at any length).
_MATMUL_MAX_INPUT = 640


@dataclass
class MimiState:
    """Everything Mimi remembers between calls."""

    tails: dict[int, torch.Tensor] = field(default_factory=dict)  # conv index → last inputs
    rings: list[KVRing] = field(default_factory=list)  # one per transformer layer
    step: int = 0  # 25 Hz steps seen by the transformer (its next absolute position)


class CausalConv:
    """Conv1d that sees only the past: the input is prefixed with the previous call's last
    `kernel - stride` samples (zeros, or the first sample repeated, at the very start)."""

    def __init__(self, index: int, weight, bias, stride: int, dilation: int, mode: str) -> None:
        self.index = index  # key of its tail in MimiState.tails
        self.weight, self.bias = weight, bias  # [out, in, kernel], [out] or None
        self.stride, self.dilation, self.mode = stride, dilation, mode
        self.padding = (weight.shape[2] - 1) * dilation + 1 - stride
        self.flat_weight = weight.reshape(weight.shape[0], -1)  # [out, in * kernel], a view

    def __call__(self, x: torch.Tensor, state: MimiState) -> torch.Tensor:
        if self.padding > 0:
            tail = state.tails.get(self.index)
            if tail is None:
                tail = x[..., :1] if self.mode == "replicate" else x.new_zeros(1, x.shape[1], 1)
                tail = tail.expand(-1, -1, self.padding)
            x = torch.cat((tail, x), dim=2)
            state.tails[self.index] = x[..., -self.padding :]
        if self.weight.shape[2] == 1 or x.shape[2] <= _MATMUL_MAX_INPUT:
            return self._as_matmul(x)
        return F.conv1d(x, self.weight, self.bias, self.stride, dilation=self.dilation)

    def _as_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """The same convolution as one matmul over the input's windows (x [1, in, length]).

        Streaming feeds short inputs, where conv1d's kernels are slower than one matmul
        (tests/benchmarks/kyutai_vs_transformers.py times Mimi per frame). The windows copy costs
        in x kernel floats per output, so long (offline) inputs keep conv1d, except 1x1
        convs, whose windows are a view of x (no copy).
        """
        span = (self.weight.shape[2] - 1) * self.dilation + 1
        windows = x[0].unfold(1, span, self.stride)[:, :, :: self.dilation]  # [in, out, kernel]
        windows = windows.permute(1, 0, 2).reshape(windows.shape[1], -1)  # [out, in * kernel]
        return F.linear(windows, self.flat_weight, self.bias).T[None]  # [1, out, length]


class SEANetEncoder:
    """Convolutions from audio [1, 1, samples] to latents [1, hidden, samples / 960]."""

    def __init__(self, config: MimiConfig, tensor: TensorSource, prefix: str) -> None:
        self.convs: list[CausalConv] = []

        def conv(name: str, stride: int = 1, dilation: int = 1) -> CausalConv:
            layer = CausalConv(
                len(self.convs),
                tensor(f"{prefix}{name}.conv.weight"),
                tensor(f"{prefix}{name}.conv.bias"),
                stride,
                dilation,
                config.pad_mode,
            )
            self.convs.append(layer)
            return layer

        # Checkpoint indices count the ELUs between convolutions, as transformers' list does.
        self.steps: list[tuple[str, CausalConv | tuple[CausalConv, CausalConv]]] = []
        self.steps.append(("conv", conv("layers.0")))
        index = 1
        for ratio in config.ratios:
            for j in range(config.num_residual_layers):
                dilation = config.dilation_growth_rate**j
                first = conv(f"layers.{index}.block.1", dilation=dilation)
                self.steps.append(("residual", (first, conv(f"layers.{index}.block.3"))))
                index += 1
            self.steps.append(("conv", conv(f"layers.{index + 1}", stride=ratio)))  # after ELU
            index += 2
        self.steps.append(("conv", conv(f"layers.{index + 1}")))

    def __call__(self, x: torch.Tensor, state: MimiState) -> torch.Tensor:
        for kind, layer in self.steps:
            if kind == "conv":
                x = layer(x if layer.index == 0 else F.elu(x), state)
            else:
                first, second = layer
                x = x + second(F.elu(first(F.elu(x), state)), state)
        return x


class MimiTransformerLayer:
    def __init__(self, config: MimiConfig, tensor: TensorSource, prefix: str) -> None:
        self.config = config
        attn = f"{prefix}self_attn."
        self.qkv = Linear(
            torch.cat([tensor(f"{attn}{p}_proj.weight") for p in "qkv"], dim=0)  # fused
        )
        self.out = Linear(tensor(f"{attn}o_proj.weight"))
        self.fc1 = Linear(tensor(f"{prefix}mlp.fc1.weight"))
        self.fc2 = Linear(tensor(f"{prefix}mlp.fc2.weight"))
        self.norm1 = (
            tensor(f"{prefix}input_layernorm.weight"),
            tensor(f"{prefix}input_layernorm.bias"),
        )
        self.norm2 = (
            tensor(f"{prefix}post_attention_layernorm.weight"),
            tensor(f"{prefix}post_attention_layernorm.bias"),
        )
        self.attn_scale = tensor(f"{prefix}self_attn_layer_scale.scale")
        self.mlp_scale = tensor(f"{prefix}mlp_layer_scale.scale")

    def __call__(self, x, ring: KVRing, start: int, cos, sin) -> torch.Tensor:
        c = self.config
        length = x.shape[1]
        h = F.layer_norm(x, (x.shape[-1],), *self.norm1, c.norm_eps)
        qkv = self.qkv(h).view(1, length, -1, c.head_dim).transpose(1, 2)  # [1, heads, T, D]
        rotated = c.num_heads + c.num_kv_heads
        qk = apply_rotary(qkv[:, :rotated], cos, sin)  # queries and keys in one pass
        q, k, v = qk[:, : c.num_heads], qk[:, c.num_heads :], qkv[:, rotated:]
        ring.write(k, v, start)
        attended = ring.attend(q, start, c.context).transpose(1, 2).reshape(1, length, -1)
        x = x + self.attn_scale * self.out(attended)
        h = F.layer_norm(x, (x.shape[-1],), *self.norm2, c.norm_eps)
        return x + self.mlp_scale * self.fc2(F.gelu(self.fc1(h)))


class ResidualQuantizer:
    """Projection then residual vector quantization by nearest codebook entry."""

    def __init__(self, config: MimiConfig, tensor: TensorSource, prefix: str, count: int) -> None:
        proj_name = f"{prefix}input_proj.weight"
        needs_proj = config.quantizer_dim != config.hidden_size
        self.proj = Linear(tensor(proj_name)[:, :, 0]) if needs_proj else None
        self.codebooks: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i in range(count):
            book = f"{prefix}layers.{i}.codebook."
            usage = tensor(f"{book}cluster_usage").clamp(min=1e-5)
            entries = tensor(f"{book}embed_sum") / usage[:, None]  # [size, dim]
            self.codebooks.append((entries, (entries * entries).sum(dim=1)))

    def __call__(self, latents: torch.Tensor) -> list[torch.Tensor]:
        """latents [frames, hidden] → one code tensor [frames] per codebook."""
        residual = self.proj(latents) if self.proj is not None else latents
        codes = []
        for entries, norms in self.codebooks:
            # argmin |r - e|² = argmin |e|² - 2 r·e (|r|² is the same for every entry); addmm
            # does it in one pass without temporaries (scaling by -2, a power of two, is exact)
            index = torch.addmm(norms, residual, entries.T, alpha=-2.0).argmin(dim=1)
            residual = residual - entries[index]
            codes.append(index)
        return codes


class MimiEncoder:
    """Streaming Mimi encoder: `encode(audio, state)` for whole 1920-sample frames."""

    def __init__(self, config: MimiConfig, num_codebooks: int, tensor: TensorSource) -> None:
        self.config = config
        self.seanet = SEANetEncoder(config, tensor, "codec_model.encoder.")
        self.layers = [
            MimiTransformerLayer(config, tensor, f"codec_model.encoder_transformer.layers.{i}.")
            for i in range(config.num_layers)
        ]
        self.downsample = CausalConv(
            len(self.seanet.convs),
            tensor("codec_model.downsample.conv.weight"),
            None,
            2,
            1,
            "replicate",
        )
        quantizer = "codec_model.quantizer."
        self.semantic = ResidualQuantizer(
            config, tensor, f"{quantizer}semantic_residual_vector_quantizer.", config.num_semantic
        )
        self.acoustic = ResidualQuantizer(
            config,
            tensor,
            f"{quantizer}acoustic_residual_vector_quantizer.",
            num_codebooks - config.num_semantic,
        )
        self.device = self.downsample.weight.device
        self.rotary = Rotary(config.head_dim, config.rope_theta, self.device)

    def new_state(self) -> MimiState:
        c = self.config
        size = c.context + _MAX_CHUNK - 1  # a chunk's first query still sees its whole window
        rings = [
            KVRing(c.num_kv_heads, size, c.head_dim, torch.float32, self.device)
            for _ in self.layers
        ]
        return MimiState(rings=rings)

    def encode(self, audio: torch.Tensor, state: MimiState) -> torch.Tensor:
        """audio [samples] float32, a whole number of frames → codes [frames, codebooks]."""
        x = self.seanet(audio.view(1, 1, -1), state).transpose(1, 2)  # [1, steps, hidden]
        chunks = []
        for chunk in x.split(_MAX_CHUNK, dim=1):
            length = chunk.shape[1]
            cos, sin = self.rotary.cos_sin(state.step, length, chunk.dtype)
            for layer, ring in zip(self.layers, state.rings, strict=True):
                chunk = layer(chunk, ring, state.step, cos, sin)
            state.step += length
            chunks.append(chunk)
        x = torch.cat(chunks, dim=1).transpose(1, 2)
        latents = self.downsample(x, state)[0].T  # [frames, hidden]
        codes = self.semantic(latents) + self.acoustic(latents)
        return torch.stack(codes, dim=1)
