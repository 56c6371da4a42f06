"""This machine: what its CPU is, and where what it measured or built for itself is kept:
kernel rates (kernel_choice.py) and compiled kernels (native.py). Losing the cache only means
measuring or building again."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cache_folder() -> Path:
    """$XDG_CACHE_HOME/livecap, else ~/.cache/livecap (not created here)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "livecap"


def cpu_description() -> dict[str, str]:
    """This CPU's model name and flags (Linux /proc/cpuinfo; the platform's name elsewhere)."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and not model:
                model = value
            elif key == "flags" and not flags:
                flags = value
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {"model": model, "flags": flags}
