"""Tiny random-weight Kyutai STT models built and saved by transformers (the oracle).

transformers' random init leaves Mimi's codebooks at zero (every code would be 0) and its text
head emits no structure, so a parity test on it proves little. `build_tiny_model` therefore
fills each codebook with entries on the scale of the residual it quantizes, and tilts the
text head so that pads (3) and word starts (0) come out often among ordinary pieces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 24_000
FRAME = 1920
HEAD_SCALE = 20.0
# Full-size LM shapes (DESIGN.md, model cards): dim 2048; 1B 16 layers, 16 heads, window 750,
# vocab 8000; 2.6B 48 layers, 32 heads, window 375, vocab 4000. ffn 11264 = 2·2048·4.125·2/3.
FULL_SIZE = {
    "1b": dict(num_hidden_layers=16, num_attention_heads=16, sliding_window=750, vocab_size=8001),
    "2.6b": dict(num_hidden_layers=48, num_attention_heads=32, sliding_window=375, vocab_size=4001),
}


@dataclass(frozen=True)
class TinyShape:
    name: str
    lm_layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    lm_hidden: int = 32
    window: int = 20  # LM sliding window, in frames (shorter than the test audio)
    max_positions: int = 30
    codebooks: int = 4  # codebooks the LM uses
    quantizers: int = 4  # codebooks in the codec
    mimi_layers: int = 2
    mimi_context: int = 16  # Mimi transformer window, in 25 Hz steps
    vocab: int = 48
    delay_seconds: float = 0.5
    silence_prefix_seconds: float = 0.0
    pad_bias: float = 1.0  # weight of the text head's pad row on the constant direction
    word_bias: float = 0.8  # same for token 0 (a word starts next)


SHAPES = {
    "gqa": TinyShape("gqa"),
    "mha_more_codebooks": TinyShape(
        "mha_more_codebooks",
        heads=4,
        kv_heads=4,
        codebooks=6,
        quantizers=6,
        mimi_layers=3,
        word_bias=1.2,
    ),
    "prefix": TinyShape(
        "prefix",
        lm_layers=1,
        heads=2,
        kv_heads=1,
        codebooks=3,
        quantizers=3,
        mimi_layers=1,
        delay_seconds=0.8,
        silence_prefix_seconds=1.0,
        window=12,
        pad_bias=0.8,
        word_bias=0.8,
    ),
    "long": TinyShape(
        "long",
        lm_layers=1,
        heads=2,
        kv_heads=1,
        lm_hidden=16,
        codebooks=2,
        quantizers=2,
        mimi_layers=1,
        window=20,
        max_positions=30,
    ),
}


def speechlike_audio(seconds: float, seed: int, pauses: tuple[tuple[float, float], ...] = ()):
    """Noise shaped like syllables (4 Hz envelope, varying loudness), with silent gaps."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6.28))
    loudness = np.repeat(rng.uniform(0.05, 0.4, size=n // 4800 + 1), 4800)[:n]
    audio = (rng.standard_normal(n) * envelope * loudness).astype(np.float32)
    for start, end in pauses:
        audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)] = 0.0
    return audio


def _tokenizer_json(vocab: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    pieces = [(p, 0.0) for p in specials]
    for i in range(len(specials), vocab):
        pieces.append((f"▁w{i}" if i % 3 == 0 else f"x{i}", -float(i)))
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=0))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.add_special_tokens(specials)
    return tokenizer.to_str()


def randomize_codebooks(model, seed: int) -> None:
    """Codebook entries drawn at the scale of the residual each codebook sees (distinct, as
    trained ones are)."""
    generator = torch.Generator().manual_seed(seed)
    codec = model.codec_model
    audio = torch.from_numpy(speechlike_audio(4.0, seed + 1)).view(1, 1, -1)
    with torch.no_grad():
        latents = codec.encoder(audio).latents  # [1, hidden, frames]
        quantizer = codec.quantizer
        for rvq in (
            quantizer.semantic_residual_vector_quantizer,
            quantizer.acoustic_residual_vector_quantizer,
        ):
            residual = rvq.input_proj(latents) if rvq.input_proj is not None else latents
            residual = residual[0].T  # [frames, dim]
            for layer in rvq.layers:
                book = layer.codebook
                size, dim = book.embed_sum.shape
                picks = torch.randint(0, residual.shape[0], (size,), generator=generator)
                noise = torch.randn(size, dim, generator=generator) * residual.std() * 0.5
                usage = torch.rand(size, generator=generator) + 0.5
                book.embed_sum.copy_((residual[picks] + noise) * usage[:, None])
                book.cluster_usage.copy_(usage)
                book._embed = None
                index = torch.cdist(residual[None], book.embed[None])[0].argmin(dim=1)
                residual = residual - book.embed[index]


def _tilt_text_head(model, shape: TinyShape) -> None:
    """A constant direction in every embedding survives the layers; the pad and word-start
    rows of the head lean on it, so those tokens win often but not always."""
    with torch.no_grad():
        model.model.embed_tokens.embed_tokens.weight[:, 0] += 0.05
        model.lm_head.weight.mul_(HEAD_SCALE)
        model.lm_head.weight[3, 0] += shape.pad_bias
        model.lm_head.weight[0, 0] += shape.word_bias


def build_tiny_model(folder: Path, shape: TinyShape, seed: int = 0) -> Path:
    """Save a random tiny Kyutai STT model in the Hub layout (what `-trfs` repos hold)."""
    from transformers import (
        KyutaiSpeechToTextConfig,
        KyutaiSpeechToTextForConditionalGeneration,
        MimiConfig,
    )

    torch.manual_seed(seed)
    codec = MimiConfig(
        hidden_size=16,
        num_filters=4,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_hidden_layers=shape.mimi_layers,
        codebook_size=64,
        codebook_dim=8,
        vector_quantization_hidden_dimension=8,
        num_quantizers=shape.quantizers,
        sliding_window=shape.mimi_context,
        upsample_groups=16,
    )
    config = KyutaiSpeechToTextConfig(
        codec_config=codec.to_dict(),
        vocab_size=shape.vocab,
        hidden_size=shape.lm_hidden,
        num_hidden_layers=shape.lm_layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        ffn_dim=64,
        codebook_vocab_size=65,
        num_codebooks=shape.codebooks,
        sliding_window=shape.window,
        max_position_embeddings=shape.max_positions,
        bos_token_id=shape.vocab - 1,
        audio_bos_token_id=64,
        audio_pad_token_id=shape.vocab + shape.codebooks * 65,
    )
    model = KyutaiSpeechToTextForConditionalGeneration(config).eval()
    randomize_codebooks(model, seed)
    _tilt_text_head(model, shape)
    model.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(_tokenizer_json(shape.vocab), encoding="utf-8")
    preprocessor = {
        "feature_extractor_type": "KyutaiSpeechToTextFeatureExtractor",
        "feature_size": 1,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": True,
        "sampling_rate": SAMPLE_RATE,
        "audio_delay_seconds": shape.delay_seconds,
        "audio_silence_prefix_seconds": shape.silence_prefix_seconds,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor), encoding="utf-8")
    return folder


def reference_generate(folder: Path, audio: np.ndarray) -> tuple[list[int], str]:
    """transformers' own pipeline: feature extractor padding, generate(), batch_decode."""
    from transformers import (
        KyutaiSpeechToTextFeatureExtractor,
        KyutaiSpeechToTextForConditionalGeneration,
        PreTrainedTokenizerFast,
    )

    extractor = KyutaiSpeechToTextFeatureExtractor.from_pretrained(folder)
    model = KyutaiSpeechToTextForConditionalGeneration.from_pretrained(folder).eval()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    inputs = extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False)
    text = tokenizer.batch_decode(out, skip_special_tokens=True)[0]
    return out[0].tolist(), text


def reference_codes(folder: Path, audio: np.ndarray) -> torch.Tensor:
    """transformers' MimiModel encoding of the whole audio at once: [frames, codebooks]."""
    from transformers import KyutaiSpeechToTextForConditionalGeneration

    model = KyutaiSpeechToTextForConditionalGeneration.from_pretrained(folder).eval()
    codebooks = model.config.num_codebooks
    with torch.no_grad():
        codes = model.codec_model.encode(
            torch.from_numpy(audio).view(1, 1, -1), num_quantizers=codebooks
        ).audio_codes
    return codes[0].T


def held_bytes(model: object) -> int:
    """Bytes of the distinct tensor storages reachable from `model`'s attributes (a loaded
    model's weights, read through its public structure)."""
    import torch

    seen: dict[int, int] = {}
    visited: set[int] = set()
    pending = [model]
    while pending:
        item = pending.pop()
        if id(item) in visited:
            continue
        visited.add(id(item))
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        elif isinstance(item, dict):
            pending += list(item.values())
        elif isinstance(item, list | tuple):
            pending += list(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            pending += list(vars(item).values())
    return sum(seen.values())
