"""Tiny random Speech2Text models saved by transformers in the Hub layout.

Two shapes: English ASR (no language tokens) and multilingual speech translation (MuST-C
`<lang:xx>` tokens, the target forced first). The tokenizer is a real sentencepiece BPE model
trained on a small text, with a fairseq-style vocab.json (specials 0-3, language tokens, then
the pieces), exactly the files the published checkpoints carry. Weights are random but
re-drawn wider than the default init so that logits are spread out: generated tokens vary,
and beam ties cannot hinge on rounding.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 16000
MUSTC_LANGS = ("pt", "fr", "ru", "nl", "ro", "it", "es", "de")
TEXT = """the quick brown fox jumps over the lazy dog
speech turns into captions as it is spoken
a translation appears beside the captions
every session is kept as a transcript that can be searched
the meeting starts at nine and ends before noon
please repeat the last sentence a little more slowly
we measured the latency of every caption on two cores
"""


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-sounding signal: gliding harmonics with syllable-rate loudness, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + seed) ** 2
    audio = 0.2 * syllables * voiced + 0.02 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


def _tokenizer_files(folder: Path, languages: tuple[str, ...]) -> int:
    """Train sentencepiece, write vocab.json + tokenizer files; returns the vocab size."""
    import sentencepiece as spm
    from transformers import Speech2TextTokenizer

    corpus = folder / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    lang_tokens = [f"<lang:{lang}>" for lang in languages]
    options = dict(
        input=str(corpus),
        model_prefix=str(folder / "spm"),
        vocab_size=90,
        model_type="bpe",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    if lang_tokens:
        options["user_defined_symbols"] = lang_tokens
    spm.SentencePieceTrainer.train(**options)
    processor = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for piece in lang_tokens + [p for p in pieces if p not in ("<unk>", "<s>", "</s>")]:
        vocab.setdefault(piece, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "spm.model").rename(folder / "sentencepiece.bpe.model")
    for leftover in (corpus, folder / "spm.vocab"):
        leftover.unlink()
    extra = {"lang_codes": "mustc", "tgt_lang": languages[-1]} if languages else {}
    Speech2TextTokenizer(
        str(folder / "vocab.json"), str(folder / "sentencepiece.bpe.model"), **extra
    ).save_pretrained(folder)
    return len(vocab)


def _spread_weights(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                gain = 4.0 if "decoder" in name else 1.2  # a strong decoder varies its output
                scale = 0.3 if "embed_tokens" in name else gain * param[0].numel() ** -0.5
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def build(kind: str, folder: Path, max_length: int = 24, num_beams: int = 5) -> Path:
    """kind "asr" or "st"; saves config, safetensors weights, tokenizer and preprocessor."""
    from transformers import (
        Speech2TextConfig,
        Speech2TextFeatureExtractor,
        Speech2TextForConditionalGeneration,
    )

    folder.mkdir(parents=True, exist_ok=True)
    languages = MUSTC_LANGS if kind == "st" else ()
    vocab_size = _tokenizer_files(folder, languages)
    config = Speech2TextConfig(
        vocab_size=vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        conv_channels=24,
        max_source_positions=1000,
        max_target_positions=100,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    torch.manual_seed(0)
    model = Speech2TextForConditionalGeneration(config).eval()
    _spread_weights(model, seed=1 if kind == "asr" else 2)
    model.generation_config.max_length = max_length
    model.generation_config.num_beams = num_beams
    model.generation_config.early_stopping = True
    if kind == "st":
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        model.generation_config.forced_bos_token_id = vocab["<lang:de>"]
    model.save_pretrained(folder)
    Speech2TextFeatureExtractor().save_pretrained(folder)
    return folder


@functools.cache
def tiny(kind: str) -> Path:
    """One tiny checkpoint of each kind per test process, shared by the test modules."""
    root = Path(tempfile.mkdtemp(prefix="livecap-s2t-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build(kind, root / kind)


@contextlib.contextmanager
def one_thread():
    """Tiny models run faster on one thread than fighting over two (and the suite is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
