"""MarianMT (`Helsinki-NLP/opus-mt-SRC-TGT`): one model per language pair.

The network is text_encoder.TextEncoderDecoder with post-norm layers, no embedding
LayerNorm, a bias on the logits (`final_logits_bias`) and Marian's own sinusoidal table:
positions counted from 0, sines in the first half of the columns and cosines in the second,
at frequencies 10000^(-2i/width). The tokenizer is two sentencepiece models (`source.spm`
segments the input, `target.spm` joins the output) over one `vocab.json`; the pad token is
also the decoder's start token, and generation bans it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from engine.errors import ModelError
from engine.models import loading
from engine.models.contract import LoadOptions
from engine.models.text_encoder import TextEncoderDecoder, build_network
from engine.models.text_tokenizer import open_sentencepiece
from engine.models.translator import TextTranslator, load_text_model

_PAIR = re.compile(r"opus-mt-([a-z]{2,3})-([a-z]{2,3})$")


class MarianPositions(nn.Module):
    """Marian's fixed position table, computed (never read from a checkpoint: `fill`)."""

    def __init__(self, count: int, width: int) -> None:
        super().__init__()
        self.count, self.width = count, width
        self.register_buffer("table", torch.empty(count, width), persistent=False)

    def fill(self) -> None:
        columns = torch.arange(self.width, dtype=torch.float64)
        rates = torch.pow(10000.0, -2 * torch.div(columns, 2, rounding_mode="floor") / self.width)
        angles = torch.arange(self.count, dtype=torch.float64)[:, None] * rates[None, :]
        table = torch.cat([torch.sin(angles[:, 0::2]), torch.cos(angles[:, 1::2])], dim=1)
        self.table = table.float()

    def forward(self, ids: torch.Tensor, past: int) -> torch.Tensor:
        return self.table[past : past + ids.shape[1]]


class MarianTokenizer:
    """Text → ids through source.spm and vocab.json; ids → text through target.spm."""

    def __init__(self, folder: Path, name: str) -> None:
        vocab = loading.read_json(folder / "vocab.json")
        self.pieces = {index: piece for piece, index in vocab.items()}
        self.vocab = vocab
        self.unk = vocab.get("<unk>", 1)
        self.eos = vocab.get("</s>", 0)
        self.specials = {vocab[p] for p in ("</s>", "<unk>", "<pad>") if p in vocab}
        self.source_spm = open_sentencepiece(folder / "source.spm")
        self.target_spm = open_sentencepiece(folder / "target.spm")
        settings = loading.read_json(folder / "tokenizer_config.json", missing_ok=True)
        source, target = settings.get("source_lang"), settings.get("target_lang")
        if not (isinstance(source, str) and isinstance(target, str)):
            pair = _PAIR.search(name.rstrip("/"))
            if pair is None:
                raise ModelError(
                    f"{name} does not say which languages it translates between.",
                    "Give its tokenizer_config.json 'source_lang' and 'target_lang', or "
                    "keep the Hub name (opus-mt-SRC-TGT) as the folder's name.",
                )
            source, target = pair.groups()
        self.sources, self.targets = (source,), (target,)

    def encode(self, text: str, source: str) -> list[int]:
        pieces = self.source_spm.encode(text, out_type=str)
        return [self.vocab.get(piece, self.unk) for piece in pieces] + [self.eos]

    def target_token(self, target: str) -> int | None:
        return None

    def decode(self, ids: Sequence[int]) -> str:
        pieces = [self.pieces[i] for i in ids if i in self.pieces and i not in self.specials]
        return self.target_spm.decode_pieces(pieces)


def build_model(values: dict, path: Path) -> TextEncoderDecoder:
    """The network config.json describes (on the current default device)."""
    if values.get("share_encoder_decoder_embeddings", True) is False:
        raise ModelError(
            f"{path.parent}: Marian models with separate source and target vocabularies "
            "are not supported.",
            "Choose an opus-mt model with one shared vocabulary.",
        )
    model = build_network(values, path, False, "swish", False, output_bias=True)
    model.decoder.embed_positions = MarianPositions(model.max_positions, values["d_model"])
    return model


def load_model(folder: Path, name: str, options: LoadOptions) -> TextTranslator:
    tokenizer = MarianTokenizer(folder, name)
    return load_text_model(folder, name, options, tokenizer, build_model, "marian")
