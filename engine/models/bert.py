"""BERT as a causal language model with cross-attention (a speech encoder-decoder's decoder).

Embeddings are word + absolute position + token type 0, then a LayerNorm. Each layer is
post-norm: causal self-attention, cross-attention to the speech memory, and a feed-forward
block, each followed by dense → residual → LayerNorm. The prediction head transforms the
last hidden state (dense, activation, LayerNorm) and projects it on the (tied) word
embeddings plus a bias. Decoding state and caches are the shared ones from bart.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.errors import ModelError
from engine.models.bart import CachedSelfAttention, CrossAttention, KVCache
from engine.models.wav2vec2 import activation


@dataclass(frozen=True)
class BertDecoderConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    tie_word_embeddings: bool = True

    @classmethod
    def from_dict(cls, values: dict) -> BertDecoderConfig:
        kind = values.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ModelError(
                f"This BERT decoder uses '{kind}' position embeddings; Livecap runs 'absolute'.",
                "Choose a model whose decoder uses absolute positions.",
            )
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in known and v is not None})


class BertDecoderLayer(nn.Module):
    def __init__(self, config: BertDecoderConfig, memory_width: int) -> None:
        super().__init__()
        width, eps = config.hidden_size, config.layer_norm_eps
        self.self_attn = CachedSelfAttention(width, config.num_attention_heads)
        self.self_norm = nn.LayerNorm(width, eps=eps)
        self.cross_attn = CrossAttention(width, config.num_attention_heads, memory_width)
        self.cross_norm = nn.LayerNorm(width, eps=eps)
        self.ffn_in = nn.Linear(width, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, width)
        self.ffn_norm = nn.LayerNorm(width, eps=eps)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor, cache: KVCache, cross_kv) -> torch.Tensor:
        x = self.self_norm(x + self.self_attn(x, cache))
        x = self.cross_norm(x + self.cross_attn(x, cross_kv))
        return self.ffn_norm(x + self.ffn_out(self.act(self.ffn_in(x))))


class BertDecoder(nn.Module):
    def __init__(self, config: BertDecoderConfig, memory_width: int) -> None:
        super().__init__()
        width = config.hidden_size
        self.num_layers = config.num_hidden_layers
        self.word_embeddings = nn.Embedding(config.vocab_size, width)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.embed_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(
            BertDecoderLayer(config, memory_width) for _ in range(config.num_hidden_layers)
        )
        self.head_dense = nn.Linear(width, width)
        self.head_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.head_act = activation(config.hidden_act)
        self.lm_head = nn.Linear(width, config.vocab_size)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.word_embeddings.weight

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.cross_attn.memory_kv(memory) for layer in self.layers]

    def step(
        self, ids: torch.Tensor, caches: list[KVCache], cross, head: bool = True, outputs: int = 1
    ):
        past = caches[0].length
        positions = torch.arange(past, past + ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions)
        x = self.embed_norm(x + self.token_type_embeddings.weight[0])
        for layer, cache, kv in zip(self.layers, caches, cross, strict=True):
            x = layer(x, cache, kv)
        if not head:
            return x.new_zeros(x.shape[0], outputs, self.word_embeddings.num_embeddings)
        x = self.head_norm(self.head_act(self.head_dense(x[:, -outputs:])))
        return self.lm_head(x)


def build_decoder(values: dict, memory_width: int) -> BertDecoder:
    return BertDecoder(BertDecoderConfig.from_dict(values), memory_width)


# ---- weights: Hub names (after "decoder.") → ours ---------------------------------------------

_RULES = (
    ("bert.embeddings.LayerNorm.", "embed_norm."),
    ("bert.embeddings.", ""),
    ("cls.predictions.transform.dense.", "head_dense."),
    ("cls.predictions.transform.LayerNorm.", "head_norm."),
    ("cls.predictions.decoder.", "lm_head."),
    ("cls.predictions.bias", "lm_head.bias"),
)
_LAYER_NAMES = {
    "attention.output.dense": "self_attn.out",
    "attention.output.LayerNorm": "self_norm",
    "crossattention.self.query": "cross_attn.q",
    "crossattention.output.dense": "cross_attn.out",
    "crossattention.output.LayerNorm": "cross_norm",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
    "output.LayerNorm": "ffn_norm",
}


def rename_weight(name: str) -> str | None:
    """Map a BertLMHeadModel checkpoint name to ours (q/k/v fused later); None for tensors
    that are not used on purpose (the pooler)."""
    if name.startswith("bert.encoder.layer."):
        parts = name[len("bert.encoder.layer.") :].split(".")
        inner = ".".join(parts[1:-1])
        return ".".join(["layers", parts[0], _LAYER_NAMES.get(inner, inner), parts[-1]])
    if name.startswith("bert.pooler."):
        return None
    for old, new in _RULES:
        if name.startswith(old):
            return new + name[len(old) :]
    return name  # unknown: left for the loader to report


def fuse_projections(tensors: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    out = dict(tensors)
    for i in range(layers):
        for group, names, fused in (
            ("attention.self", ("query", "key", "value"), "self_attn.qkv"),
            ("crossattention.self", ("key", "value"), "cross_attn.kv"),
        ):
            for kind in ("weight", "bias"):
                keys = [f"layers.{i}.{group}.{n}.{kind}" for n in names]
                if all(k in out for k in keys):
                    out[f"layers.{i}.{fused}.{kind}"] = torch.cat([out.pop(k) for k in keys])
    return out
