"""Attention over a bfloat16 key/value ring (engine/models/ring_attention.py): the float64
attention of the same ring for every layout a ring takes (wrapped, rolled back, young, several
streams at their own positions, grouped heads), and the ring dtype each weight form gets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.models import kernels, ring_attention
from engine.models.kyutai import weights
from engine.models.kyutai.layers import KVRing, Rows

needs_kernel = pytest.mark.skipif(
    not ring_attention.available(64),
    reason="the ring attention kernel needs Linux on x86 with AVX2 and FMA, and a C compiler",
)


def reference(queries, keys, values, positions, rows, starts, seen, window) -> torch.Tensor:
    """Float64 attention, one query row and step at a time, over the slots it may see."""
    out = torch.zeros(queries.shape, dtype=torch.float64)
    group = queries.shape[1] // keys.shape[1]
    for i, (row, start) in enumerate(zip(rows.tolist(), starts.tolist(), strict=True)):
        for step in range(queries.shape[2]):
            at = start + step
            held = positions[row, :seen]
            visible = (held >= 0) & (held <= at) & (held > at - window)
            key = keys[row, :, :seen].double().repeat_interleave(group, dim=0)
            value = values[row, :, :seen].double().repeat_interleave(group, dim=0)
            query = queries[i, :, step : step + 1].double()
            out[i, :, step] = F.scaled_dot_product_attention(
                query[:, None], key[:, None], value[:, None], attn_mask=visible[None, None]
            )[:, 0, 0]
    return out


@needs_kernel
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(4, 4, 64), (4, 2, 16), (2, 1, 128)])
def test_ring_attention_is_the_attention_of_the_slots_each_query_sees(steps, heads, kv_heads, dim):
    generator = torch.Generator().manual_seed(steps * 100 + dim)
    size, window = 12, 9
    keys = torch.randn(3, kv_heads, size, dim, generator=generator).bfloat16()
    values = torch.randn(3, kv_heads, size, dim, generator=generator).bfloat16()
    positions = torch.full((3, size), -1)
    positions[0] = torch.arange(30, 30 + size) % size + 24  # wrapped: 24..35 in slot order
    positions[1, :5] = torch.arange(5)  # young: five slots filled
    positions[2] = torch.arange(40, 40 + size)
    positions[2, 3] = 60  # a rolled-back slot: later than every query, never seen
    rows, starts = torch.tensor([0, 1, 2]), torch.tensor([33, 4 - steps + 1, 49])
    queries = torch.randn(3, heads, steps, dim, generator=generator)
    ring = (keys, values, positions)
    got = ring_attention.attend(queries, *ring, rows, starts, size, window)
    exact = reference(queries, *ring, rows, starts, size, window)
    assert got.shape == queries.shape and got.dtype == torch.float32
    assert (got.double() - exact).abs().max() <= 1e-5 * exact.abs().max()
    # a subset of rows, in the order given, and the first `seen` slots only
    subset = ring_attention.attend(queries[1:2], *ring, rows[1:2], starts[1:2], 5, window)
    assert torch.allclose(subset, got[1:2], atol=1e-6)


@needs_kernel
@pytest.mark.parametrize("batched", [False, True])
def test_a_bfloat16_ring_attends_as_a_float32_ring_of_the_same_values(monkeypatch, batched):
    """Where bfloat16 is emulated, a bfloat16 ring is read by the compiled kernel; it gives what
    PyTorch's attention gives over a float32 ring of the same (bfloat16-exact) keys and values,
    for one stream and for a batch of streams at their own positions."""
    monkeypatch.setattr(kernels, "native_bfloat16", lambda: False)
    generator = torch.Generator().manual_seed(1)
    streams = 2 if batched else 1
    rings = [KVRing(2, 10, 16, dtype, torch.device("cpu"), rows=streams) for dtype in
             (torch.bfloat16, torch.float32)]  # fmt: skip
    for position in range(14):  # wraps the 10 slots
        shape = (streams, 2, 1, 16)
        key, value = (torch.randn(shape, generator=generator).bfloat16() for _ in "kv")
        for ring in rings:
            ring.write(key.float(), value.float(), position)
    queries = torch.randn(streams, 4, 1, 16, generator=generator)
    start = Rows([0, 1], [13, 13], torch.device("cpu")) if batched else 13
    compiled, plain = (ring.attend(queries, start, window=8) for ring in rings)
    assert rings[0]._compiled and not rings[1]._compiled
    torch.testing.assert_close(compiled, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("dtype", "native", "compiled", "expected"),
    [
        ("float32", False, True, torch.float32),  # exact: float32 weights keep float32 keys
        ("int8", False, True, torch.bfloat16),
        ("int8", False, False, torch.float32),
        ("bfloat16", False, False, torch.float32),
        ("int8", True, False, torch.bfloat16),
    ],
)
def test_each_weight_form_holds_its_keys_where_they_are_read_fastest(
    monkeypatch, dtype, native, compiled, expected
) -> None:
    monkeypatch.setattr(kernels, "native_bfloat16", lambda: native)
    monkeypatch.setattr(ring_attention, "available", lambda head_dim: compiled)
    assert weights.ring_dtype(dtype, 64, torch.device("cpu")) == expected
