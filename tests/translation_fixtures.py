"""Tiny random text translation models saved by transformers in the Hub layout.

Marian: a `source.spm` trained on English, a `target.spm` trained on French and one shared
vocab.json (`</s>` 0, `<unk>` 1, the pieces, `<pad>` last), as the opus-mt repos ship them.
M2M100: one sentencepiece model with a fairseq vocab.json (specials 0-3, then the pieces;
the `__xx__` language tokens numbered after it by the tokenizer). The sentencepiece files are
real models trained here on a small text. Weights are random, drawn wider than the default
init so that generated tokens vary and beam ties cannot hinge on rounding.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import torch

ENGLISH = """the quick brown fox jumps over the lazy dog
speech turns into captions as it is spoken
a translation appears beside the captions
every session is kept as a transcript that can be searched
the meeting starts at nine and ends before noon
please repeat the last sentence a little more slowly
"""
FRENCH = """le renard brun saute par dessus le chien paresseux
la parole devient des sous titres pendant qu'on parle
une traduction apparait a cote des sous titres
chaque session est gardee comme une transcription
la reunion commence a neuf heures et finit avant midi
"""
SENTENCES = (
    "the quick brown fox",
    "a translation appears beside the captions",
    "please repeat the meeting",
)


def _train(text: str, prefix: Path, size: int) -> list[str]:
    """A sentencepiece BPE model at `prefix`.model; its pieces (sentencepiece's controls out)."""
    import sentencepiece as spm

    corpus = prefix.with_suffix(".txt")
    corpus.write_text(text, encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=size,
        model_type="bpe",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    corpus.unlink()
    prefix.with_suffix(".vocab").unlink()
    processor = spm.SentencePieceProcessor(model_file=str(prefix.with_suffix(".model")))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    return [p for p in pieces if p not in ("<unk>", "<s>", "</s>")]


def _spread_weights(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                scale = 0.15 if "shared" in name else 3.0 * param[0].numel() ** -0.5
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def _shape(vocab_size: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_position_embeddings=128,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )


def build_marian(folder: Path, max_length: int = 24, num_beams: int = 4) -> Path:
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    source = _train(ENGLISH, folder / "source", 70)
    target = _train(FRENCH, folder / "target", 70)
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in source + target:
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    for side in ("source", "target"):
        (folder / f"{side}.model").rename(folder / f"{side}.spm")
    pad = vocab["<pad>"]
    config = MarianConfig(
        **_shape(len(vocab)),
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=pad,
        decoder_start_token_id=pad,
        eos_token_id=0,
        forced_eos_token_id=0,
    )
    torch.manual_seed(0)
    model = MarianMTModel(config).eval()
    _spread_weights(model, seed=3)
    with torch.no_grad():  # a bias on the logits, which checkpoints carry and a zero hides
        model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape) * 0.5)
    generation = model.generation_config
    generation.max_length, generation.num_beams = max_length, num_beams
    generation.bad_words_ids = [[pad]]
    model.save_pretrained(folder)
    MarianTokenizer(
        str(folder / "source.spm"),
        str(folder / "target.spm"),
        str(folder / "vocab.json"),
        source_lang="en",
        target_lang="fr",
    ).save_pretrained(folder)
    return folder


def build_m2m100(folder: Path, max_length: int = 24, num_beams: int = 5) -> Path:
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    from engine.models.text_tokenizer import M2M100_CODES

    folder.mkdir(parents=True, exist_ok=True)
    pieces = _train(ENGLISH + FRENCH, folder / "spm", 110)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "spm.model").rename(folder / "sentencepiece.bpe.model")
    config = M2M100Config(**_shape(len(vocab) + len(M2M100_CODES) + 8))  # + fairseq's madeup
    torch.manual_seed(0)
    model = M2M100ForConditionalGeneration(config).eval()
    _spread_weights(model, seed=4)
    generation = model.generation_config
    generation.max_length, generation.num_beams = max_length, num_beams
    generation.early_stopping = True
    model.save_pretrained(folder)
    return folder


def m2m100_tokenizer(folder: Path, source: str, target: str):
    """transformers' tokenizer for a build_m2m100 folder (the oracle's)."""
    from transformers import M2M100Tokenizer

    return M2M100Tokenizer(
        str(folder / "vocab.json"),
        str(folder / "sentencepiece.bpe.model"),
        src_lang=source,
        tgt_lang=target,
    )


@functools.cache
def tiny(kind: str) -> Path:
    """One tiny checkpoint of each family per test process ("marian" or "m2m100")."""
    root = Path(tempfile.mkdtemp(prefix="livecap-mt-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    builders = {"marian": build_marian, "m2m100": build_m2m100}
    return builders[kind](root / kind)


def saved_layout(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """What save_pretrained writes for `model`, computed without tensors (meta device)."""
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    state = remove_tied_weights_from_state_dict(model.state_dict(), model)
    return {k: tuple(v.shape) for k, v in revert_weight_conversion(model, state).items()}


def load_layout(ours: torch.nn.Module, layout: dict[str, tuple[int, ...]], folder: Path) -> None:
    """Load meta tensors named and shaped as `layout` into our meta-device model: the
    loader's own checks (every tensor read, none missing, every shape) decide."""
    from engine.models import loading
    from engine.models.text_encoder import load_weights

    checkpoint = loading.Checkpoint.__new__(loading.Checkpoint)
    checkpoint.folder = folder
    checkpoint.shapes = dict(layout)
    checkpoint.tensors = lambda: {k: torch.empty(s, device="meta") for k, s in layout.items()}
    load_weights(ours, checkpoint)
