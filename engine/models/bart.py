"""BART decoder with cross-attention, and the cached decoding state the text decoders share.

BART's decoder: token embeddings (optionally scaled by √width) plus learned positions (offset
by 2, a fairseq leftover), a LayerNorm, then layers of self-attention, cross-attention to the
speech encoder and a feed-forward block, each wrapped post-norm. mBART is the same network
with pre-norm layers and a final LayerNorm (engine/models/mbart.py builds that flavour);
Speech2Text's decoder is mBART's with fixed sinusoidal positions and no embedding LayerNorm
(engine/models/speech2text.py).

`CachedDecoderState` is what generation.py drives: it keeps a self-attention KV cache per
layer (grown in place, rows reordered for beam search) and the cross-attention keys/values,
computed once per window from one encoder row and broadcast to every beam, never copied.
`cross_attention` runs the same step over a finished sequence to align its tokens in time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.wav2vec2 import activation


class KVCache:
    """Self-attention keys/values of one layer: [rows, heads, capacity, head_dim], grown 2×."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0

    def reserve(self, like: torch.Tensor) -> None:
        """Room for `like`'s positions ([rows, heads, new, head_dim]) after the cached ones."""
        new = like.shape[2]
        if self.k is None or self.length + new > self.k.shape[2]:
            capacity = max(32, 2 * (self.length + new))
            grown_k = like.new_empty(like.shape[0], like.shape[1], capacity, like.shape[3])
            grown_v = torch.empty_like(grown_k)
            if self.k is not None:
                grown_k[:, :, : self.length] = self.k[:, :, : self.length]
                grown_v[:, :, : self.length] = self.v[:, :, : self.length]
            self.k, self.v = grown_k, grown_v

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        new = k.shape[2]
        self.reserve(k)
        self.k[:, :, self.length : self.length + new] = k
        self.v[:, :, self.length : self.length + new] = v
        self.length += new
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def reorder(self, rows: torch.Tensor) -> None:
        if self.k is not None:
            rows = rows.to(self.k.device)  # the search keeps its indices on the CPU
            self.k = self.k.index_select(0, rows)
            self.v = self.v.index_select(0, rows)


class CachedDecoder(Protocol):
    """What a text decoder offers `CachedDecoderState`."""

    num_layers: int

    def modules(self) -> Iterator[nn.Module]: ...  # nn.Module's, for `cross_attention`

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]: ...

    def step(
        self,
        ids: torch.Tensor,
        caches: list[KVCache],
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        head: bool = True,
        outputs: int = 1,
    ) -> torch.Tensor:
        """Logits of the last `outputs` positions [B, outputs, V] (zeros without `head`);
        extends `caches`."""
        ...


class CachedDecoderState:
    """generation.DecoderState over any `CachedDecoder` for one encoder output.

    `forced` names the sequence lengths after which the search forces the next token (its
    rule replaces every score): the step ending there returns zeros instead of logits."""

    def __init__(
        self,
        decoder: CachedDecoder,
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        rows: int,
        forced: frozenset[int] = frozenset(),
    ) -> None:
        self.decoder, self.forced = decoder, forced
        # [1, H, S, Dh] → [rows, H, S, Dh] as a view: every beam reads the same memory
        self.cross = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in cross]
        self.caches = [KVCache() for _ in range(decoder.num_layers)]

    def step(self, ids: torch.Tensor, outputs: int = 1) -> torch.Tensor:
        head = outputs > 1 or self.caches[0].length + ids.shape[1] not in self.forced
        ids = ids.to(self.cross[0][0].device)
        logits = self.decoder.step(ids, self.caches, self.cross, head, outputs)
        return logits.cpu() if isinstance(logits, torch.Tensor) else logits  # the search's side

    def truncate(self, length: int) -> None:
        for cache in self.caches:
            cache.length = length

    def reorder(self, beam_idx: torch.Tensor) -> None:
        for cache in self.caches:
            cache.reorder(beam_idx)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:  # [B, T, D] → [B, H, T, Dh]
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:  # [B, H, T, Dh] → [B, T, D]
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


def causal_mask(new: int, past: int, device: torch.device) -> torch.Tensor | None:
    """Bool mask [new, past+new] letting each new token see the past and itself."""
    if new == 1:
        return None
    rows = torch.arange(new, device=device)[:, None] + past
    return torch.arange(past + new, device=device)[None, :] <= rows


class MemoryLinear(nn.Linear):
    """The projection of the encoder's frames (many rows, once per window), as opposed to the
    matrices a decoder step multiplies by a few rows (engine/models/kernels.py tells them
    apart to choose their kernels)."""


class CachedSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=bias)  # q, k, v fused: one matmul
        self.out = nn.Linear(width, width, bias=bias)

    def forward(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        mask = causal_mask(x.shape[1], cache.length, x.device)
        k, v = cache.append(split_heads(k, self.heads), split_heads(v, self.heads))
        y = F.scaled_dot_product_attention(split_heads(q, self.heads), k, v, attn_mask=mask)
        return self.out(merge_heads(y))


class CrossAttention(nn.Module):
    def __init__(self, width: int, heads: int, memory_width: int, bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width, bias=bias)
        self.kv = MemoryLinear(memory_width, 2 * width, bias=bias)  # k, v fused
        self.out = nn.Linear(width, width, bias=bias)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(memory).chunk(2, dim=-1)
        return split_heads(k, self.heads), split_heads(v, self.heads)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        y = F.scaled_dot_product_attention(split_heads(self.q(x), self.heads), *kv)
        return self.out(merge_heads(y))

    def probs(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The attention probabilities `forward` applies, [B, H, T, S] in float32."""
        q = split_heads(self.q(x), self.heads).float()
        scores = q @ kv[0].float().transpose(-1, -2) * q.shape[-1] ** -0.5
        return torch.softmax(scores, dim=-1)


def cross_attention(
    decoder: CachedDecoder, ids: torch.Tensor, cross: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Cross-attention of one teacher-forced pass over ids [1, T], averaged over layers and
    heads: [T, S] float32. It is the decoder's own step (without the output layer) with each
    CrossAttention's inputs caught by a hook, so every layer variant (pre-norm, post-norm,
    BERT) is covered by the code that generates, and generation itself is not slowed."""
    caught: list[torch.Tensor] = []

    def catch(attention: CrossAttention, inputs: tuple, _output: torch.Tensor) -> None:
        caught.append(attention.probs(*inputs))

    blocks = [m for m in decoder.modules() if isinstance(m, CrossAttention)]
    hooks = [block.register_forward_hook(catch) for block in blocks]
    try:
        decoder.step(ids, [KVCache() for _ in range(decoder.num_layers)], cross, head=False)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack(caught).mean(dim=(0, 2))[0]  # [L, 1, H, T, S] → [T, S]


@dataclass(frozen=True)
class BartDecoderConfig:
    vocab_size: int
    d_model: int
    decoder_layers: int
    decoder_attention_heads: int
    decoder_ffn_dim: int
    max_position_embeddings: int
    activation_function: str = "gelu"
    scale_embedding: bool = False
    tie_word_embeddings: bool = True
    pre_norm: bool = False  # mBART: norm before each block, plus a final LayerNorm
    # Speech2Text: fixed sinusoidal positions counted from pad_token_id + 1 (fairseq's rule,
    # pads get a zero row), and no LayerNorm after the embeddings
    sinusoidal_positions: bool = False
    embedding_norm: bool = True
    pad_token_id: int = 1
    output_bias: bool = False  # Marian adds a learned bias to the logits (final_logits_bias)

    @classmethod
    def from_dict(cls, values: dict, pre_norm: bool = False) -> BartDecoderConfig:
        known = cls.__dataclass_fields__
        config = {k: v for k, v in values.items() if k in known and v is not None}
        return cls(**config, pre_norm=pre_norm)


class BartDecoderLayer(nn.Module):
    def __init__(self, config: BartDecoderConfig, memory_width: int) -> None:
        super().__init__()
        width, heads = config.d_model, config.decoder_attention_heads
        self.pre_norm = config.pre_norm
        self.self_attn = CachedSelfAttention(width, heads)
        self.self_norm = nn.LayerNorm(width)
        self.cross_attn = CrossAttention(width, heads, memory_width)
        self.cross_norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, width)
        self.ffn_norm = nn.LayerNorm(width)
        self.activation_function = config.activation_function
        self.act = activation(config.activation_function)

    def forward(self, x: torch.Tensor, cache: KVCache, cross_kv) -> torch.Tensor:
        blocks = (
            (self.self_norm, lambda h: self.self_attn(h, cache)),
            (self.cross_norm, lambda h: self.cross_attn(h, cross_kv)),
            (self.ffn_norm, lambda h: self.fc2(self.act(self.fc1(h)))),
        )
        for norm, block in blocks:
            x = x + block(norm(x)) if self.pre_norm else norm(x + block(x))
        return x


def sinusoids(count: int, dim: int, pad_row: int) -> torch.Tensor:
    """Fixed position table [count, dim]: sines then cosines; row `pad_row` is zero."""
    half = dim // 2
    rates = torch.exp(torch.arange(half).float() * -(math.log(10000.0) / (half - 1)))
    angles = torch.arange(count).float()[:, None] * rates[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = F.pad(table, (0, 1))
    table[pad_row] = 0.0
    return table


class SinusoidalPositions(nn.Module):
    """Speech2Text's positions: row (index among the real tokens + pad + 1), pads row `pad`.
    The table is computed, never read from a checkpoint (`fill` after loading)."""

    def __init__(self, count: int, width: int, pad: int) -> None:
        super().__init__()
        self.pad, self.count, self.width = pad, count + pad + 2, width
        self.register_buffer("table", torch.empty(self.count, width), persistent=False)

    def fill(self) -> None:
        self.table = sinusoids(self.count, self.width, self.pad)

    def forward(self, ids: torch.Tensor, past: int) -> torch.Tensor:
        real = ids.ne(self.pad).long()
        return self.table[(torch.cumsum(real, dim=1) + past) * real + self.pad]


class LearnedPositions(nn.Embedding):
    """BART's positions: learned rows from index 2 (a fairseq leftover)."""

    OFFSET = 2

    def __init__(self, count: int, width: int) -> None:
        super().__init__(count + self.OFFSET, width)

    def forward(self, ids: torch.Tensor, past: int) -> torch.Tensor:
        positions = torch.arange(past, past + ids.shape[1], device=ids.device) + self.OFFSET
        return super().forward(positions)


class BartDecoder(nn.Module):
    """Causal text decoder over speech memory; `step` returns last-position logits [B, V]."""

    def __init__(self, config: BartDecoderConfig, memory_width: int) -> None:
        super().__init__()
        width, count = config.d_model, config.max_position_embeddings
        self.num_layers = config.decoder_layers
        self.embed_scale = math.sqrt(width) if config.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(config.vocab_size, width)
        if config.sinusoidal_positions:
            self.embed_positions = SinusoidalPositions(count, width, config.pad_token_id)
        else:
            self.embed_positions = LearnedPositions(count, width)
        self.embed_norm = nn.LayerNorm(width) if config.embedding_norm else None
        self.layers = nn.ModuleList(
            BartDecoderLayer(config, memory_width) for _ in range(config.decoder_layers)
        )
        self.final_norm = nn.LayerNorm(width) if config.pre_norm else None
        self.lm_head = nn.Linear(width, config.vocab_size, bias=config.output_bias)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.cross_attn.memory_kv(memory) for layer in self.layers]

    def embed(self, ids: torch.Tensor, past: int) -> torch.Tensor:
        """The first layer's input for tokens `ids` [B, T] after `past` cached positions."""
        x = self.embed_tokens(ids) * self.embed_scale + self.embed_positions(ids, past)
        return x if self.embed_norm is None else self.embed_norm(x)

    def step(
        self, ids: torch.Tensor, caches: list[KVCache], cross, head: bool = True, outputs: int = 1
    ):
        x = self.embed(ids, caches[0].length)
        for layer, cache, kv in zip(self.layers, caches, cross, strict=True):
            x = layer(x, cache, kv)
        if not head:
            return x.new_zeros(x.shape[0], outputs, self.embed_tokens.num_embeddings)
        x = x[:, -outputs:]
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.lm_head(x)


# ---- weights: Hub names (after "decoder.") → ours ---------------------------------------------

_LAYER_NAMES = {
    "self_attn.out_proj": "self_attn.out",
    "self_attn_layer_norm": "self_norm",
    "encoder_attn.q_proj": "cross_attn.q",
    "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_norm",
    "final_layer_norm": "ffn_norm",
}
_TOP_NAMES = {"layernorm_embedding": "embed_norm", "layer_norm": "final_norm"}


def rename_weight(name: str) -> str | None:
    """Map a BART/mBART causal-LM checkpoint name to ours (q/k/v fused later); None for
    tensors that are not used on purpose."""
    if name == "lm_head.weight":
        return name
    prefix = "model.decoder."
    if not name.startswith(prefix):
        return name  # not a decoder tensor: left for the loader to report
    parts = name[len(prefix) :].split(".")
    if parts[0] == "layers":
        inner = ".".join(parts[2:-1])
        inner = _LAYER_NAMES.get(inner, inner)
        return ".".join(["layers", parts[1], inner, parts[-1]])
    return ".".join([_TOP_NAMES.get(parts[0], parts[0]), *parts[1:]])


def fuse_projections(tensors: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """Concatenate separate q/k/v (self) and k/v (cross) projections into fused ones."""
    out = dict(tensors)
    for i in range(layers):
        for group, names, fused in (
            ("self_attn", ("q_proj", "k_proj", "v_proj"), "qkv"),
            ("encoder_attn", ("k_proj", "v_proj"), "kv"),
        ):
            target = "self_attn" if group == "self_attn" else "cross_attn"
            for kind in ("weight", "bias"):
                keys = [f"layers.{i}.{group}.{n}.{kind}" for n in names]
                if all(k in out for k in keys):
                    out[f"layers.{i}.{target}.{fused}.{kind}"] = torch.cat(
                        [out.pop(k) for k in keys]
                    )
    return out


def build_decoder(values: dict, memory_width: int) -> BartDecoder:
    """A BART decoder from the `decoder` section of a composite config.json."""
    return BartDecoder(BartDecoderConfig.from_dict(values), memory_width)
