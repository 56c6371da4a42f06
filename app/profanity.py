"""Optional masking of strong language in what is shown (the stored text is unchanged)."""

from __future__ import annotations

import re
from functools import cache

from app.settings import RESOURCES


@cache
def _pattern() -> re.Pattern[str]:
    words = (RESOURCES / "profanity.txt").read_text(encoding="utf-8").split()
    alternatives = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b({alternatives})\w*", re.IGNORECASE)


def mask(text: str) -> str:
    """Keep each matched word's first letter and replace the rest with asterisks."""
    return _pattern().sub(lambda m: m.group(0)[0] + "*" * (len(m.group(0)) - 1), text)
