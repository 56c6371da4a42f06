"""A text decoder's greedy step in one call: every layer and the output layer of a
bart.BartDecoder whose step matrices are panels (kernels.PanelsLinear), for one token of one
row, in decoder_step.c.

A translation step meets some forty small matrices with a dozen small operations between each
two; one by one, their dispatch and the thread team's wake-ups cost more than reading the
weights (see there). `fused(decoder)` wraps such a decoder as a bart.CachedDecoder whose
one-token, one-row steps (greedy search's) go through the C step, on the decoder's own KV
caches, so any other step (beams, a draft's several tokens, the alignment pass) runs the
decoder's PyTorch layers on the same state.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import torch
from torch import nn

from engine.models import bart, native, panels
from engine.models.kernels import PanelsLinear

_ACTIVATIONS = {"relu": 0, "gelu": 1, "gelu_new": 2, "silu": 3, "swish": 3}  # decoder_step.c's
_POINTER, _INT, _INT64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64


class _Matrix(ctypes.Structure):
    _fields_ = [("values", _POINTER), ("scales", _POINTER), ("bias", _POINTER)] + [
        (name, _INT) for name in ("out", "inputs", "kind")
    ]


class _Norm(ctypes.Structure):
    _fields_ = [("weight", _POINTER), ("bias", _POINTER), ("eps", ctypes.c_float)]


_MATRICES = ("qkv", "self_out", "cross_q", "cross_out", "fc1", "fc2")


class _Layer(ctypes.Structure):
    _fields_ = [(name, _Norm) for name in ("self_norm", "cross_norm", "ffn_norm")] + [
        (name, _Matrix) for name in _MATRICES
    ]


class _LayerState(ctypes.Structure):
    _fields_ = [
        ("keys", _POINTER), ("values", _POINTER), ("head_stride", _INT64),
        ("position_stride", _INT64), ("cross_keys", _POINTER), ("cross_values", _POINTER),
        ("cross_head_stride", _INT64), ("cross_position_stride", _INT64),
    ]  # fmt: skip


class _Shape(ctypes.Structure):
    _fields_ = [
        (name, _INT)
        for name in (
            "width", "heads", "ffn", "pre_norm", "activation", "group", "position",
            "cross_length",
        )
    ]  # fmt: skip


def fused(decoder: nn.Module) -> bart.CachedDecoder:
    """`decoder` with its greedy steps in one call where decoder_step.c runs and every step
    matrix is on the panels; else `decoder` itself."""
    if not isinstance(decoder, bart.BartDecoder) or native.library() is None:
        return decoder
    layers = list(decoder.layers)
    if decoder.embed_tokens.weight.dtype != torch.float32 or not all(map(_fits, layers)):
        return decoder
    return FusedDecoder(decoder)


def _fits(layer: bart.BartDecoderLayer) -> bool:
    matrices = [_module(layer, name) for name in _MATRICES]
    norms = (layer.self_norm, layer.cross_norm, layer.ffn_norm)
    width = layer.self_norm.normalized_shape[0]
    return (
        all(isinstance(m, PanelsLinear) and m.held.dtype in panels.KINDS for m in matrices)
        and all(n.weight is not None and n.bias is not None for n in norms)
        and layer.activation_function in _ACTIVATIONS
        and width % layer.self_attn.heads == 0
    )


def _module(layer: bart.BartDecoderLayer, name: str) -> nn.Module:
    owner, _, part = {
        "qkv": "self_attn.qkv", "self_out": "self_attn.out", "cross_q": "cross_attn.q",
        "cross_out": "cross_attn.out", "fc1": "fc1", "fc2": "fc2",
    }[name].rpartition(".")  # fmt: skip
    return getattr(layer.get_submodule(owner) if owner else layer, part)


def _matrix(linear: PanelsLinear) -> _Matrix:
    held = linear.held
    scales = held.scales.data_ptr() if held.scales is not None else None
    bias = linear.bias.data_ptr() if linear.bias is not None else None
    kind = panels.KINDS[held.dtype]
    return _Matrix(held.values.data_ptr(), scales, bias, held.out, held.width, kind)


def _norm(norm: nn.LayerNorm) -> _Norm:
    return _Norm(norm.weight.data_ptr(), norm.bias.data_ptr(), norm.eps)


class FusedDecoder:
    """A bart.CachedDecoder: greedy steps in decoder_step.c, every other step `decoder`'s."""

    def __init__(self, decoder: bart.BartDecoder) -> None:
        self.decoder, self.num_layers = decoder, decoder.num_layers
        layers = list(decoder.layers)
        self._layers = (_Layer * len(layers))(
            *(
                _Layer(
                    *(_norm(n) for n in (layer.self_norm, layer.cross_norm, layer.ffn_norm)),
                    *(_matrix(_module(layer, name)) for name in _MATRICES),
                )
                for layer in layers
            )
        )
        first = layers[0]
        width, heads = first.self_norm.normalized_shape[0], first.self_attn.heads
        self._sizes = (width, heads, first.fc1.held.out, int(first.pre_norm))
        self._activation = _ACTIVATIONS[first.activation_function]
        final = decoder.final_norm
        self._final = ctypes.byref(_norm(final)) if final is not None else None
        head = decoder.lm_head
        self._head = _matrix(head) if isinstance(head, PanelsLinear) else None
        self._vocab = decoder.embed_tokens.num_embeddings
        self._position = torch.empty(1, heads, 1, width // heads)  # one cached position
        self._last_memory: tuple[list, list[tuple] | None] | None = None

    def modules(self) -> Iterator[nn.Module]:
        return self.decoder.modules()

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.decoder.cross_kv(memory)

    def step(
        self,
        ids: torch.Tensor,
        caches: list[bart.KVCache],
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        head: bool = True,
        outputs: int = 1,
    ) -> torch.Tensor:
        memory = self._memory(cross) if ids.numel() == 1 and outputs == 1 else None
        past = caches[0].length
        x = self.decoder.embed(ids, past).float().contiguous() if memory is not None else None
        if x is None or x.numel() != self._sizes[0]:  # past the position table: as the layers do
            return self.decoder.step(ids, caches, cross, head, outputs)
        for cache in caches:
            cache.reserve(self._position)
        states = (_LayerState * self.num_layers)(  # per call: steps may run in any thread
            *(
                (c.k.data_ptr(), c.v.data_ptr(), c.k.stride(1), c.k.stride(2), *layer)
                for c, layer in zip(caches, memory, strict=True)
            )
        )
        shape = _Shape(*self._sizes, self._activation, panels.GROUP, past, cross[0][0].shape[2])
        on_panels = head and self._head is not None
        logits = torch.empty(1, 1, self._vocab) if on_panels else None
        native.library().decoder_step(
            self._layers, states, self.num_layers, ctypes.byref(shape),
            self._final, ctypes.byref(self._head) if on_panels else None, x.data_ptr(),
            logits.data_ptr() if on_panels else None,
        )  # fmt: skip
        for cache in caches:
            cache.length += 1
        if not head:
            return x.new_zeros(1, 1, self._vocab)
        return logits if on_panels else self.decoder.lm_head(x)

    def _memory(self, cross: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple] | None:
        """Each layer's cross-attention keys and values as the C step takes them (pointers,
        head and position strides), None where it cannot read them. A search steps one list
        many times: the last list's are kept, with the list (one tuple, so that a step in
        another thread never pairs one list with another's)."""
        last = self._last_memory
        if last is not None and last[0] is cross:
            return last[1]
        readable = all(_readable(k, v) for k, v in cross)
        memory = [(k.data_ptr(), v.data_ptr(), *k.stride()[1:3]) for k, v in cross]
        self._last_memory = (cross, memory if readable else None)
        return self._last_memory[1]


def _readable(keys: torch.Tensor, values: torch.Tensor) -> bool:
    """Cross-attention keys and values the C step reads: float32, one row, laid out alike."""
    return (
        keys.dtype == values.dtype == torch.float32
        and keys.shape[0] == 1
        and keys.stride() == values.stride()
        and keys.stride(3) == 1
    )
