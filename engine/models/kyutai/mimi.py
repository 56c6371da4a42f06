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

from engine.models import activations, panels
from engine.models.kernel_choice import kernel_for
from engine.models.kyutai.config import MimiConfig
from engine.models.kyutai.layers import KVRing, Linear, Rotary, Rows, RowZero

TensorSource = Callable[[str], torch.Tensor]
_MAX_CHUNK = 16  # 25 Hz steps the transformer takes at once (offline input is cut to this)
_STEPS_PER_FRAME = 2  # 25 Hz transformer steps in an 80 ms frame: the rows its matmuls take


@dataclass
class MimiState:
    """Everything Mimi remembers between calls, for one stream or a batch of `len(steps)`
    rows (`encode_rows`)."""

    tails: dict[int, torch.Tensor] = field(default_factory=dict)  # conv index → last inputs
    rings: list[KVRing] = field(default_factory=list)  # one per transformer layer
    steps: list[int] = field(default_factory=lambda: [0])  # each row's 25 Hz steps so far
    starting: set[int] = field(default_factory=set)  # batch rows whose stream has no tails yet
    step = RowZero("steps")  # one stream's 25 Hz steps so far (its next position)


@dataclass
class _Pass:
    """The batch rows one `encode_rows` call steps, and which of them start their stream."""

    rows: Rows
    starting: torch.Tensor | None  # [rows] bool, None when no row starts


class CausalConv:
    """Conv1d that sees only the past, over channels-last inputs [rows, length, in]: the
    input is led by the previous call's last `kernel - stride` samples (zeros, or the first
    sample repeated, at the very start).

    It is one matrix product over the input's windows, and each output sample is a row of the
    product, so the output is channels-last too and the next convolution reads it as it is. A
    window of channels-last input is `kernel` runs of `in` contiguous values: undilated, one
    contiguous run, which the panels (where they run) multiply where it lies; elsewhere the
    windows are gathered first (a copy of kernel / stride times the input), and a 1x1
    convolution's windows are the input itself."""

    def __init__(
        self, index: int, weight, bias, stride: int, dilation: int, mode: str, frame_rows: int
    ) -> None:
        self.index = index  # key of its tail in MimiState.tails
        self.bias = bias  # [out] or None
        self.kernel_size, self.device = weight.shape[2], weight.device  # weight [out, in, k]
        self.stride, self.dilation, self.mode = stride, dilation, mode
        self.padding = (self.kernel_size - 1) * dilation + 1 - stride
        # [out, k * in] in the windows' order (sample-major)
        flat = weight.permute(0, 2, 1).reshape(weight.shape[0], -1)
        cpu = self.device.type == "cpu" and panels.available()
        self.in_place = cpu and self.kernel_size > 1 and dilation == 1
        if self.in_place:
            self.flat: Linear | panels.Panels = panels.arrange(flat.float())
        else:  # on the kernel measured fastest here for a streamed frame's output samples
            self.flat = _measured_linear(flat, frame_rows)

    def __call__(
        self, x: torch.Tensor, state: MimiState, batch: _Pass | None, activated: bool = False
    ) -> torch.Tensor:
        """x [rows, length, in]: one stream (batch None) or the rows of `batch`; convolved
        after an ELU where `activated`."""
        if self.padding > 0:
            x = self._led(x, state, batch, activated)
        elif activated:
            x = activations.elu_into(x, torch.empty_like(x))
        if self.in_place:
            return panels.windows(x, self.flat, self.bias, self.stride)
        span = (self.kernel_size - 1) * self.dilation + 1
        windows = x.unfold(1, span, self.stride)[..., :: self.dilation]  # [rows, out, in, k]
        rows, length = windows.shape[:2]
        product = self.flat(windows.transpose(2, 3).reshape(rows * length, -1))
        if self.bias is not None:
            product = product + self.bias
        return product.view(rows, length, -1)

    def _led(
        self, x: torch.Tensor, state: MimiState, batch: _Pass | None, activated: bool
    ) -> torch.Tensor:
        """[rows, padding + length, in]: each row's tail, then x (its ELU written straight
        into place where `activated`); each row's new tail kept."""
        rows, length, channels = x.shape
        led = x.new_empty(rows, self.padding + length, channels)
        body = led[:, self.padding :]
        if activated:
            activations.elu_into(x, body)
        else:
            body.copy_(x)
        if batch is None:
            tail = state.tails.get(self.index)
            led[:, : self.padding] = self._start_tail(body) if tail is None else tail
            state.tails[self.index] = led[:, -self.padding :]
            return led
        tails = state.tails.get(self.index)
        if tails is None:
            tails = x.new_zeros(len(state.steps), self.padding, channels)
            state.tails[self.index] = tails
        index = batch.rows.rows
        held = tails[index]
        if batch.starting is not None:
            held = torch.where(batch.starting[:, None, None], self._start_tail(body), held)
        led[:, : self.padding] = held
        tails[index] = led[:, -self.padding :]
        return led

    def _start_tail(self, x: torch.Tensor) -> torch.Tensor:
        """What precedes a stream's first input: its first sample repeated, or zeros."""
        start = x[:, :1] if self.mode == "replicate" else x.new_zeros(x.shape[0], 1, x.shape[2])
        return start.expand(-1, self.padding, -1)


class SEANetEncoder:
    """Convolutions from audio [rows, samples, 1] to latents [rows, samples / 960, hidden]."""

    def __init__(self, config: MimiConfig, tensor: TensorSource, prefix: str) -> None:
        self.convs: list[CausalConv] = []
        samples = config.frame_size  # a streamed frame's, at the next conv's input

        def conv(name: str, stride: int = 1, dilation: int = 1) -> CausalConv:
            nonlocal samples
            samples //= stride
            layer = CausalConv(
                len(self.convs),
                tensor(f"{prefix}{name}.conv.weight"),
                tensor(f"{prefix}{name}.conv.bias"),
                stride,
                dilation,
                config.pad_mode,
                samples,
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

    def __call__(self, x: torch.Tensor, state: MimiState, batch: _Pass | None) -> torch.Tensor:
        for kind, layer in self.steps:
            if kind == "conv":  # every convolution but the first follows an ELU
                x = layer(x, state, batch, activated=layer.index > 0)
            else:
                first, second = layer
                inner = first(x, state, batch, activated=True)
                x = x + second(inner, state, batch, activated=True)
        return x


class MimiTransformerLayer:
    def __init__(self, config: MimiConfig, tensor: TensorSource, prefix: str) -> None:
        self.config = config
        attn = f"{prefix}self_attn."
        self.qkv = _measured_linear(
            torch.cat([tensor(f"{attn}{p}_proj.weight") for p in "qkv"], dim=0)  # fused
        )
        self.out = _measured_linear(tensor(f"{attn}o_proj.weight"))
        self.fc1 = _measured_linear(tensor(f"{prefix}mlp.fc1.weight"))
        self.fc2 = _measured_linear(tensor(f"{prefix}mlp.fc2.weight"))
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

    def __call__(self, x, ring: KVRing, start: int | Rows, cos, sin) -> torch.Tensor:
        """x [rows, T, hidden] from position `start`, or each row from its own (`Rows`)."""
        c = self.config
        rows, length = x.shape[:2]
        h = F.layer_norm(x, (x.shape[-1],), *self.norm1, c.norm_eps)
        qkv = self.qkv(h).view(rows, length, -1, c.head_dim)
        q = ring.write_step(qkv, c.num_heads, cos, sin, start)
        attended = ring.attend(q, start, c.context).transpose(1, 2).reshape(rows, length, -1)
        x = x + self.attn_scale * self.out(attended)
        h = F.layer_norm(x, (x.shape[-1],), *self.norm2, c.norm_eps)
        return x + self.mlp_scale * self.fc2(F.gelu(self.fc1(h)))


def _measured_linear(weight: torch.Tensor, frame_rows: int = _STEPS_PER_FRAME) -> Linear:
    """A matrix on the kernel measured fastest here for the rows a streamed frame gives it
    (the transformer's: a frame's steps): together Mimi's matrices outgrow the cache, so each
    frame reads them from memory."""
    kernel = kernel_for("float32", tuple(weight.shape), weight.device, frame_rows)
    return Linear(weight, kernel=kernel)


class ResidualQuantizer:
    """Projection then residual vector quantization by nearest codebook entry."""

    def __init__(self, config: MimiConfig, tensor: TensorSource, prefix: str, count: int) -> None:
        proj_name = f"{prefix}input_proj.weight"
        needs_proj = config.quantizer_dim != config.hidden_size
        self.proj = Linear(tensor(proj_name)[:, :, 0]) if needs_proj else None
        entries = []
        for i in range(count):
            book = f"{prefix}layers.{i}.codebook."
            usage = tensor(f"{book}cluster_usage").clamp(min=1e-5)
            entries.append(tensor(f"{book}embed_sum") / usage[:, None])  # [size, dim]
        # Where the panels run, the whole search is one call of their kernel: each codebook
        # screened by its int8 copy (a quarter of its bytes), then only the candidates scored
        # in float32, giving the float32 search's codes. Elsewhere each codebook is a matrix on
        # the kernel measured fastest here for one row, its entries read back by index from
        # whatever layout that kernel holds.
        cpu = entries[0].device.type == "cpu"
        self.panels = panels.Codebooks(entries) if cpu and panels.available() else None
        self.codebooks: list[tuple[Linear, torch.Tensor]] = []
        if self.panels is None:
            kernel = kernel_for("float32", tuple(entries[0].shape), entries[0].device, 1)
            for book in entries:
                norms = (book * book).sum(dim=1)
                self.codebooks.append((Linear(book, kernel=kernel), norms))

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [frames, hidden] → codes [frames, codebooks]."""
        residual = self.proj(latents) if self.proj is not None else latents
        if self.panels is not None:
            return self.panels.nearest(residual)
        codes = []
        for entries, norms in self.codebooks:
            # argmin |r - e|² = argmin |e|² - 2 r·e (|r|² is the same for every entry; scaling
            # by -2, a power of two, is exact)
            index = torch.add(norms, entries(residual), alpha=-2.0).argmin(dim=1)
            residual = residual - entries.rows(index)
            codes.append(index)
        return torch.stack(codes, dim=1)


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
            1,  # a frame's one code step
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
        self.device = self.downsample.device
        self.rotary = Rotary(config.head_dim, config.rope_theta, self.device)

    def new_state(self, rows: int = 1) -> MimiState:
        """A fresh stream, or `rows` stream slots for `encode_rows` (each started by
        `restart_row`)."""
        c = self.config
        size = c.context + _MAX_CHUNK - 1  # a chunk's first query still sees its whole window
        rings = [
            KVRing(c.num_kv_heads, size, c.head_dim, torch.float32, self.device, rows)
            for _ in self.layers
        ]
        return MimiState(rings=rings, steps=[0] * rows)

    def restart_row(self, state: MimiState, row: int) -> None:
        """Row `row` of a batch starts a new stream: empty rings, tails from its first input."""
        for ring in state.rings:
            ring.clear(row)
        state.steps[row] = 0
        state.starting.add(row)

    def encode(self, audio: torch.Tensor, state: MimiState) -> torch.Tensor:
        """audio [samples] float32, a whole number of frames → codes [frames, codebooks].

        Long audio (a file, or a stream that fell behind) goes through in slices of
        _MAX_CHUNK transformer steps: the state carries every conv tail and key across
        slices, so the codes are those of one pass, and memory stays that of one slice
        (the convolutions' activations of 20 s at once took 0.6 GB)."""
        slice_samples = _MAX_CHUNK * self.config.frame_size // _STEPS_PER_FRAME
        codes = [self._encode_slice(piece, state) for piece in audio.split(slice_samples)]
        return torch.cat(codes)

    def _encode_slice(self, audio: torch.Tensor, state: MimiState) -> torch.Tensor:
        x = self.seanet(audio.view(1, -1, 1), state, None)  # [1, steps, hidden]
        length = x.shape[1]
        cos, sin = self.rotary.cos_sin(state.step, length, x.dtype)
        x = self._transformer(x, state.rings, state.step, cos, sin)
        state.step += length
        return self._quantize(self.downsample(x, state, None))[0]

    def encode_rows(self, audio: torch.Tensor, state: MimiState, rows: list[int]) -> torch.Tensor:
        """One frame of audio [rows, frame_size] for each of `rows` (ascending rows of a
        batched state) in one pass → codes [rows, 1, codebooks]. Other rows are untouched."""
        at = Rows(rows, [state.steps[row] for row in rows], self.device)
        starting = [row in state.starting for row in rows]
        flags = torch.tensor(starting, device=self.device) if any(starting) else None
        batch = _Pass(at, flags)
        x = self.seanet(audio[:, :, None], state, batch)  # [rows, steps, hidden]
        cos, sin = self.rotary.at_rows(at, x.dtype, x.shape[1])
        x = self._transformer(x, state.rings, at, cos, sin)
        for row in rows:
            state.steps[row] += x.shape[1]
            state.starting.discard(row)
        return self._quantize(self.downsample(x, state, batch))

    def _transformer(self, x, rings: list[KVRing], start: int | Rows, cos, sin) -> torch.Tensor:
        for layer, ring in zip(self.layers, rings, strict=True):
            x = layer(x, ring, start, cos, sin)
        return x

    def _quantize(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [rows, frames, hidden] → codes [rows, frames, codebooks], every row's
        frames quantized together."""
        rows, frames, hidden = latents.shape
        flat = latents.reshape(rows * frames, hidden)
        codes = torch.cat((self.semantic(flat), self.acoustic(flat)), dim=1)
        return codes.view(rows, frames, -1)
