"""The models Livecap knows to work, with what a user needs to choose between them.

Sizes are the approximate download sizes of the weights Livecap fetches (safetensors only).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogueEntry:
    repo_id: str
    title: str
    family: str  # "kyutai" | "speech2text" | "speech-encoder-decoder"
    languages: tuple[str, ...]  # heard, or for translation models, produced
    delay_seconds: float  # how long after a word is spoken it can appear
    size_bytes: int  # approximate download size
    task: str = "transcribe"  # "transcribe" | "translate"
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
]


def find_entry(repo_id: str) -> CatalogueEntry | None:
    return next((entry for entry in CATALOGUE if entry.repo_id == repo_id), None)


def target_languages(model: str) -> list[str]:
    """What a translation model can produce: the catalogue's list for a known model, else
    every language some catalogued translation model produces."""
    entry = find_entry(model) if model else None
    if entry is not None:
        return list(entry.languages)
    return sorted({code for e in CATALOGUE if e.task == "translate" for code in e.languages})


def model_revision(repo_id: str) -> str:
    """The revision to fetch: the catalogue's for a known model, else main."""
    entry = find_entry(repo_id)
    return entry.revision if entry else "main"


def language_name(code: str) -> str:
    """A language's English name, or the code itself for one the table does not know."""
    return LANGUAGES.get(code, code)
