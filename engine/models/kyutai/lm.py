"""The Kyutai STT text LM, one step per 80 ms frame.

Input of a step: the embedding of the previous text token plus the embeddings of the frame's
audio codes (one shared table; codebook k's codes sit at vocab + k * codebook_vocab). Then
decoder layers (RMSNorm, RoPE at absolute positions, attention over a sliding window kept in a
KV ring, gated SiLU MLP), a final RMSNorm and the text head; greedy argmax picks the token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine.models.kyutai.config import KyutaiConfig
from engine.models.kyutai.layers import KVRing, Linear, Rotary, Rows, RowZero
from engine.models.row_norms import rms_norm

LinearSource = Callable[[list[str]], Linear]  # weights named (fused in order) → a Linear
TensorSource = Callable[[str], torch.Tensor]


@dataclass
class LMState:
    """One stream's rings and position, or a batch's: rings of `len(positions)` rows."""

    rings: list[KVRing] = field(default_factory=list)
    positions: list[int] = field(default_factory=lambda: [0])  # each row's next step
    position = RowZero("positions")  # one stream's next position; grows without bound


class Embedding:
    """Rows of a table, float or int8 with a scale per row."""

    def __init__(self, table: torch.Tensor, scales: torch.Tensor | None, dtype: torch.dtype):
        self.table, self.scales, self.dtype = table, scales, dtype

    def sum(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [T, n] → the sum of each step's n rows [T, hidden]."""
        rows = self.table[ids].to(self.dtype)  # a bfloat16 table sums in float32 for int8
        if self.scales is not None:
            rows = rows * self.scales[ids][..., None]
        return rows.sum(dim=-2)


class DecoderLayer:
    def __init__(self, config: KyutaiConfig, linear: LinearSource, tensor: TensorSource, i: int):
        self.config = config
        p = f"model.layers.{i}."
        self.qkv = linear([f"{p}self_attn.{n}_proj.linear.weight" for n in "qkv"])
        self.out = linear([f"{p}self_attn.o_proj.linear.weight"])
        self.fc1 = linear([f"{p}mlp.fc1.weight"])  # [ffn_dim, hidden]: gate half, value half
        self.fc2 = linear([f"{p}mlp.fc2.weight"])
        self.norm1 = tensor(f"{p}input_layernorm.weight")
        self.norm2 = tensor(f"{p}post_attention_layernorm.weight")

    def __call__(self, x: torch.Tensor, ring: KVRing, at: int | Rows, cos, sin) -> torch.Tensor:
        """x [rows, T, hidden]: T consecutive steps of each row, from position `at` (one
        stream) or from each row's own (`Rows`); cos/sin as `Rotary` gives them for `at`."""
        c = self.config
        rows, steps = x.shape[:2]
        qkv = self.qkv(rms_norm(x, self.norm1, c.rms_norm_eps)).view(rows, steps, -1, c.head_dim)
        q = ring.write_step(qkv, c.num_heads, cos, sin, at)  # [rows, heads, T, head_dim]
        attended = ring.attend(q, at, c.sliding_window)
        x = x + self.out(attended.transpose(1, 2).reshape(rows, steps, -1))
        hidden = self.fc1(rms_norm(x, self.norm2, c.rms_norm_eps))
        half = hidden.shape[-1] // 2  # gate, then value
        return x + self.fc2(F.silu(hidden[..., :half]) * hidden[..., half:])


class TextLM:
    def __init__(
        self,
        config: KyutaiConfig,
        embedding: Embedding,
        linear: LinearSource,
        tensor: TensorSource,
        dtype: torch.dtype,
        ring_dtypes: tuple[torch.dtype, torch.dtype],
    ) -> None:
        self.config, self.embedding, self.dtype = config, embedding, dtype
        # the keys' and values' of one stream and of a batch of streams (the loader's
        # `ring_dtype`)
        self.ring_dtype, self.batch_ring_dtype = ring_dtypes
        self.layers = [DecoderLayer(config, linear, tensor, i) for i in range(config.num_layers)]
        self.norm = tensor("model.norm.weight")
        self.head = linear(["lm_head.weight"])
        self.device = self.norm.device
        self.rotary = Rotary(config.head_dim, config.rope_theta, self.device)
        books = torch.arange(config.num_codebooks, device=self.device)
        self.code_offsets = config.vocab_size + config.codebook_vocab_size * books
        self.ids = torch.empty(1 + config.num_codebooks, dtype=torch.long, device=self.device)

    def new_state(self, max_steps: int = 1, rows: int = 1, batch: bool = False) -> LMState:
        """A fresh stream whose `steps` may take up to `max_steps` rows at once, or `rows`
        streams stepped together by `step_rows` (`batch`: in the rings a batch of streams
        holds, for its rows and for the state its streams start from). Rows a caller rolls
        back are overwritten later, so the rings hold that many slots beyond the window: a
        rejected row never evicts a key the rows after the rollback still see."""
        c = self.config
        size = c.sliding_window + max_steps - 1
        dtype = self.batch_ring_dtype if batch else self.ring_dtype
        rings = [
            KVRing(c.num_kv_heads, size, c.head_dim, dtype, self.device, rows) for _ in self.layers
        ]
        return LMState(rings=rings, positions=[0] * rows)

    def restart_row(self, state: LMState, row: int, started: LMState) -> None:
        """Row `row` of a batch becomes a copy of the one-stream state `started` (of the same
        ring size): a new stream joins without stepping anything."""
        for ring, source in zip(state.rings, started.rings, strict=True):
            ring.copy_row(row, source)
        state.positions[row] = started.position

    def start_inputs(self) -> tuple[int, torch.Tensor]:
        """The first step's text token and audio codes: the start-of-stream markers."""
        c = self.config
        return c.bos_token_id, torch.full((c.num_codebooks,), c.audio_bos_token_id)

    def step(self, text_token: int, codes: torch.Tensor, state: LMState) -> torch.Tensor:
        """One frame: the previous text token and this frame's codes [codebooks] → logits."""
        return self.head(self.hidden(text_token, codes, state)).view(-1)

    def steps(self, text_tokens: list[int], codes: torch.Tensor, state: LMState) -> torch.Tensor:
        """T frames in one pass, as if stepped one by one with these text tokens as inputs
        (codes [T, codebooks]) → logits [T, vocab]. The weights are read once for all T rows,
        which costs little more than one row on a memory-bound CPU (see `rollback`)."""
        return self.head(self._forward(self._table_rows(text_tokens, codes), state))[0]

    def step_rows(
        self, text_tokens: list[int], codes: torch.Tensor, state: LMState, rows: list[int]
    ) -> torch.Tensor:
        """One frame for each of `rows` (ascending rows of a batched state), each with its
        previous text token and this frame's codes (codes [rows, codebooks]), in one pass:
        logits [rows, vocab]. The other rows are neither read nor written."""
        at = Rows(rows, [state.positions[row] for row in rows], self.device)
        x = self.embedding.sum(self._table_rows(text_tokens, codes))[:, None]  # [rows, 1, hidden]
        cos, sin = self.rotary.at_rows(at, x.dtype, 1)
        for layer, ring in zip(self.layers, state.rings, strict=True):
            x = layer(x, ring, at, cos, sin)
        for row in rows:
            state.positions[row] += 1
        return self.head(rms_norm(x, self.norm, self.config.rms_norm_eps))[:, 0]

    def _table_rows(self, text_tokens: list[int], codes: torch.Tensor) -> torch.Tensor:
        """Each step's rows of the shared table [T, 1 + codebooks]: its text input, then its
        codes offset to their codebook's block."""
        ids = torch.empty(len(text_tokens), 1 + self.config.num_codebooks, dtype=torch.long)
        ids[:, 0] = torch.tensor(text_tokens)
        ids[:, 1:] = codes.cpu() + self.code_offsets.cpu()
        return ids.to(self.device)

    def rollback(self, state: LMState, steps: int) -> None:
        """Forget the last `steps` steps (at most `max_steps` - 1 of one `steps` call): their
        text inputs turned out wrong. Their ring slots are rewritten by the steps that replace
        them, and attention never sees a slot holding a later position than its query."""
        state.position -= steps

    def hidden(self, text_token: int, codes: torch.Tensor, state: LMState) -> torch.Tensor:
        """The step's final normalized hidden state [1, 1, hidden] (what the head reads)."""
        ids = self.ids  # [text, codebook 0 .. K-1]: rows of the shared table
        ids[0] = text_token
        torch.add(codes.to(self.device), self.code_offsets, out=ids[1:])
        return self._forward(ids[None], state)

    def _forward(self, ids: torch.Tensor, state: LMState) -> torch.Tensor:
        """ids [T, 1 + codebooks] → final normalized hidden states [1, T, hidden]."""
        x = self.embedding.sum(ids)[None]
        cos, sin = self.rotary.at(state.position, x.dtype, len(ids))
        for layer, ring in zip(self.layers, state.rings, strict=True):
            x = layer(x, ring, state.position, cos, sin)
        state.position += len(ids)
        return rms_norm(x, self.norm, self.config.rms_norm_eps)
