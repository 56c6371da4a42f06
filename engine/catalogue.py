"""The models Livecap knows to work, with what a user needs to choose between them.

Sizes are the approximate download sizes of the weights Livecap fetches (safetensors only).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.models.text_tokenizer import NLLB_CODES


@dataclass(frozen=True)
class CatalogueEntry:
    repo_id: str
    title: str
    family: str  # "kyutai" | "speech2text" | "speech-encoder-decoder" | "marian" | "m2m100"
    languages: tuple[str, ...]  # heard, or for translation models, produced
    delay_seconds: float  # how long after a word is spoken it can appear
    size_bytes: int  # approximate download size
    # "transcribe" | "translate" (speech) | "text-translate" (translates the captions' text,
    # so it goes with any caption model)
    task: str = "transcribe"
    # The Hub revision holding safetensors weights: for some repos they exist only in the
    # Hub's own conversion pull request, not on main.
    revision: str = "main"
    licence: str = ""  # the weights' licence as its model card states it


# English names of the languages the catalogue's models hear or produce, by ISO 639-1 code.
LANGUAGES = {
    "ar": "Arabic", "ca": "Catalan", "cy": "Welsh", "de": "German", "en": "English",
    "es": "Spanish", "et": "Estonian", "fa": "Persian", "fr": "French", "id": "Indonesian",
    "it": "Italian", "ja": "Japanese", "lv": "Latvian", "mn": "Mongolian", "nl": "Dutch",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sl": "Slovenian", "sv": "Swedish",
    "ta": "Tamil", "tr": "Turkish", "zh": "Chinese",
}  # fmt: skip

_GB = 1_000_000_000
_MB = 1_000_000


def _opus_mt(source: str, target: str) -> CatalogueEntry:
    names = {"de": "German", "en": "English", "fr": "French"}
    return CatalogueEntry(
        f"Helsinki-NLP/opus-mt-{source}-{target}",
        f"OPUS-MT {names[source]} → {names[target]} — text translation of the captions",
        "marian",
        (target,),
        0.0,
        300 * _MB,
        task="text-translate",
        licence="CC-BY 4.0",
    )


CATALOGUE: list[CatalogueEntry] = [
    CatalogueEntry(
        "kyutai/stt-1b-en_fr-trfs",
        "Kyutai STT 1B (English, French) — streaming",
        "kyutai",
        ("en", "fr"),
        0.5,
        2_100 * _MB,
        licence="CC-BY 4.0",
    ),
    CatalogueEntry(
        "kyutai/stt-2.6b-en-trfs",
        "Kyutai STT 2.6B (English) — streaming, most accurate",
        "kyutai",
        ("en",),
        2.5,
        5_300 * _MB,
        licence="CC-BY 4.0",
    ),
    CatalogueEntry(
        "facebook/s2t-small-librispeech-asr",
        "Speech2Text small (English) — light, chunked",
        "speech2text",
        ("en",),
        2.0,
        118 * _MB,
        licence="MIT",
    ),
    CatalogueEntry(
        "facebook/s2t-medium-mustc-multilingual-st",
        "Speech2Text medium — English speech to 8 languages",
        "speech2text",
        ("de", "nl", "es", "fr", "it", "pt", "ro", "ru"),
        2.0,
        290 * _MB,
        task="translate",
        revision="refs/pr/2",
        licence="MIT",
    ),
    CatalogueEntry(
        "facebook/wav2vec2-xls-r-300m-en-to-15",
        "XLS-R 300M + mBART — English speech to 15 languages",
        "speech-encoder-decoder",
        ("de", "tr", "fa", "sv", "mn", "zh", "cy", "ca", "sl", "et", "id", "ar", "ta", "lv", "ja"),
        2.0,
        int(3.17 * _GB),
        task="translate",
        revision="refs/pr/3",
        licence="Apache 2.0",
    ),
    _opus_mt("en", "de"),
    _opus_mt("en", "fr"),
    _opus_mt("fr", "en"),
    CatalogueEntry(
        "facebook/m2m100_418M",
        "M2M100 418M — text translation between 100 languages",
        "m2m100",
        tuple(sorted(NLLB_CODES)),  # offered in the app; the CLI takes any of its 100
        0.0,
        int(1.94 * _GB),
        task="text-translate",
        licence="MIT",
    ),
    CatalogueEntry(
        "facebook/nllb-200-distilled-600M",
        "NLLB-200 600M — text translation, 200 languages (non-commercial use only)",
        "m2m100",
        tuple(sorted(NLLB_CODES)),  # offered in the app; the CLI takes any NLLB code
        0.0,
        int(2.46 * _GB),
        task="text-translate",
        licence="CC-BY-NC 4.0",
    ),
]


def find_entry(repo_id: str) -> CatalogueEntry | None:
    return next((entry for entry in CATALOGUE if entry.repo_id == repo_id), None)


def target_languages(model: str) -> list[str]:
    """What a translation model can produce: the catalogue's list for a known model, else
    every language some catalogued translation model produces."""
    entry = find_entry(model) if model else None
    if entry is not None:
        return list(entry.languages)
    return sorted({code for e in CATALOGUE if e.task != "transcribe" for code in e.languages})


def model_revision(repo_id: str) -> str:
    """The revision to fetch: the catalogue's for a known model, else main."""
    entry = find_entry(repo_id)
    return entry.revision if entry else "main"


def language_name(code: str) -> str:
    """A language's English name, or the code itself for one the table does not know."""
    return LANGUAGES.get(code, code)
