"""int8 weights times a few rows at the speed of reading the codes, on x86 CPUs with AVX2.

PyTorch's int8-weight kernel widens codes through bfloat16 and reads them well below memory
speed on some CPUs; `int8_panels.c` widens each code to float32 once and multiplies it by
every row at hand (see there). It is compiled on first use with the machine's C compiler into
the user's cache folder, against the OpenMP runtime PyTorch itself loaded. Where the CPU lacks
AVX2 and FMA, there is no compiler or the build fails, `available()` is False and callers keep
PyTorch's kernels; kernel_choice.py times both where both exist.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from engine.models.machine_cache import cache_folder

PANEL = 8  # outputs per panel: one AVX2 register of float32 sums
_SOURCE = Path(__file__).with_name("int8_panels.c")
_FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]


def available() -> bool:
    """Whether the kernel runs here (compiled now if this machine has not built it yet)."""
    return _library() is not None


def pack(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes [out, in] as panels [⌈out / 8⌉, in, 8] (missing outputs' codes zero)."""
    out, width = codes.shape
    padded = -(-out // PANEL) * PANEL
    if padded != out:
        codes = torch.cat((codes, codes.new_zeros(padded - out, width)))
    return codes.view(padded // PANEL, PANEL, width).transpose(1, 2).contiguous()


def mm(x: torch.Tensor, panels: torch.Tensor, scale: torch.Tensor, out: int) -> torch.Tensor:
    """x [..., in] · (codes · scale)ᵀ [..., out] for `pack`ed codes and float32 `scale`
    [panels · 8] (padded like the codes); float32 sums, the result in x's dtype."""
    width = panels.shape[1]
    flat = x.reshape(-1, width).to(torch.float32).contiguous()
    padded = panels.shape[0] * PANEL
    y = torch.empty(flat.shape[0], padded, dtype=torch.float32)
    if flat.shape[0]:
        _library().int8_panels_mm(
            flat.data_ptr(), panels.data_ptr(), scale.data_ptr(), y.data_ptr(),
            flat.shape[0], padded, width,
        )  # fmt: skip
    if padded != out:
        y = y[:, :out]
    return y.to(x.dtype).view(*x.shape[:-1], out)


def padded_scale(scale: torch.Tensor) -> torch.Tensor:
    """Per-output scales as float32, padded to whole panels like `pack`'s codes."""
    padded = -(-len(scale) // PANEL) * PANEL
    return torch.cat((scale.float(), scale.new_zeros(padded - len(scale), dtype=torch.float32)))


@functools.cache
def _library() -> ctypes.CDLL | None:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    compiler = shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")
    if compiler is None:
        return None
    try:
        library = ctypes.CDLL(str(_built(compiler)))
    except (OSError, subprocess.SubprocessError):
        return None
    library.int8_panels_mm.restype = None
    library.int8_panels_mm.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 3
    return library


def _built(compiler: str) -> Path:
    """The shared library for this source, flags and compiler, built once per machine."""
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(source + repr((_FLAGS, compiler)).encode()).hexdigest()[:16]
    target = cache_folder() / "native" / f"int8_panels-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: another process may be building it too.
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        subprocess.run(
            [compiler, *_FLAGS, str(_SOURCE), "-o", str(built)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        built.replace(target)
    return target
