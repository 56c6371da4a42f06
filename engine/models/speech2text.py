"""Speech2Text (fairseq S2T): log-mel features → conv subsampler → transformer encoder-decoder.

Checkpoints: `facebook/s2t-small-librispeech-asr` (English ASR) and the MuST-C speech
translation models such as `facebook/s2t-medium-mustc-multilingual-st`, whose decoder is
told the output language by a forced `<lang:xx>` token right after the start token.

Read top to bottom: the config, the Kaldi-compatible features, the tokenizer, the layers,
the model with its decoder state for `engine.models.generation`, the weight-loading map and
`load_model`. The model implements `SpeechSeq2Seq` for the chunked live policy.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelError
from engine.models.alignment import token_end_times
from engine.models.generation import GenerationConfig, generate
from engine.recognizer import LoadOptions, ModelInfo
from engine.streaming.chunked_protocol import Hypothesis

SAMPLE_RATE = 16000
FRAME_SHIFT = 160  # 10 ms feature hop
FRAME_LENGTH = 400  # 25 ms feature window
_LANG_TOKEN = re.compile(r"^<lang:([A-Za-z_-]+)>$")
_SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>")


@dataclass(frozen=True)
class Speech2TextConfig:
    vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    conv_kernel_sizes: tuple[int, ...]
    conv_channels: int
    input_feat_per_channel: int
    input_channels: int
    scale_embedding: bool
    pad_token_id: int
    max_source_positions: int
    max_target_positions: int

    @classmethod
    def from_dict(cls, raw: dict) -> Speech2TextConfig:
        if raw.get("activation_function", "relu") != "relu":
            raise ModelError(
                f"Speech2Text with activation '{raw['activation_function']}' is not supported.",
                "Livecap runs the published Speech2Text checkpoints, which use ReLU.",
            )
        values = {
            "conv_kernel_sizes": (5, 5),
            "conv_channels": 1024,
            "input_feat_per_channel": 80,
            "input_channels": 1,
            "scale_embedding": True,
            "pad_token_id": 1,
            "max_source_positions": 6000,
            "max_target_positions": 1024,
        }
        values.update({k: v for k, v in raw.items() if k in cls.__dataclass_fields__})
        values["conv_kernel_sizes"] = tuple(values["conv_kernel_sizes"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ModelError(
                f"config.json lacks a Speech2Text setting ({exc}).",
                "Download the model again or fix its config.json.",
            ) from None


# ---------------------------------------------------------------------------------------
# Features: Kaldi fbank (80 mel bins, 25 ms povey window, 10 ms hop, pre-emphasis 0.97,
# DC removal, no dither, int16 sample scale), then per-utterance mean/variance normalisation.


def _mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def _kaldi_mel_filters(num_bins: int, fft_size: int, sample_rate: int) -> torch.Tensor:
    """[fft_size // 2 + 1, num_bins] triangles in mel space between 20 Hz and Nyquist."""
    edges = torch.linspace(
        _mel(torch.tensor(20.0, dtype=torch.float64)).item(),
        _mel(torch.tensor(sample_rate / 2, dtype=torch.float64)).item(),
        num_bins + 2,
        dtype=torch.float64,
    )
    bin_hz = torch.arange(fft_size // 2 + 1, dtype=torch.float64) * sample_rate / fft_size
    bin_mel = _mel(bin_hz)[:, None]  # [F, 1]
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class FilterbankFeatures:
    """Mono float32 audio at 16 kHz → normalised log-mel features [frames, num_bins]."""

    fft_size = 512
    _energy_floor = float(torch.finfo(torch.float32).eps)
    _min_std = 1e-5  # digital silence has zero variance: leave it at zero instead of NaN

    def __init__(self, num_bins: int = 80) -> None:
        self.window = torch.hann_window(FRAME_LENGTH, periodic=False, dtype=torch.float64) ** 0.85
        self.filters = _kaldi_mel_filters(num_bins, self.fft_size, SAMPLE_RATE)

    def log_mel(self, audio: np.ndarray) -> torch.Tensor:
        """Kaldi-compatible log-mel filterbank [frames, bins] (float64), before normalising."""
        samples = torch.as_tensor(np.asarray(audio, dtype=np.float32)).to(torch.float64) * 32768.0
        if samples.numel() < FRAME_LENGTH:
            return torch.zeros(0, self.filters.shape[1], dtype=torch.float64)
        frames = samples.unfold(0, FRAME_LENGTH, FRAME_SHIFT)  # [T, 400]
        frames = frames - frames.mean(dim=1, keepdim=True)
        emphasised = torch.cat(
            [frames[:, :1] * (1.0 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]], dim=1
        )
        power = torch.fft.rfft(emphasised * self.window, n=self.fft_size).abs() ** 2  # [T, 257]
        return torch.clamp(power @ self.filters, min=self._energy_floor).log()

    def __call__(self, audio: np.ndarray) -> torch.Tensor:
        """Log-mel with per-utterance mean/variance normalisation, float32 [frames, bins]."""
        feats = self.log_mel(audio)
        if feats.shape[0] == 0:
            return feats.float()
        centred = feats - feats.mean(dim=0)
        std = centred.pow(2).mean(dim=0).sqrt().clamp(min=self._min_std)
        return (centred / std).float()


# ---------------------------------------------------------------------------------------
# Tokenizer: ids → text through vocab.json; text → ids through sentencepiece + vocab.json.


class Speech2TextTokenizer:
    def __init__(self, folder: Path) -> None:
        try:
            vocab: dict[str, int] = json.loads((folder / "vocab.json").read_text("utf-8"))
        except FileNotFoundError:
            raise ModelError(
                f"{folder} has no vocab.json, so its Speech2Text tokenizer is missing.",
                "Download the model again; it needs vocab.json and sentencepiece.bpe.model.",
            ) from None
        self.vocab = vocab
        self.pieces = {index: piece for piece, index in vocab.items()}
        self.languages = {
            match.group(1): index
            for piece, index in vocab.items()
            if (match := _LANG_TOKEN.match(piece))
        }
        self.special_ids = {vocab[p] for p in _SPECIAL_PIECES if p in vocab}
        self.special_ids |= set(self.languages.values())
        settings_path = folder / "tokenizer_config.json"
        settings = json.loads(settings_path.read_text("utf-8")) if settings_path.exists() else {}
        self.upper_case = bool(settings.get("do_upper_case", False))
        self._spm_path = folder / "sentencepiece.bpe.model"
        self._spm = None

    def decode(self, ids: Sequence[int]) -> str:
        pieces = [self.pieces.get(i, "") for i in ids if i not in self.special_ids]
        text = "".join(pieces).replace("▁", " ").strip()
        return text.upper() if self.upper_case else text

    def encode(self, text: str) -> list[int]:
        """Text → ids (no specials); used to force a known beginning on the decoder."""
        if self._spm is None:
            import sentencepiece

            self._spm = sentencepiece.SentencePieceProcessor(model_file=str(self._spm_path))
        unknown = self.vocab.get("<unk>", 3)
        return [self.vocab.get(p, unknown) for p in self._spm.encode(text, out_type=str)]


# ---------------------------------------------------------------------------------------
# Layers. Attention uses torch's fused scaled_dot_product_attention; q/k/v are one matmul.


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


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, D] → [B, H, T, D/H]"""
    batch, length, _ = x.shape
    return x.view(batch, length, heads, -1).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, T, D/H] → [B, T, D]"""
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return _split_heads(q, self.heads), _split_heads(k, self.heads), _split_heads(v, self.heads)


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output [1, S, D] → keys, values [1, H, S, D/H], computed once per window."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return _split_heads(k, self.heads), _split_heads(v, self.heads)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.relu(self.up(self.norm(x))))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.ffn = FeedForward(dim, ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.attn.project(self.attn_norm(x))
        x = x + self.attn.out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))
        return self.ffn(x)


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(dim)
        self.self_attn = SelfAttention(dim, heads)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, heads)
        self.ffn = FeedForward(dim, ffn)


class ConvSubsampler(nn.Module):
    """Features [B, T, C] → [B, ~T/4, D]: stride-2 convolutions, each halved again by a GLU."""

    def __init__(self, config: Speech2TextConfig) -> None:
        super().__init__()
        channels_in = config.input_feat_per_channel * config.input_channels
        last = len(config.conv_kernel_sizes) - 1
        self.convs = nn.ModuleList()
        for i, kernel in enumerate(config.conv_kernel_sizes):
            channels_out = 2 * config.d_model if i == last else config.conv_channels
            self.convs.append(
                nn.Conv1d(channels_in, channels_out, kernel, stride=2, padding=kernel // 2)
            )
            channels_in = channels_out // 2

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.transpose(1, 2)
        for conv in self.convs:
            x = F.glu(conv(x), dim=1)
        return x.transpose(1, 2)


# ---------------------------------------------------------------------------------------
# The model.


class Speech2Text(nn.Module):
    def __init__(self, config: Speech2TextConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.d_model
        self.embed_scale = math.sqrt(dim) if config.scale_embedding else 1.0
        self.subsample = ConvSubsampler(config)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(dim, config.encoder_attention_heads, config.encoder_ffn_dim)
            for _ in range(config.encoder_layers)
        )
        self.encoder_norm = nn.LayerNorm(dim)
        self.embed = nn.Embedding(config.vocab_size, dim)
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(dim, config.decoder_attention_heads, config.decoder_ffn_dim)
            for _ in range(config.decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, config.vocab_size, bias=False)
        # positions are counted from pad_token_id + 1 (fairseq's convention)
        rows = max(config.max_source_positions, config.max_target_positions) + config.pad_token_id
        self.register_buffer(
            "positions", sinusoids(rows + 2, dim, config.pad_token_id), persistent=False
        )

    def encode(self, feats: torch.Tensor) -> torch.Tensor:
        """Normalised features [1, T, 80] → encoder output [1, S, D], S = ceil(ceil(T/2)/2)."""
        x = self.subsample(feats) * self.embed_scale
        first = self.config.pad_token_id + 1
        x = x + self.positions[first : first + x.shape[1]]
        for layer in self.encoder_layers:
            x = layer(x)
        return self.encoder_norm(x)

    def cross_keys_values(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.cross_attn.keys_values(memory) for layer in self.decoder_layers]

    def token_positions(self, ids: torch.Tensor, past: int) -> torch.Tensor:
        """Position rows for new tokens ids [B, T] after `past` tokens; pads get the zero row."""
        pad = self.config.pad_token_id
        real = ids.ne(pad).long()
        return (torch.cumsum(real, dim=1) + past) * real + pad


@dataclass
class _SelfCache:
    """Preallocated self-attention keys/values for all layers: [L, B, H, capacity, D/H]."""

    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0

    def grow(self, needed: int) -> None:
        capacity = self.keys.shape[3]
        if needed <= capacity:
            return
        extra = max(needed, 2 * capacity) - capacity
        self.keys = F.pad(self.keys, (0, 0, 0, extra))
        self.values = F.pad(self.values, (0, 0, 0, extra))


class Speech2TextDecoderState:
    """The decoder for `engine.models.generation.generate`: one step at a time, cached."""

    def __init__(
        self,
        model: Speech2Text,
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        rows: int,
        capacity: int,
    ) -> None:
        self.model = model
        self.cross = cross  # [1, H, S, D/H] per layer: the same for every row
        config = model.config
        heads = config.decoder_attention_heads
        shape = (config.decoder_layers, rows, heads, capacity, config.d_model // heads)
        like = cross[0][0]
        self.cache = _SelfCache(
            torch.zeros(shape, dtype=like.dtype, device=like.device),
            torch.zeros(shape, dtype=like.dtype, device=like.device),
        )

    @torch.inference_mode()
    def step(self, ids: torch.Tensor, outputs: int = 1) -> torch.Tensor:
        """ids [B, T] → logits of the last `outputs` positions [B, outputs, V] (float32, on
        the CPU)."""
        model, cache = self.model, self.cache
        ids = ids.to(cache.keys.device)
        new = ids.shape[1]
        past, total = cache.length, cache.length + new
        cache.grow(total)
        x = model.embed(ids) * model.embed_scale + model.positions[model.token_positions(ids, past)]
        mask = None
        if new > 1:  # the forced start: causal within the new tokens
            mask = torch.arange(new, device=ids.device)[:, None] + past >= torch.arange(
                total, device=ids.device
            )
        for index, layer in enumerate(model.decoder_layers):
            q, k, v = layer.self_attn.project(layer.self_norm(x))
            cache.keys[index, :, :, past:total] = k
            cache.values[index, :, :, past:total] = v
            keys, values = cache.keys[index, :, :, :total], cache.values[index, :, :, :total]
            attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            x = x + layer.self_attn.out(_merge_heads(attended))
            x = x + layer.cross_attn.out(self._attend_encoder(layer, x, *self.cross[index]))
            x = layer.ffn(x)
        cache.length = total
        return model.lm_head(model.decoder_norm(x[:, -outputs:])).float().cpu()

    def truncate(self, length: int) -> None:
        self.cache.length = length

    @staticmethod
    def _attend_encoder(
        layer: DecoderLayer, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """Cross-attention for x [B, T, D]. Every row attends to the same encoder output, so
        the rows' queries go in as one sequence [1, H, B*T, D/H] against keys [1, H, S, D/H]
        instead of copying the keys and values once per beam."""
        batch, length, _ = x.shape
        q = _split_heads(layer.cross_attn.q(layer.cross_norm(x)), layer.cross_attn.heads)
        heads, head_dim = q.shape[1], q.shape[3]
        queries = q.transpose(0, 1).reshape(1, heads, batch * length, head_dim)
        attended = F.scaled_dot_product_attention(queries, keys, values)
        return _merge_heads(attended.reshape(heads, batch, length, head_dim).transpose(0, 1))

    def reorder(self, beam_idx: torch.Tensor) -> None:
        cache, used = self.cache, self.cache.length
        index = beam_idx.to(cache.keys.device)
        cache.keys[:, :, :, :used] = cache.keys[:, index, :, :used]
        cache.values[:, :, :, :used] = cache.values[:, index, :, :used]


class Speech2TextTranscriber:
    """A loaded Speech2Text checkpoint as a `SpeechSeq2Seq`: audio window → hypothesis."""

    sample_rate = SAMPLE_RATE
    seconds_per_frame = 4 * FRAME_SHIFT / SAMPLE_RATE  # encoder frames are 40 ms

    def __init__(
        self,
        model: Speech2Text,
        tokenizer: Speech2TextTokenizer,
        generation: GenerationConfig,
        language_id: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.generation = replace(generation, forced_bos_token_id=language_id)
        self.language_id = language_id
        self.features = FilterbankFeatures(model.config.input_feat_per_channel)
        self.device = model.embed.weight.device
        self.dtype = model.embed.weight.dtype

    @torch.inference_mode()
    def encode(self, audio: np.ndarray) -> torch.Tensor:
        feats = self.features(audio).to(self.device, self.dtype)
        return self.model.encode(feats[None])

    @torch.inference_mode()
    def generate(self, memory: torch.Tensor, prefix: Sequence[int] = ()) -> list[int]:
        """The whole generated sequence (start tokens included), like transformers' output."""
        return self._search(self.model.cross_keys_values(memory), prefix)

    def _search(
        self,
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        prefix: Sequence[int],
        draft: Sequence[int] = (),
    ) -> list[int]:
        start = [self.generation.decoder_start_token_id]
        language = [self.language_id] if self.language_id is not None else []
        if prefix:  # the language token is then forced explicitly, before the prefix
            start += language + list(prefix)
        else:  # forced_bos generates it: the draft starts there
            draft = [*language, *draft]
        # a forced prefix is text already said: it does not eat into the budget for new text
        config = replace(self.generation, max_length=self.generation.max_length + len(prefix))

        def new_state(rows: int) -> Speech2TextDecoderState:
            return Speech2TextDecoderState(self.model, cross, rows, config.max_length)

        return generate(new_state, config, start_ids=start, draft=draft)

    def decode(
        self, audio: np.ndarray, prefix: Sequence[int] = (), draft: Sequence[int] = ()
    ) -> Hypothesis:
        if len(audio) < FRAME_LENGTH:  # not one feature frame
            return Hypothesis(ids=list(prefix), times=[0.0] * len(prefix))
        with torch.inference_mode():
            cross = self.model.cross_keys_values(self.encode(audio))
            sequence = self._search(cross, prefix, draft)
        ids = [i for i in sequence[1:] if i not in self.tokenizer.special_ids]
        times = self.align(cross, sequence, len(audio) / SAMPLE_RATE)
        return Hypothesis(ids=ids, times=times)

    @torch.inference_mode()
    def align(
        self, cross: list[tuple[torch.Tensor, torch.Tensor]], sequence: list[int], duration: float
    ) -> list[float]:
        """Each text token's end time (s), from cross-attention averaged over layers and
        heads: the monotonic token → encoder-frame path that collects the most attention
        (robust to stray peaks). Cheap: one teacher-forced pass over the sequence."""
        text_rows = [
            i for i, token in enumerate(sequence) if token not in self.tokenizer.special_ids
        ]
        if not text_rows:
            return []
        model = self.model
        tokens = torch.tensor([sequence], device=self.device)
        mask = torch.ones(len(sequence), len(sequence), dtype=torch.bool, device=self.device)
        mask = mask.tril()
        x = (
            model.embed(tokens) * model.embed_scale
            + model.positions[model.token_positions(tokens, 0)]
        )
        weights = torch.zeros(len(sequence), cross[0][0].shape[2], device=self.device)
        for layer, (cross_k, cross_v) in zip(model.decoder_layers, cross, strict=True):
            q, k, v = layer.self_attn.project(layer.self_norm(x))
            x = x + layer.self_attn.out(
                _merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
            )
            q = _split_heads(layer.cross_attn.q(layer.cross_norm(x)), layer.cross_attn.heads)
            probs = torch.softmax((q @ cross_k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5, -1)
            weights += probs[0].mean(dim=0)
            x = x + layer.cross_attn.out(_merge_heads(probs.to(cross_v.dtype) @ cross_v))
            x = layer.ffn(x)
        return token_end_times(weights[text_rows], self.seconds_per_frame, duration)

    def text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)


# ---------------------------------------------------------------------------------------
# Weight loading: checkpoint (transformers layout) names → ours.


def _checkpoint_name_map(config: Speech2TextConfig) -> dict[str, list[str]]:
    """Our parameter → the checkpoint tensors it is made of (concatenated along dim 0)."""
    names: dict[str, list[str]] = {}

    def linear(ours: str, theirs: list[str]) -> None:
        for part in ("weight", "bias"):
            names[f"{ours}.{part}"] = [f"{t}.{part}" for t in theirs]

    for i in range(len(config.conv_kernel_sizes)):
        linear(f"subsample.convs.{i}", [f"model.encoder.conv.conv_layers.{i}"])
    for i in range(config.encoder_layers):
        src, dst = f"model.encoder.layers.{i}", f"encoder_layers.{i}"
        linear(f"{dst}.attn_norm", [f"{src}.self_attn_layer_norm"])
        linear(f"{dst}.attn.qkv", [f"{src}.self_attn.{p}_proj" for p in "qkv"])
        linear(f"{dst}.attn.out", [f"{src}.self_attn.out_proj"])
        linear(f"{dst}.ffn.norm", [f"{src}.final_layer_norm"])
        linear(f"{dst}.ffn.up", [f"{src}.fc1"])
        linear(f"{dst}.ffn.down", [f"{src}.fc2"])
    linear("encoder_norm", ["model.encoder.layer_norm"])
    names["embed.weight"] = ["model.decoder.embed_tokens.weight"]
    for i in range(config.decoder_layers):
        src, dst = f"model.decoder.layers.{i}", f"decoder_layers.{i}"
        linear(f"{dst}.self_norm", [f"{src}.self_attn_layer_norm"])
        linear(f"{dst}.self_attn.qkv", [f"{src}.self_attn.{p}_proj" for p in "qkv"])
        linear(f"{dst}.self_attn.out", [f"{src}.self_attn.out_proj"])
        linear(f"{dst}.cross_norm", [f"{src}.encoder_attn_layer_norm"])
        linear(f"{dst}.cross_attn.q", [f"{src}.encoder_attn.q_proj"])
        linear(f"{dst}.cross_attn.kv", [f"{src}.encoder_attn.{p}_proj" for p in "kv"])
        linear(f"{dst}.cross_attn.out", [f"{src}.encoder_attn.out_proj"])
        linear(f"{dst}.ffn.norm", [f"{src}.final_layer_norm"])
        linear(f"{dst}.ffn.up", [f"{src}.fc1"])
        linear(f"{dst}.ffn.down", [f"{src}.fc2"])
    linear("decoder_norm", ["model.decoder.layer_norm"])
    names["lm_head.weight"] = ["lm_head.weight"]
    return names


def _read_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors (or shards); pytorch_model.bin only through weights_only loading."""
    from safetensors.torch import load_file

    single = folder / "model.safetensors"
    if single.exists():
        return load_file(single)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text("utf-8"))["weight_map"].values()))
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(load_file(folder / shard))
        return tensors
    pickle = folder / "pytorch_model.bin"
    if pickle.exists():
        # weights_only refuses any pickled code: only plain tensors can come out of it
        try:
            return torch.load(pickle, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise ModelError(
                f"{pickle} holds more than plain tensors, so it was not loaded ({exc}).",
                "Use a copy of the model with model.safetensors.",
            ) from None
    raise ModelError(
        f"{folder} has no model.safetensors.",
        "Download the model again; Livecap loads weights from safetensors files.",
    )


def _load_weights(model: Speech2Text, checkpoint: dict[str, torch.Tensor]) -> None:
    if "lm_head.weight" not in checkpoint:  # tied to the token embedding
        checkpoint["lm_head.weight"] = checkpoint["model.decoder.embed_tokens.weight"]
    state = {}
    for ours, theirs in _checkpoint_name_map(model.config).items():
        missing = [name for name in theirs if name not in checkpoint]
        if missing:
            raise ModelError(
                f"The Speech2Text checkpoint lacks {missing[0]}.",
                "The weights do not match config.json: download the model again.",
            )
        parts = [checkpoint[name] for name in theirs]
        state[ours] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    model.load_state_dict(state, strict=True, assign=True)


def _pick_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("CUDA was requested but no CUDA GPU is usable.", "Use --device cpu.")
    return requested


def _pick_dtype(requested: str, device: str) -> torch.dtype:
    if requested == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if requested not in dtypes:
        raise ModelError(
            f"Speech2Text cannot run in {requested}.",
            "Choose --dtype float32 or bfloat16 for Speech2Text models.",
        )
    return dtypes[requested]


def load_model(
    folder: Path, name: str, options: LoadOptions
) -> tuple[Speech2TextTranscriber, ModelInfo]:
    """Build the model from `folder` (Hub layout) for the chunked policy, with its info."""
    config = Speech2TextConfig.from_dict(json.loads((folder / "config.json").read_text("utf-8")))
    tokenizer = Speech2TextTokenizer(folder)
    generation = GenerationConfig.from_folder(folder, num_beams=options.beams)
    language_id, task, language = None, "transcribe", None
    if tokenizer.languages:
        task = "translate"
        known = ", ".join(sorted(tokenizer.languages))
        if options.target_lang is None:
            raise ModelError(
                f"{name} translates speech and needs a target language.",
                f"Pass a target language (--target-lang), one of: {known}.",
            )
        if options.target_lang not in tokenizer.languages:
            raise ModelError(
                f"{name} cannot translate into '{options.target_lang}'.",
                f"Choose one of: {known}.",
            )
        language = options.target_lang
        language_id = tokenizer.languages[language]
    device = _pick_device(options.device)
    dtype = _pick_dtype(options.dtype, device)
    with torch.device("meta"):
        model = Speech2Text(config)
    _load_weights(model, _read_checkpoint(folder))
    model.positions = sinusoids(model.positions.shape[0], config.d_model, config.pad_token_id)
    model = model.to(device=device, dtype=dtype).eval()
    info = ModelInfo(
        name=name,
        family="speech2text",
        languages=tuple(sorted(tokenizer.languages)),
        language=language,
        delay_seconds=0.0,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        task=task,
    )
    return Speech2TextTranscriber(model, tokenizer, generation, language_id), info
