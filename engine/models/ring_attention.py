"""Attention over a ring of keys and values at the speed of reading it, on x86 CPUs with AVX2
(`ring_attention.c`, built on the machine by native.py), and a step's writes to it. Where
bfloat16 is emulated, PyTorch's attention reads a bfloat16 ring at about 1 GB/s, so without
this kernel a ring there is held in float32 (twice the bytes); an int8 ring (codes and a scale
per key and value vector) halves bfloat16's bytes again; over a short float32 ring the kernel
costs a fraction of PyTorch's set-up."""

from __future__ import annotations

import ctypes

import torch

from engine.models import native

_MAX_DIM = 128  # ring_attention.c's MAX_DIM
_FORMATS = {torch.bfloat16: 0, torch.int8: 1, torch.float32: 2}  # its enum format


def available(head_dim: int) -> bool:
    """Whether the kernel runs here for heads of `head_dim`."""
    return head_dim % 8 == 0 and head_dim <= _MAX_DIM and native.library() is not None


def attend(
    queries: torch.Tensor,
    ring: tuple[torch.Tensor, ...],
    rows: torch.Tensor,
    starts: torch.Tensor,
    seen: int,
    window: int,
) -> torch.Tensor:
    """queries [n, heads, T, D] of ring rows `rows` [n] at positions `starts` [n] onwards, over
    the first `seen` slots of a ring (keys, values, positions): keys and values [ring rows,
    kv heads, size, D] bfloat16 or float32, or int8 with a fourth tensor of scales [2 (keys',
    values'), ring rows, kv heads, size]; positions [ring rows, size], which each query may
    see (causal, within `window`) → [n, heads, T, D] in the queries' dtype."""
    keys, values, positions, *scales = ring
    n, heads, steps, dim = queries.shape
    flat = queries.to(torch.float32).contiguous()
    out = torch.empty_like(flat)
    kv_heads, size = keys.shape[1], keys.shape[2]
    rows, starts = _indices(rows), _indices(starts)
    key_scales, value_scales = _scale_pointers(scales)
    native.library().ring_attend(
        flat.data_ptr(), keys.data_ptr(), values.data_ptr(), key_scales, value_scales,
        positions.data_ptr(), rows.data_ptr(), starts.data_ptr(), out.data_ptr(),
        n, heads, kv_heads, steps, size, seen, dim, window, dim**-0.5, _FORMATS[keys.dtype],
    )  # fmt: skip
    return out.to(queries.dtype)


def write(
    ring: tuple[torch.Tensor, ...],
    keys: torch.Tensor,
    values: torch.Tensor,
    rows: torch.Tensor,
    starts: torch.Tensor,
    queries: torch.Tensor | None = None,
    angles: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """Write keys and values [n, kv heads, T, D] (float32, any strides but the last) of ring
    rows `rows` [n] at positions `starts` [n] onwards into a ring (as `attend` takes it: int8
    vectors as round-half-even codes of their largest magnitude / 127, bfloat16 rounded to
    nearest even). With `angles` (cos, sin: [T, D], or [n, 1, T, D] for each row's own), the
    keys are rotated on the way, and `queries` [n, heads, T, D] too: → the rotated queries
    [n, heads, T, D], contiguous."""
    ring_keys, ring_values, positions, *scales = ring
    n, kv_heads, steps, dim = keys.shape
    heads = 0 if queries is None else queries.shape[1]
    out = torch.empty(n, heads, steps, dim) if heads else None
    sources = (queries if heads else keys, keys, values)
    strides = (ctypes.c_int64 * 9)(*(stride for t in sources for stride in t.stride()[:3]))
    cos = sin = None
    angle_stride = 0
    if angles is not None:
        cos, sin = (t.contiguous() for t in angles)
        angle_stride = steps * dim if cos.dim() == 4 else 0
    key_scales, value_scales = _scale_pointers(scales)
    rows, starts = _indices(rows), _indices(starts)
    native.library().ring_step(
        sources[0].data_ptr(), keys.data_ptr(), values.data_ptr(), strides,
        _pointer(cos), _pointer(sin), angle_stride, _pointer(out),
        ring_keys.data_ptr(), ring_values.data_ptr(), key_scales, value_scales,
        positions.data_ptr(), rows.data_ptr(), starts.data_ptr(),
        n, heads, kv_heads, steps, ring_keys.shape[2], dim, _FORMATS[ring_keys.dtype],
    )  # fmt: skip
    return out


def _scale_pointers(scales: list[torch.Tensor]) -> tuple[int | None, int | None]:
    """Where an int8 ring's keys' and values' scales start (None, None for other rings)."""
    if not scales:
        return None, None
    first = scales[0].data_ptr()
    return first, first + scales[0].stride(0) * scales[0].element_size()


def _pointer(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _indices(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.int64).contiguous()
