"""Building blocks shared by the Mimi encoder and the text LM: linear layers (float or int8),
rotary embeddings at absolute positions, and the KV ring that bounds attention memory."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.models.kyutai import kernel_choice


class Linear:
    """y = x Wᵀ. W is float, int8 with one scale per output row, or int4 with a scale and zero
    per 32 inputs (weight-only quantization: activations stay bfloat16), multiplied on
    `kernel` (kernel_choice.py measures which reads fastest here; the form's default
    otherwise)."""

    def __init__(
        self, weight: torch.Tensor, scales: torch.Tensor | None = None, kernel: str | None = None
    ) -> None:
        forms = {torch.int8: "int8", torch.uint8: "int4"}  # int4: two codes per byte
        form = forms.get(weight.dtype) or str(weight.dtype).removeprefix("torch.")
        self.kernel = kernel or kernel_choice.DEFAULTS.get(form, "linear")
        self.product = kernel_choice.product(self.kernel, weight, scales)
        self.weight, self.scales = weight, scales  # [out, in], [out] or None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.product(x)


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
        positions = torch.arange(start, start + length, device=self.inv_freq.device).float()
        freqs = positions[:, None] * self.inv_freq[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)  # [T, head_dim]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., T, D] rotated by the angles of its T positions (cos/sin [T, D])."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class KVRing:
    """Keys and values of one attention layer for the last `size` positions, written in place.

    Position p lives in slot p % size and `positions` records which position each slot holds
    (-1: empty), so positions grow without bound while memory stays fixed.
    """

    def __init__(
        self, heads: int, size: int, head_dim: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.size = size
        self.keys = torch.zeros(1, heads, size, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.positions = torch.full((size,), -1, dtype=torch.long, device=device)

    def write(self, keys: torch.Tensor, values: torch.Tensor, start: int) -> None:
        """Store T ≤ size new positions start..start+T-1 ([1, heads, T, head_dim])."""
        length = keys.shape[2]
        first = start % self.size
        if length == 1:  # the LM's every step: no index tensors
            self.keys[:, :, first] = keys[:, :, 0]
            self.values[:, :, first] = values[:, :, 0]
            self.positions[first] = start
            return
        if first + length <= self.size:  # the common case: one contiguous block
            self.keys[:, :, first : first + length] = keys
            self.values[:, :, first : first + length] = values
            self.positions[first : first + length] = torch.arange(start, start + length)
            return
        slots = torch.arange(start, start + length, device=keys.device) % self.size
        self.keys.index_copy_(2, slots, keys)
        self.values.index_copy_(2, slots, values)
        self.positions[slots] = torch.arange(start, start + length, device=keys.device)

    def mask(self, start: int, length: int, window: int) -> torch.Tensor | None:
        """Which slots queries start..start+length-1 may see: causal, within `window`
        positions (themselves included). None when every slot is visible to the query."""
        if length == 1 and self.size == window and start >= self.size - 1:
            return None
        queries = torch.arange(start, start + length, device=self.positions.device)[:, None]
        held = self.positions[None, :]
        return (held >= 0) & (held <= queries) & (held > queries - window)

    def attend(self, queries: torch.Tensor, start: int, window: int) -> torch.Tensor:
        """Attention of queries [1, heads, T, D] (already written to the ring) over the ring."""
        mask = self.mask(start, queries.shape[2], window)
        if queries.dtype != self.keys.dtype:  # bfloat16 steps, float32 ring: see _attend_wide
            return self._attend_wide(queries.to(self.keys.dtype), mask).to(queries.dtype)
        grouped = queries.shape[1] != self.keys.shape[1]
        return F.scaled_dot_product_attention(
            queries, self.keys, self.values, attn_mask=mask, enable_gqa=grouped
        )

    def _attend_wide(self, queries: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Queries [1, heads, T, D] over a float32 ring as two matrix products. On a CPU
        without native bfloat16 the fused attention kernel reads a bfloat16 ring at about
        1 GB/s (a third of a 1B int8 step) and bfloat16 matmul at about 2; float32 matmul reads
        the ring, though twice the bytes, several times faster. Keys and values are the
        bfloat16 projections widened exactly; query heads sharing a key head multiply it
        together."""
        kv_heads, size, dim = self.keys.shape[1:]
        steps = queries.shape[2]
        grouped = queries.view(kv_heads, -1, steps, dim)  # [kv heads, group, T, D]
        scores = torch.matmul(grouped, self.keys[0, :, None].transpose(2, 3)) * dim**-0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))  # mask [T, size]
        weights = scores.softmax(dim=-1)
        return torch.matmul(weights, self.values[0, :, None]).view(queries.shape)
