"""Attention over a ring of bfloat16 keys and values at the speed of reading it, on x86 CPUs
with AVX2 (`ring_attention.c`, built on the machine by native.py): where bfloat16 is
emulated, PyTorch's attention reads such a ring at about 1 GB/s, so without this kernel a
ring there is held in float32 (twice the bytes)."""

from __future__ import annotations

import torch

from engine.models import native

_MAX_DIM = 128  # ring_attention.c's MAX_DIM


def available(head_dim: int) -> bool:
    """Whether the kernel runs here for heads of `head_dim`."""
    return head_dim % 8 == 0 and head_dim <= _MAX_DIM and native.library() is not None


def attend(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    positions: torch.Tensor,
    rows: torch.Tensor,
    starts: torch.Tensor,
    seen: int,
    window: int,
) -> torch.Tensor:
    """queries [n, heads, T, D] of ring rows `rows` [n] at positions `starts` [n] onwards,
    over the first `seen` slots of bfloat16 keys and values [ring rows, kv heads, size, D]
    whose `positions` [ring rows, size] each query may see (causal, within `window`) →
    [n, heads, T, D] in the queries' dtype."""
    n, heads, steps, dim = queries.shape
    flat = queries.to(torch.float32).contiguous()
    out = torch.empty_like(flat)
    kv_heads, size = keys.shape[1], keys.shape[2]
    rows, starts = rows.to(torch.int64).contiguous(), starts.to(torch.int64).contiguous()
    native.library().ring_attend(
        flat.data_ptr(), keys.data_ptr(), values.data_ptr(), positions.data_ptr(),
        rows.data_ptr(), starts.data_ptr(), out.data_ptr(),
        n, heads, kv_heads, steps, size, seen, dim, window, dim**-0.5,
    )  # fmt: skip
    return out.to(queries.dtype)
