"""Building blocks shared by the Mimi encoder and the text LM: linear layers (float or int8),
rotary embeddings at absolute positions, and the KV ring that bounds attention memory."""

from __future__ import annotations

from math import inf

import torch
import torch.nn.functional as F

from engine.models import kernel_choice, kernels, panels, ring_attention


class Linear:
    """y = x Wᵀ. W is float, int8 with one scale per output row, or int4 with a scale and zero
    per 32 inputs (weight-only quantization: activations stay bfloat16), multiplied on
    `kernel` (kernel_choice.py measures which reads fastest here; the form's default
    otherwise) and held in the layout that kernel reads."""

    def __init__(
        self, weight: torch.Tensor, scales: torch.Tensor | None = None, kernel: str | None = None
    ) -> None:
        forms = {torch.int8: "int8", torch.uint8: "int4"}  # int4: two codes per byte
        form = forms.get(weight.dtype) or str(weight.dtype).removeprefix("torch.")
        self.kernel = kernel or kernel_choice.DEFAULTS.get(form, "linear")
        self.weight = kernel_choice.held(self.kernel, weight)  # [out, in]; matmul's [in, out]
        self.scales = scales  # [out] or None
        self.product = kernel_choice.product(self.kernel, self.weight, scales)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.product(x)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Rows `index` of a float W [out, in], from whatever layout its kernel holds."""
        if isinstance(self.weight, panels.Panels):
            return self.weight.rows(index)
        return self.weight[:, index].T if self.kernel == "matmul" else self.weight[index]


class Rotary:
    """Rotary position embedding (rotate-half form) at absolute positions: positions grow
    without bound, so cos/sin are computed per call instead of from a fixed table."""

    _BLOCK = 256  # positions whose cos/sin `at` computes at once

    def __init__(self, head_dim: int, theta: float, device: torch.device) -> None:
        exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
        self.inv_freq = 1.0 / (theta**exponents)
        self._block: tuple[int, torch.dtype, torch.Tensor, torch.Tensor] | None = None

    def at(self, position: int, dtype: torch.dtype, length: int = 1) -> tuple[torch.Tensor, ...]:
        """cos/sin [length, head_dim] of positions from `position`, from a block computed once
        per 256 steps (each element is the same product as computing it alone)."""
        first = position - position % self._BLOCK
        offset = position - first
        if offset + length > self._BLOCK:  # straddles two blocks: rare, compute it alone
            return self.cos_sin(position, length, dtype)
        if self._block is None or self._block[:2] != (first, dtype):
            self._block = (first, dtype, *self.cos_sin(first, self._BLOCK, dtype))
        return self._block[2][offset : offset + length], self._block[3][offset : offset + length]

    def cos_sin(self, start: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        positions = torch.arange(start, start + length, device=self.inv_freq.device)
        return self._angles(positions, dtype)

    def at_rows(self, rows: Rows, dtype: torch.dtype, length: int) -> tuple[torch.Tensor, ...]:
        """cos/sin [rows, 1, length, head_dim]: each row's `length` positions from its start,
        shaped to broadcast over heads."""
        positions = rows.starts[:, None] + torch.arange(length, device=rows.starts.device)
        cos, sin = self._angles(positions, dtype)
        return cos[:, None], sin[:, None]

    def _angles(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        freqs = positions.float()[..., None] * self.inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)  # [..., T, head_dim]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., T, D] rotated by the angles of its T positions (cos/sin [T, D], or one row of
    angles per batch row: [rows, 1, T, D])."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class RowZero:
    """A batched state's per-row list attribute seen as one stream's value: its row 0 (a
    single stream is a batch of one)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, state: object, owner: type | None = None) -> int:
        return getattr(state, self.name)[0]

    def __set__(self, state: object, value: int) -> None:
        getattr(state, self.name)[0] = value


class Rows:
    """The rows of a batched state that one pass steps, each at its own position.

    `index`: the state rows (ascending), one per row of the pass; `starts`: the absolute
    position of each one's first step in the pass. A pass leaves the other rows untouched,
    and a run of consecutive rows is read as one view, never copied out of the state."""

    def __init__(self, index: list[int], starts: list[int], device: torch.device) -> None:
        self.rows = torch.tensor(index, device=device)
        self.starts = torch.tensor(starts, device=device)
        self.latest = max(starts)  # the furthest row's start
        self.runs: list[tuple[int, int, int]] = []  # (first state row, stop, first pass row)
        for at, row in enumerate(index):
            if self.runs and self.runs[-1][1] == row:
                first, _, offset = self.runs[-1]
                self.runs[-1] = (first, row + 1, offset)
            else:
                self.runs.append((row, row + 1, at))


class KVRing:
    """Keys and values of one attention layer for the last `size` positions of each of `rows`
    streams, written in place.

    Position p lives in slot p % size and `positions` records which position each slot holds
    (-1: empty), so positions grow without bound while memory stays fixed. A single stream is
    one row stepped at an int position; a batch passes `Rows`, each row at its own position.
    An int8 ring holds each key and value vector as codes and a scale (`scales`), written by
    ring_attention.c too (the loader holds one only where that kernel runs).
    """

    def __init__(
        self,
        heads: int,
        size: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        rows: int = 1,
    ) -> None:
        self.size = size
        self.keys = torch.zeros(rows, heads, size, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.positions = torch.full((rows, size), -1, dtype=torch.long, device=device)
        quantized = dtype == torch.int8
        # [keys', values'] scales of each row, head and slot
        self.scales = torch.zeros(2, rows, heads, size, device=device) if quantized else None
        # ring_attention.c reads a CPU's rings, except a bfloat16 one that bfloat16 steps read
        # where bfloat16 is native: PyTorch's attention reads that as fast (the loader holds
        # int8 rings, bfloat16 ones for float32 steps, and bfloat16 ones where it is emulated,
        # only where that kernel runs).
        self._compiled = device.type == "cpu" and ring_attention.available(head_dim)
        self._native = dtype == torch.bfloat16 and kernels.native_bfloat16()
        self._every_row = torch.arange(rows, device=device)  # what an int-position step steps
        self._one_start = torch.empty_like(self._every_row)  # and from where (`_rows_starts`)

    def clear(self, row: int) -> None:
        """Row `row` holds no position: a new stream starts there."""
        self.positions[row] = -1

    def copy_row(self, row: int, source: KVRing) -> None:
        """Row `row` becomes row 0 of `source` (a ring of the same shape)."""
        self.keys[row] = source.keys[0]
        self.values[row] = source.values[0]
        self.positions[row] = source.positions[0]
        if self.scales is not None:
            self.scales[:, row] = source.scales[:, 0]

    def write(self, keys: torch.Tensor, values: torch.Tensor, start: int | Rows) -> None:
        """Store T ≤ size new positions start..start+T-1 ([rows, heads, T, head_dim]): of
        every row from one int position, or of `Rows` from their own."""
        if self.scales is not None:
            keys, values = keys.float(), values.float()
            ring_attention.write(self._ring(), keys, values, *self._rows_starts(start))
            return
        if isinstance(start, Rows):
            return self._write_rows(keys, values, start)
        length = keys.shape[2]
        first = start % self.size
        if length == 1:  # the LM's every step: no index tensors
            self.keys[:, :, first] = keys[:, :, 0]
            self.values[:, :, first] = values[:, :, 0]
            self.positions[:, first] = start
            return
        if first + length <= self.size:  # the common case: one contiguous block
            self.keys[:, :, first : first + length] = keys
            self.values[:, :, first : first + length] = values
            self.positions[:, first : first + length] = torch.arange(start, start + length)
            return
        slots = torch.arange(start, start + length, device=keys.device) % self.size
        self.keys.index_copy_(2, slots, keys.to(self.keys.dtype))  # bfloat16 into float32
        self.values.index_copy_(2, slots, values.to(self.values.dtype))
        self.positions[:, slots] = torch.arange(start, start + length, device=keys.device)

    def write_step(
        self, qkv: torch.Tensor, heads: int, cos, sin, start: int | Rows
    ) -> torch.Tensor:
        """A layer step's projections qkv [rows, T, heads + 2 kv heads, head_dim]: queries and
        keys rotated to their positions (cos/sin as `Rotary` gives them for `start`), keys and
        values written as `write` writes them → the queries [rows, heads, T, head_dim]. The
        kernel that reads the ring writes float32 steps to it in one call."""
        kv_heads = self.keys.shape[1]
        split = qkv.transpose(1, 2)  # [rows, heads + 2 kv heads, T, head_dim]
        values = split[:, heads + kv_heads :]
        if self._kernel_reads(qkv.dtype) and qkv.dtype == torch.float32:
            rows, starts = self._rows_starts(start)
            keys, queries = split[:, heads : heads + kv_heads], split[:, :heads]
            return ring_attention.write(
                self._ring(), keys, values, rows, starts, queries, (cos, sin)
            )
        rotated = apply_rotary(split[:, : heads + kv_heads], cos, sin)
        self.write(rotated[:, heads:], values, start)
        return rotated[:, :heads]

    def _write_rows(self, keys: torch.Tensor, values: torch.Tensor, rows: Rows) -> None:
        positions = rows.starts[:, None] + torch.arange(keys.shape[2], device=keys.device)
        slots, index = positions % self.size, rows.rows[:, None]  # [n, T], [n, 1]
        # indexed as [n, T, heads, D]; bfloat16 steps widen into a float32 ring (_attend_wide)
        self.keys[index, :, slots] = keys.transpose(1, 2).to(self.keys.dtype)
        self.values[index, :, slots] = values.transpose(1, 2).to(self.values.dtype)
        self.positions[index, slots] = positions

    def mask(self, start: int, length: int, window: int, seen: int) -> torch.Tensor | None:
        """Which of the first `seen` slots queries start..start+length-1 may see: causal,
        within `window` positions (themselves included). None when every one is visible: one
        query over a ring no larger than the window (so no rolled-back slot) sees them all."""
        if length == 1 and self.size == window:
            return None
        queries = torch.arange(start, start + length, device=self.positions.device)[:, None]
        return self._visible(self.positions[:, :seen], queries, window)

    @staticmethod
    def _visible(held: torch.Tensor, queries: torch.Tensor, window: int) -> torch.Tensor:
        return (held >= 0) & (held <= queries) & (held > queries - window)

    def attend(self, queries: torch.Tensor, start: int | Rows, window: int) -> torch.Tensor:
        """Attention of queries [rows, heads, T, D] (already written to the ring) over the
        ring: every row from one int position, or `Rows` from their own."""
        length = queries.shape[2]
        if self._kernel_reads(queries.dtype):
            return self._attend_compiled(queries, start, window)
        if not isinstance(start, Rows):
            seen = self._seen(start + length)
            mask = self.mask(start, length, window, seen)
            return self._attend(queries, self.keys[:, :, :seen], self.values[:, :, :seen], mask)
        steps = torch.arange(length, device=queries.device)
        seen = self._seen(start.latest + length)
        outputs = []
        for first, stop, offset in start.runs:  # each run over a view of its rows
            count = stop - first
            at = start.starts[offset : offset + count, None] + steps  # [n, T]
            held = self.positions[first:stop, None, None, :seen]  # [n, 1, 1, seen]
            mask = self._visible(held, at[:, None, :, None], window)  # [n, 1, T, seen]
            keys, values = self.keys[first:stop, :, :seen], self.values[first:stop, :, :seen]
            outputs.append(self._attend(queries[offset : offset + count], keys, values, mask))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _kernel_reads(self, steps: torch.dtype) -> bool:
        """Whether ring_attention.c reads and writes this ring for steps in `steps` dtype."""
        return self._compiled and not (self._native and steps == torch.bfloat16)

    def _attend_compiled(self, queries: torch.Tensor, start: int | Rows, window: int):
        latest = start.latest if isinstance(start, Rows) else start
        seen = self._seen(latest + queries.shape[2])
        return ring_attention.attend(queries, self._ring(), *self._rows_starts(start), seen, window)

    def _ring(self) -> tuple[torch.Tensor, ...]:
        """The ring as ring_attention.py takes it."""
        ring = (self.keys, self.values, self.positions)
        return ring if self.scales is None else (*ring, self.scales)

    def _rows_starts(self, start: int | Rows) -> tuple[torch.Tensor, torch.Tensor]:
        """The ring rows a step at `start` steps, and each one's first position."""
        if isinstance(start, Rows):
            return start.rows, start.starts
        return self._every_row, self._one_start.fill_(start)  # every row, one position

    def _seen(self, end: int) -> int:
        """How many leading slots queries before position `end` can see: all of them once
        the ring has wrapped; before, slot s ≥ end holds a position ≥ s (or none), later
        than every query, so a young stream attends over its own few slots only."""
        return min(end, self.size)

    def _attend(self, queries, keys, values, mask: torch.Tensor | None) -> torch.Tensor:
        if queries.dtype != keys.dtype:  # bfloat16 steps, float32 ring: see _attend_wide
            return self._attend_wide(queries.to(keys.dtype), keys, values, mask).to(queries.dtype)
        grouped = queries.shape[1] != keys.shape[1]
        return F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=mask, enable_gqa=grouped
        )

    @staticmethod
    def _attend_wide(queries, keys, values, mask: torch.Tensor | None) -> torch.Tensor:
        """Queries [rows, heads, T, D] over a float32 ring as two matrix products. On a CPU
        without native bfloat16 the fused attention kernel reads a bfloat16 ring at about
        1 GB/s (a third of a 1B int8 step) and bfloat16 matmul at about 2; float32 matmul reads
        the ring, though twice the bytes, several times faster. Keys and values are the
        bfloat16 projections widened exactly; query heads sharing a key head multiply it
        together."""
        rows, kv_heads, size, dim = keys.shape
        steps = queries.shape[2]
        grouped = queries.view(rows, kv_heads, -1, steps, dim)  # [rows, kv heads, group, T, D]
        scores = torch.matmul(grouped, keys[:, :, None].transpose(3, 4)) * dim**-0.5
        if mask is not None:  # [T, size], or [rows, 1, T, size]: broadcast over the group
            scores = scores.masked_fill(~(mask if mask.dim() == 2 else mask[:, :, None]), -inf)
        weights = scores.softmax(dim=-1)
        return torch.matmul(weights, values[:, :, None]).view(queries.shape)
