"""The text side of a speech encoder-decoder model: ids → text, and the language codes its
vocabulary holds. `tokenizer.json` where present, else the mBART-50 sentencepiece model
(fairseq ids: pieces shifted by one, language codes after the vocabulary). Also the language
code tables of the text translation families (M2M100's token order, NLLB's codes) and the
sentencepiece opener they share.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from engine.errors import ModelError
from engine.models.loading import damaged_hint, open_tokenizer, read_json

# mBART-50's language codes in id order: code i has id (sentencepiece size + 1 + i)
MBART50_CODES = (
    "ar_AR cs_CZ de_DE en_XX es_XX et_EE fi_FI fr_XX gu_IN hi_IN it_IT ja_XX kk_KZ ko_KR lt_LT "
    "lv_LV my_MM ne_NP nl_XX ro_RO ru_RU si_LK tr_TR vi_VN zh_CN af_ZA az_AZ bn_IN fa_IR he_IL "
    "hr_HR id_ID ka_GE km_KH mk_MK ml_IN mn_MN mr_IN pl_PL ps_AF pt_XX sv_SE sw_KE ta_IN te_IN "
    "th_TH tl_XX uk_UA ur_PK xh_ZA gl_ES sl_SI"
).split()

# M2M100's language codes in token order: code i is token `__code__`, id len(vocab) + i
M2M100_CODES = (
    "af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa ff fi fr fy ga gd gl "
    "gu ha he hi hr ht hu hy id ig ilo is it ja jv ka kk km kn ko lb lg ln lo lt lv mg mk ml "
    "mn mr ms my ne nl no ns oc or pa pl ps pt ro ru sd si sk sl so sq sr ss su sv sw ta th tl "
    "tn tr uk ur uz vi wo xh yi yo zh zu"
).split()
# NLLB's codes for the ISO 639-1 codes the caption models and the catalogue speak
NLLB_CODES = {
    "ar": "arb_Arab", "de": "deu_Latn", "en": "eng_Latn", "es": "spa_Latn", "fr": "fra_Latn",
    "it": "ita_Latn", "ja": "jpn_Jpan", "nl": "nld_Latn", "pl": "pol_Latn", "pt": "por_Latn",
    "ro": "ron_Latn", "ru": "rus_Cyrl", "tr": "tur_Latn", "uk": "ukr_Cyrl", "zh": "zho_Hans",
}  # fmt: skip


class TextTokenizer:
    """Ids → text, and the language codes the vocabulary holds (code → id)."""

    def __init__(self, folder: Path) -> None:
        if (folder / "tokenizer.json").exists():
            self._init_tokenizers(folder)
        elif (folder / "sentencepiece.bpe.model").exists():
            self._init_sentencepiece(folder / "sentencepiece.bpe.model")
        else:
            raise ModelError(
                f"{folder} has no tokenizer (tokenizer.json or sentencepiece.bpe.model).",
                damaged_hint(folder),
            )

    def _init_tokenizers(self, folder: Path) -> None:
        self._tokenizer = open_tokenizer(folder / "tokenizer.json")
        model_kind = json.loads(self._tokenizer.to_str())["model"]["type"]
        self._sentencepiece = None
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        self.language_ids = {code: vocab[code] for code in MBART50_CODES if code in vocab}
        config = read_json(folder / "tokenizer_config.json", missing_ok=True)
        # transformers' decode tidies " ." → "." when asked, except for BPE vocabularies
        self._clean_up = bool(config.get("clean_up_tokenization_spaces")) and model_kind != "BPE"

    def _init_sentencepiece(self, path: Path) -> None:
        self._tokenizer = None
        self._sentencepiece = open_sentencepiece(path)
        # fairseq/mBART-50 ids: 0 <s>, 1 <pad>, 2 </s>, 3 <unk>, then piece p at p + 1
        # (sentencepiece's own first three pieces are its control tokens), then the codes
        first_code = self._sentencepiece.get_piece_size() + 1
        self.language_ids = {code: first_code + i for i, code in enumerate(MBART50_CODES)}
        self._clean_up = False

    def decode(self, ids: Sequence[int]) -> str:
        if self._tokenizer is not None:
            text = self._tokenizer.decode(list(ids), skip_special_tokens=True)
            return _clean_up_spaces(text) if self._clean_up else text
        size = self._sentencepiece.get_piece_size()
        # specials and language codes dropped; "▁" marks a space, except before the first piece
        pieces = [self._sentencepiece.id_to_piece(i - 1) for i in ids if 4 <= i <= size]
        text = "".join(pieces).replace("▁", " ")
        return text[1:] if pieces and pieces[0].startswith("▁") else text


def open_sentencepiece(path: Path):  # -> sentencepiece.SentencePieceProcessor
    """A sentencepiece model file, opened; a missing or unreadable one is a ModelError."""
    import sentencepiece

    if not path.exists():
        raise ModelError(f"{path.parent} has no {path.name}.", damaged_hint(path.parent))
    try:
        return sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as exc:
        raise ModelError(
            f"{path} is not a readable sentencepiece model ({exc}).", damaged_hint(path.parent)
        ) from None


def _clean_up_spaces(text: str) -> str:
    for spaced, tight in (
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
        (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ):  # fmt: skip
        text = text.replace(spaced, tight)
    return text
