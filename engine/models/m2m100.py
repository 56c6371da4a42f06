"""M2M100 (`facebook/m2m100_418M`) and NLLB-200, which shares its network: many-to-many.

The network is text_encoder.TextEncoderDecoder with pre-norm layers and final LayerNorms,
fairseq's sinusoidal positions (bart.SinusoidalPositions) and no bias on the logits. The
encoder reads `[source language] text </s>`; the decoder starts from `</s>` and is forced
to write the target language's token first.

Tokenizers: M2M100 ships `sentencepiece.bpe.model` with a `vocab.json` (fairseq ids) and its
100 `__xx__` language tokens numbered after the vocabulary in a fixed order; NLLB ships a
`tokenizer.json` whose vocabulary holds its language tokens (`eng_Latn`, `fra_Latn`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from engine.errors import ModelError
from engine.models import loading
from engine.models.contract import LoadOptions
from engine.models.text_encoder import TextEncoderDecoder, build_network
from engine.models.text_tokenizer import M2M100_CODES, NLLB_CODES, open_sentencepiece
from engine.models.translator import TextTranslator, load_text_model

_NLLB_TOKEN = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


class M2M100Tokenizer:
    """sentencepiece.bpe.model + vocab.json, languages as `__xx__` tokens."""

    def __init__(self, folder: Path) -> None:
        self.vocab = loading.read_json(folder / "vocab.json")
        self.pieces = {index: piece for piece, index in self.vocab.items()}
        self.spm = open_sentencepiece(folder / "sentencepiece.bpe.model")
        self.language_ids = {code: len(self.vocab) + i for i, code in enumerate(M2M100_CODES)}
        self.sources = self.targets = tuple(M2M100_CODES)
        self.specials = {self.vocab[p] for p in _SPECIALS if p in self.vocab}
        self.eos, self.unk = self.vocab.get("</s>", 2), self.vocab.get("<unk>", 3)

    def encode(self, text: str, source: str) -> list[int]:
        ids = [self.vocab.get(p, self.unk) for p in self.spm.encode(text, out_type=str)]
        return [self.language_ids[source], *ids, self.eos]

    def target_token(self, target: str) -> int | None:
        return self.language_ids.get(target)

    def decode(self, ids: Sequence[int]) -> str:
        pieces = [self.pieces[i] for i in ids if i in self.pieces and i not in self.specials]
        return self.spm.decode_pieces(pieces)


class NllbTokenizer:
    """tokenizer.json; languages as NLLB codes, also reachable by their ISO 639-1 codes."""

    def __init__(self, folder: Path) -> None:
        self.tokenizer = loading.open_tokenizer(folder / "tokenizer.json")
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        own = {code: index for code, index in vocab.items() if _NLLB_TOKEN.match(code)}
        short = {iso: own[code] for iso, code in NLLB_CODES.items() if code in own}
        self.language_ids = {**own, **short}
        self.sources = self.targets = tuple(sorted(short)) + tuple(sorted(own))
        self.eos = vocab.get("</s>", 2)

    def encode(self, text: str, source: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return [self.language_ids[source], *ids, self.eos]

    def target_token(self, target: str) -> int | None:
        return self.language_ids.get(target)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def open_tokenizer(folder: Path) -> M2M100Tokenizer | NllbTokenizer:
    """M2M100's files where they are (an NLLB repo has a sentencepiece model too, but no
    vocab.json), else NLLB's tokenizer.json."""
    if (folder / "vocab.json").exists() and (folder / "sentencepiece.bpe.model").exists():
        return M2M100Tokenizer(folder)
    if (folder / "tokenizer.json").exists():
        return NllbTokenizer(folder)
    raise ModelError(
        f"{folder} has no tokenizer (sentencepiece.bpe.model with vocab.json, or tokenizer.json).",
        loading.damaged_hint(folder),
    )


def load_model(folder: Path, name: str, options: LoadOptions) -> TextTranslator:
    def build_model(values: dict, path: Path) -> TextEncoderDecoder:
        pad = values.get("pad_token_id", 1)
        return build_network(
            values, path, True, "relu", True, sinusoidal_positions=True, pad_token_id=pad
        )

    return load_text_model(folder, name, options, open_tokenizer(folder), build_model, "m2m100")
