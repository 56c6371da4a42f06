"""Attention over a key/value ring (engine/models/ring_attention.py), bfloat16, int8 or
float32: the float64 attention of the same ring for every layout a ring takes (wrapped, rolled
back, young, several streams at their own positions, grouped heads); the int8 ring's writes;
and the ring dtype each weight form gets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.models import kernels, ring_attention
from engine.models.kyutai import weights
from engine.models.kyutai.layers import KVRing, Rotary, Rows, apply_rotary

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


def held(dtype: torch.dtype, generator: torch.Generator, shape: tuple[int, ...]):
    """Random keys or values as a ring of `dtype` holds them, with the int8 ring's scales
    [rows, heads, size] (None for the others), and the float64 values they stand for."""
    if dtype != torch.int8:
        ring = torch.randn(shape, generator=generator).to(dtype)
        return ring, None, ring.double()
    codes = torch.randint(-127, 128, shape, generator=generator, dtype=torch.int8)
    scales = torch.rand(shape[:-1], generator=generator) / 50
    return codes, scales, codes.double() * scales.double()[..., None]


FORMATS = [torch.bfloat16, torch.int8, torch.float32]


@needs_kernel
@pytest.mark.parametrize("dtype", FORMATS)
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(4, 4, 64), (4, 2, 16), (2, 1, 128)])
def test_ring_attention_is_the_attention_of_the_slots_each_query_sees(
    dtype, steps, heads, kv_heads, dim
):
    generator = torch.Generator().manual_seed(steps * 100 + dim)
    size, window = 12, 9
    keys, key_scales, exact_keys = held(dtype, generator, (3, kv_heads, size, dim))
    values, value_scales, exact_values = held(dtype, generator, (3, kv_heads, size, dim))
    positions = torch.full((3, size), -1)
    positions[0] = torch.arange(30, 30 + size) % size + 24  # wrapped: 24..35 in slot order
    positions[1, :5] = torch.arange(5)  # young: five slots filled
    positions[2] = torch.arange(40, 40 + size)
    positions[2, 3] = 60  # a rolled-back slot: later than every query, never seen
    rows, starts = torch.tensor([0, 1, 2]), torch.tensor([33, 4 - steps + 1, 49])
    queries = torch.randn(3, heads, steps, dim, generator=generator)
    ring = (keys, values, positions)
    if dtype == torch.int8:
        ring += (torch.stack((key_scales, value_scales)),)
    got = ring_attention.attend(queries, ring, rows, starts, size, window)
    exact = reference(queries, exact_keys, exact_values, positions, rows, starts, size, window)
    assert got.shape == queries.shape and got.dtype == torch.float32
    assert (got.double() - exact).abs().max() <= 1e-5 * exact.abs().max()
    # a subset of rows, in the order given, and the first `seen` slots only
    subset = ring_attention.attend(queries[1:2], ring, rows[1:2], starts[1:2], 5, window)
    assert torch.allclose(subset, got[1:2], atol=1e-6)


def quantized(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each vector of x [..., D] as int8 codes of x / (its largest magnitude / 127), rounded
    half to even, and those scales (zero codes and scale for a zero vector)."""
    scales = x.abs().amax(dim=-1) / 127
    codes = torch.where(scales[..., None] > 0, x / scales[..., None], 0).round()
    return codes.to(torch.int8), scales


@needs_kernel
@pytest.mark.parametrize("batched", [False, True])
def test_an_int8_ring_stores_each_vector_as_codes_and_a_scale(batched):
    """Writes of one step and of several (wrapping the ring), for one stream and for a batch
    at its own positions: each key and value lands in its position's slot as its codes and
    scale, positions record it, and other rows stay as they were."""
    generator = torch.Generator().manual_seed(3)
    ring = KVRing(2, 6, 16, torch.int8, torch.device("cpu"), rows=3 if batched else 1)
    untouched = ring.keys.clone()
    first, steps = (4, 3) if batched else (0, 1)
    expected = {}
    for start in (first, first + steps, first + 2 * steps):  # slots 4, 5, 0 then 1, 2, 3 ...
        rows = [0, 2] if batched else [0]
        keys, values = (torch.randn(len(rows), 2, steps, 16, generator=generator) for _ in "kv")
        keys[-1, 1, 0] = 0  # a zero vector
        at = Rows(rows, [start, start + 1][: len(rows)], torch.device("cpu")) if batched else start
        ring.write(keys, values, at)
        for i, row in enumerate(rows):
            for t in range(steps):
                position = start + i * batched + t
                expected[row, position % 6] = (position, keys[i, :, t], values[i, :, t])
    for (row, slot), (position, keys, values) in expected.items():
        assert ring.positions[row, slot] == position
        for part, tensor, scales in ((keys, ring.keys, 0), (values, ring.values, 1)):
            codes, scale = quantized(part)
            assert torch.equal(tensor[row, :, slot], codes)
            assert torch.equal(ring.scales[scales, row, :, slot], scale)
    if batched:
        assert torch.equal(ring.keys[1], untouched[1]) and (ring.positions[1] == -1).all()


def dequantized(ring: KVRing, part: int) -> torch.Tensor:
    """The float64 keys (part 0) or values (1) a ring holds."""
    held = (ring.keys, ring.values)[part].double()
    return held if ring.scales is None else held * ring.scales[part].double()[..., None]


def stored_step(dtype: torch.dtype, vectors: torch.Tensor) -> torch.Tensor:
    """How far a ring of `dtype` may hold each of `vectors` [..., D] from it: a step of its
    codes (int8), of bfloat16's mantissa at its largest element, or a float32 rounding."""
    largest = vectors.abs().amax(dim=-1, keepdim=True).double()
    factors = {torch.int8: 1 / 127, torch.bfloat16: 2**-8, torch.float32: 0.0}
    return largest * factors[dtype] + 1e-6


@needs_kernel
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("dtype", FORMATS)
def test_a_step_is_rotated_and_written_in_one_call(batched, dtype):
    """A layer step's projections, two positions at a time past the ring's size, for one
    stream and for a batch at its own positions: the queries it returns and the keys and
    values it leaves in each slot are PyTorch's rotation of them, stored in the ring's
    format."""
    generator = torch.Generator().manual_seed(7)
    streams, heads, kv_heads, dim, size = (2 if batched else 1), 4, 2, 16, 10
    ring = KVRing(kv_heads, size, dim, dtype, torch.device("cpu"), rows=streams)
    rotary = Rotary(dim, 10000.0, torch.device("cpu"))
    for position in range(0, 14, 2):
        qkv = torch.randn(streams, 2, heads + 2 * kv_heads, dim, generator=generator)
        if batched:  # the second stream three positions ahead
            at = Rows([0, 1], [position, position + 3], qkv.device)
            cos, sin = rotary.at_rows(at, torch.float32, 2)
        else:
            at, (cos, sin) = position, rotary.at(position, torch.float32, 2)
        queries = ring.write_step(qkv, heads, cos, sin, at)
        split = qkv.transpose(1, 2)
        rotated = apply_rotary(split[:, : heads + kv_heads], cos, sin)
        torch.testing.assert_close(queries, rotated[:, :heads], rtol=0, atol=1e-6)
        written = (rotated[:, heads:], split[:, heads + kv_heads :])  # keys, values
        for row in range(streams):
            for t in range(2):
                at_position = position + 3 * row * batched + t
                slot = at_position % size
                assert ring.positions[row, slot] == at_position
                for part, expected in enumerate(written):
                    held = dequantized(ring, part)[row, :, slot]
                    vectors = expected[row, :, t]
                    assert ((held - vectors.double()).abs() <= stored_step(dtype, vectors)).all()


@needs_kernel
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("dtype", FORMATS)
def test_each_ring_attends_as_the_attention_of_what_it_holds(monkeypatch, batched, dtype):
    """A ring of every format the kernel reads (a bfloat16 one where bfloat16 is emulated),
    written position by position past its size, gives the float64 attention of the keys and
    values it holds, for one stream and for a batch of streams at their own positions."""
    monkeypatch.setattr(kernels, "native_bfloat16", lambda: False)
    generator = torch.Generator().manual_seed(1)
    streams = 2 if batched else 1
    ring = KVRing(2, 10, 16, dtype, torch.device("cpu"), rows=streams)
    for position in range(14):  # wraps the 10 slots
        key, value = (torch.randn(streams, 2, 1, 16, generator=generator) for _ in "kv")
        ring.write(key, value, Rows([0, 1], [position] * 2, key.device) if batched else position)
    queries = torch.randn(streams, 4, 1, 16, generator=generator)
    start = Rows([0, 1], [13, 13], torch.device("cpu")) if batched else 13
    got = ring.attend(queries, start, window=8)
    keys, values = ring.keys.double(), ring.values.double()
    if dtype == torch.int8:
        keys, values = (
            part * ring.scales[i].double()[..., None] for i, part in enumerate((keys, values))
        )
    rows, starts = torch.arange(streams), torch.full((streams,), 13)
    exact = reference(queries, keys, values, ring.positions, rows, starts, 10, 8)
    assert ring._compiled
    assert (got.double() - exact).abs().max() <= 1e-5 * exact.abs().max()


@needs_kernel
def test_where_bfloat16_is_native_float32_steps_read_a_bfloat16_ring_on_the_kernel(monkeypatch):
    """An int8 model's bfloat16 ring, stepped in float32, is read by ring_attention.c even
    where bfloat16 is native; bfloat16 steps read it on PyTorch's attention there. Both give
    the attention of what the ring holds."""
    monkeypatch.setattr(kernels, "native_bfloat16", lambda: True)
    calls = []
    attend = ring_attention.attend
    monkeypatch.setattr(ring_attention, "attend", lambda *a: calls.append(1) or attend(*a))
    generator = torch.Generator().manual_seed(5)
    ring = KVRing(2, 10, 16, torch.bfloat16, torch.device("cpu"))
    for position in range(14):
        key, value = (torch.randn(1, 2, 1, 16, generator=generator) for _ in "kv")
        ring.write(key, value, position)
    queries = torch.randn(1, 4, 1, 16, generator=generator)
    exact = reference(
        queries, ring.keys.double(), ring.values.double(), ring.positions,
        torch.zeros(1, dtype=torch.long), torch.full((1,), 13), 10, 8,
    )  # fmt: skip
    for steps, kernel_calls, tolerance in ((torch.float32, 1, 1e-5), (torch.bfloat16, 1, 2e-2)):
        got = ring.attend(queries.to(steps), 13, window=8)
        assert len(calls) == kernel_calls
        assert (got.double() - exact).abs().max() <= tolerance * exact.abs().max()


@pytest.mark.parametrize(
    ("dtype", "native", "compiled", "one", "batch"),
    [
        # float32 weights keep exact float32 keys
        ("float32", False, True, torch.float32, torch.float32),
        # int8 codes would add a fifth to one stream's deviation; a batch reads its rings as
        # often as its weights, and codes halve that
        ("int8", False, True, torch.bfloat16, torch.int8),
        ("int8", True, True, torch.bfloat16, torch.int8),
        ("int4", True, True, torch.int8, torch.int8),  # a quarter of float32's bytes
        ("int4", False, True, torch.int8, torch.int8),
        ("int8", False, False, torch.float32, torch.float32),
        ("int8", True, False, torch.bfloat16, torch.bfloat16),
        ("bfloat16", False, True, torch.bfloat16, torch.bfloat16),
        ("bfloat16", False, False, torch.float32, torch.float32),
    ],
)
def test_each_weight_form_holds_its_keys_where_they_are_read_fastest(
    monkeypatch, dtype, native, compiled, one, batch
) -> None:
    monkeypatch.setattr(kernels, "native_bfloat16", lambda: native)
    monkeypatch.setattr(ring_attention, "available", lambda head_dim: compiled)
    cpu = torch.device("cpu")
    assert weights.ring_dtype(dtype, 64, cpu) == one
    assert weights.ring_dtype(dtype, 64, cpu, batch=True) == batch
