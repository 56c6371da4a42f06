"""Checkpoint layout and loading for Kyutai STT (transformers' tensor names, safetensors only).

`checkpoint_layout(config)` lists every tensor the engine reads, with its shape; `_SKIPPED`
names what a checkpoint may hold that streaming recognition does not need (the Mimi decoder
half, codebooks beyond the LM's, bookkeeping buffers). Anything else, anything missing and
any shape that differs is an error naming the tensor.

Tensors are read one at a time, converted straight to the target dtype and device, and the
file is closed again, so peak memory stays close to the size of the converted weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import ModelError
from engine.models import kernels, panels, ring_attention
from engine.models.kernel_choice import kernel_for
from engine.models.kyutai.config import KyutaiConfig, MimiConfig, load_config
from engine.models.kyutai.layers import Linear
from engine.models.kyutai.lm import Embedding, TextLM
from engine.models.kyutai.mimi import MimiEncoder
from engine.models.loading import Checkpoint, returning_freed_blocks

Shape = tuple[int, ...]
DTYPES = ("float32", "bfloat16", "int8", "int4")  # int4: explicit only, never `auto`
_SKIPPED = re.compile(
    r"codec_model\.(decoder\.|decoder_transformer\.|upsample\.)"
    r"|codec_model\.quantizer\.\w+\.output_proj\.weight"
    r"|codec_model\.quantizer\.\w+\.layers\.\d+\.codebook\.initialized"
)
_ROWS_PER_READ = 2048  # large matrices are converted in slices of this many rows
# The embedding table's form where it differs from the LM's dtype. A step reads 33 of its
# rows, not the whole table, so its form costs no time: int8 keeps it in bfloat16 (33 int8
# rows summed each step were the largest error at the logits), int4 in int8.
_TABLE_FORMS = {"int8": "bfloat16", "int4": "int8"}


@dataclass
class KyutaiModel:
    config: KyutaiConfig
    mimi: MimiEncoder
    lm: TextLM
    dtype: str
    device: torch.device


def _mimi_layout(c: MimiConfig, num_codebooks: int) -> Iterator[tuple[str, Shape]]:
    seanet = "codec_model.encoder.layers."

    def conv(name: str, out: int, inp: int, kernel: int, bias: bool = True):
        yield f"{name}.conv.weight", (out, inp, kernel)
        if bias:
            yield f"{name}.conv.bias", (out,)

    yield from conv(f"{seanet}0", c.num_filters, 1, c.kernel_size)
    index, width = 1, c.num_filters
    for ratio in c.ratios:
        for _ in range(c.num_residual_layers):
            hidden = width // c.compress
            yield from conv(f"{seanet}{index}.block.1", hidden, width, c.residual_kernel_size)
            yield from conv(f"{seanet}{index}.block.3", width, hidden, 1)
            index += 1
        yield from conv(f"{seanet}{index + 1}", width * 2, width, ratio * 2)
        index, width = index + 2, width * 2
    yield from conv(f"{seanet}{index + 1}", c.hidden_size, width, c.last_kernel_size)

    h, q, kv = c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    for i in range(c.num_layers):
        p = f"codec_model.encoder_transformer.layers.{i}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            yield f"{p}{norm}.weight", (h,)
            yield f"{p}{norm}.bias", (h,)
        yield f"{p}self_attn.q_proj.weight", (q, h)
        yield f"{p}self_attn.k_proj.weight", (kv, h)
        yield f"{p}self_attn.v_proj.weight", (kv, h)
        yield f"{p}self_attn.o_proj.weight", (h, q)
        yield f"{p}mlp.fc1.weight", (c.intermediate_size, h)
        yield f"{p}mlp.fc2.weight", (h, c.intermediate_size)
        yield f"{p}self_attn_layer_scale.scale", (h,)
        yield f"{p}mlp_layer_scale.scale", (h,)
    yield from conv("codec_model.downsample", h, h, 4, bias=False)

    groups = {"semantic": c.num_semantic, "acoustic": c.num_quantizers - c.num_semantic}
    used = {"semantic": c.num_semantic, "acoustic": num_codebooks - c.num_semantic}
    for group, count in groups.items():
        p = f"codec_model.quantizer.{group}_residual_vector_quantizer."
        if c.quantizer_dim != h:
            yield f"{p}input_proj.weight", (c.quantizer_dim, h, 1)
        for i in range(count):
            # Codebooks past the LM's are in the file but never read.
            if i < used[group]:
                yield f"{p}layers.{i}.codebook.cluster_usage", (c.codebook_size,)
                yield f"{p}layers.{i}.codebook.embed_sum", (c.codebook_size, c.codebook_dim)


def _lm_layout(c: KyutaiConfig) -> Iterator[tuple[str, Shape]]:
    d, q, kv = c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    yield "model.embed_tokens.embed_tokens.weight", (c.embedding_rows, d)
    for i in range(c.num_layers):
        p = f"model.layers.{i}."
        yield f"{p}input_layernorm.weight", (d,)
        yield f"{p}post_attention_layernorm.weight", (d,)
        yield f"{p}self_attn.q_proj.linear.weight", (q, d)
        yield f"{p}self_attn.k_proj.linear.weight", (kv, d)
        yield f"{p}self_attn.v_proj.linear.weight", (kv, d)
        yield f"{p}self_attn.o_proj.linear.weight", (d, q)
        yield f"{p}mlp.fc1.weight", (c.ffn_dim, d)
        yield f"{p}mlp.fc2.weight", (d, c.ffn_dim // 2)
    yield "model.norm.weight", (d,)
    yield "lm_head.weight", (c.vocab_size, d)


def checkpoint_layout(config: KyutaiConfig) -> dict[str, Shape]:
    """Every tensor the engine reads, by checkpoint name, with its shape."""
    return dict(_mimi_layout(config.mimi, config.num_codebooks)) | dict(_lm_layout(config))


def is_skipped(name: str, config: KyutaiConfig) -> bool:
    """True for checkpoint tensors that streaming recognition does not need."""
    if _SKIPPED.match(name):
        return True
    book = re.match(
        r"codec_model\.quantizer\.(\w+)_residual_vector_quantizer\.layers\.(\d+)\.", name
    )
    if book is None:
        return False
    used = (
        config.mimi.num_semantic
        if book[1] == "semantic"
        else config.num_codebooks - config.mimi.num_semantic
    )
    limit = (
        config.mimi.num_semantic
        if book[1] == "semantic"
        else config.mimi.num_quantizers - config.mimi.num_semantic
    )
    return used <= int(book[2]) < limit


@returning_freed_blocks()
def load_model(folder: Path, device: str = "cpu", dtype: str = "float32") -> KyutaiModel:
    """Load a Kyutai STT folder for streaming: Mimi in float32, the LM in `dtype`."""
    if dtype not in DTYPES:
        raise ModelError(f"Unknown dtype '{dtype}'.", f"Choose one of: {', '.join(DTYPES)}.")
    if dtype in ("int8", "int4") and device != "cpu":
        raise ModelError(f"{dtype} weights run on the CPU only.", "Use --dtype bfloat16 on a GPU.")
    config = load_config(folder)
    reader = Checkpoint(folder)
    reader.check(checkpoint_layout(config), lambda name: is_skipped(name, config))
    target = torch.device(device)
    compute = compute_dtype(dtype, target, config.head_dim)
    # The LM's kernels are measured (once per machine) before any of its weights is resident:
    # the probe's random matrices then never add to the loaded model's peak memory.
    for form, shape in step_matrices(config, dtype):
        kernel_for(form, shape, target)

    def mimi_tensor(name: str) -> torch.Tensor:
        return reader.read(name).to(target, torch.float32)

    def lm_tensor(name: str) -> torch.Tensor:
        return reader.read(name).to(target, compute)

    def rows(names: list[str], form: str = dtype, kernel: str = "") -> tuple:
        return _read_rows(reader, names, form, compute, target, kernel)

    mimi = MimiEncoder(config.mimi, config.num_codebooks, mimi_tensor)
    table = rows(["model.embed_tokens.embed_tokens.weight"], _TABLE_FORMS.get(dtype, dtype))
    embedding = Embedding(*table, compute)

    def lm_linear(names: list[str]) -> Linear:
        shape = (sum(reader.shapes[n][0] for n in names), reader.shapes[names[0]][1])
        form = stored_form(dtype, shape, attention_input="self_attn.q_proj" in names[0])
        kernel = kernel_for(form, shape, target)
        weight, scales = rows(names, form, kernel)
        return Linear(weight, scales, kernel)

    rings = tuple(ring_dtype(dtype, config.head_dim, target, batch) for batch in (False, True))
    lm = TextLM(config, embedding, lm_linear, lm_tensor, compute, rings)
    return KyutaiModel(config, mimi, lm, dtype, target)


def compute_dtype(dtype: str, device: torch.device, head_dim: int) -> torch.dtype:
    """The activations' dtype. int8 and int4 weights take float32 activations on a CPU: their
    kernels get rows rounded as each needs them, while the residual stream, norms and
    attention keep float32 — closer to float32's step, and the norms and the panels take
    float32 rows without conversions. The exception is a CPU with native bfloat16 where
    ring_attention.c does not run: there PyTorch's attention reads the bfloat16 ring
    (`ring_dtype`) with bfloat16 steps, and float32 activations would only add conversions."""
    if dtype == "float32":
        return torch.float32
    quantized = dtype in ("int8", "int4") and device.type == "cpu"
    compiled = ring_attention.available(head_dim)
    native = kernels.native_bfloat16()
    return torch.float32 if quantized and (compiled or not native) else torch.bfloat16


def ring_dtype(dtype: str, head_dim: int, device: torch.device, batch: bool = False) -> torch.dtype:
    """The LM's keys and values, for one stream or a `batch` of streams (the server): float32
    for float32 weights (exact); on a CPU where ring_attention.c runs, int8 codes with a scale
    per vector (a quarter of float32's bytes) for int4 weights (the mode of fewest bytes, whose
    steps already deviate by more than the codes' rounding), and for a batch of int8 streams
    (at full rings a batch reads its streams' keys and values about as often as all its
    weights, so halving their bytes matters more than the codes' rounding; see the README);
    else bfloat16 — one int8 stream's too: the codes' rounding was a fifth of its step's
    deviation from float32 — where ring_attention.c runs or bfloat16 is native; where it is
    emulated and that kernel cannot run, float32 (PyTorch's attention reads a bfloat16 ring
    at a fraction of memory speed there; float32 is an exact widening of a bfloat16 step's
    keys, and int8 steps compute in float32 there)."""
    if dtype == "float32":
        return torch.float32
    compiled = device.type == "cpu" and ring_attention.available(head_dim)
    if compiled and (dtype == "int4" or (dtype == "int8" and batch)):
        return torch.int8
    if device.type != "cpu" or kernels.native_bfloat16():
        return torch.bfloat16
    return torch.bfloat16 if compiled else torch.float32


def step_matrices(config: KyutaiConfig, dtype: str) -> list[tuple[str, tuple[int, int]]]:
    """(stored form, (out, in)) of every matrix one LM step multiplies in `dtype`, QKV fused
    as the loader fuses it."""
    c = config
    d, q, kv = c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    qkv, *rest = [(q + 2 * kv, d), (d, q), (c.ffn_dim, d), (d, c.ffn_dim // 2)]
    layer = [(stored_form(dtype, qkv, attention_input=True), qkv)]
    layer += [(stored_form(dtype, shape, attention_input=False), shape) for shape in rest]
    head = (c.vocab_size, d)
    return layer * c.num_layers + [(stored_form(dtype, head, attention_input=False), head)]


def stored_form(dtype: str, shape: tuple[int, int], attention_input: bool) -> str:
    """The form an LM matrix is held in for `dtype`. Where the CPU has native bfloat16, int8
    keeps each layer's query/key/value projection in bfloat16: int8's per-row rounding
    spreads its error evenly over every matrix, and this quarter of the weights, held closer,
    brings int8's final hidden state nearest float32's for the least time. Where bfloat16 is
    emulated, a bfloat16 product costs as much per row as one row does, so the passes of
    several rows (a batch of streams, speculation) would pay several times int8's time for
    it: there it stays int8. int4 holds int8 where its CPU kernel
    cannot take the shape (rows not a multiple of 16, inputs not of its groups: the text
    head's 8001 rows), a small share of the bytes."""
    if dtype == "int8" and attention_input and kernels.native_bfloat16():
        return "bfloat16"
    if dtype == "int4" and (shape[0] % 16 or shape[1] % kernels.INT4_GROUP):
        return "int8"
    return dtype


def _read_rows(reader: Checkpoint, names: list[str], form: str, compute, target, kernel: str):
    """Matrices `names` stacked by rows (fused QKV), in `compute` dtype, int8 with per-row
    scales (or as int8 panels, for that `kernel`) or int4 with its scales and zeros (`form`).
    Converted a slice of rows at a time straight into the final tensors, so no full-size
    temporary copy ever exists."""
    total = sum(reader.shapes[n][0] for n in names)
    width = reader.shapes[names[0]][1]
    if form == "int8" and kernel == "panels":
        held = panels.empty_int8(total, width)
        row = 0
        for block in _blocks(reader, names):
            panels.quantize_into(held, row, block)
            row += len(block)
        return held, None
    if form == "int4":
        weight = torch.empty(total, width // 2, dtype=torch.uint8, device=target)
        groups = width // kernels.INT4_GROUP
        scales = torch.empty(groups, total, 2, dtype=torch.bfloat16, device=target)
    else:
        stored = torch.int8 if form == "int8" else getattr(torch, form)
        weight = torch.empty(total, width, dtype=stored, device=target)
        scales = None  # int8: bfloat16, as the int8 kernel takes them
        if form == "int8":
            scales = torch.empty(total, dtype=torch.bfloat16, device=target)
    row = 0
    for block in _blocks(reader, names):
        end = row + block.shape[0]
        if form == "int4":
            weight[row:end], scales[:, row:end] = kernels.quantize_int4_groups(block)
        elif form == "int8":
            quantized, block_scales = kernels.quantize_rows(block)
            weight[row:end], scales[row:end] = quantized, block_scales.to(scales.dtype)
        else:
            weight[row:end] = block.to(target, compute)
        row = end
    return weight, scales


def _blocks(reader: Checkpoint, names: list[str]) -> Iterator[torch.Tensor]:
    """The rows of matrices `names`, one after another, in slices of at most _ROWS_PER_READ."""
    for name in names:
        count = reader.shapes[name][0]
        for start in range(0, count, _ROWS_PER_READ):
            yield reader.read(name, slice(start, min(count, start + _ROWS_PER_READ)))
