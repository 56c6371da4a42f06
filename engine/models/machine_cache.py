"""Where what this machine measured or built for itself is kept: kernel rates
(kernel_choice.py) and compiled kernels (native.py). Losing it only means
measuring or building again."""

from __future__ import annotations

import os
from pathlib import Path


def cache_folder() -> Path:
    """$XDG_CACHE_HOME/livecap, else ~/.cache/livecap (not created here)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "livecap"
