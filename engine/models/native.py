"""The C kernels (`panels.c`, `ring_attention.c`, `row_norms.c`, `decoder_step.c`,
`activations.c`, sharing `vector_exp.h`), built on the machine that runs them.

They are compiled on first use with the machine's C compiler into the user's cache folder
(`machine_cache.py`), for AVX2 and FMA, plus AVX-512 (with VNNI and BF16) where the CPU has
it: the panels' products in fewer instructions (panels.c); a compiler that does not know them
builds without. They link against the OpenMP runtime PyTorch itself loaded (so PyTorch's
thread count applies and no second thread pool competes for the cores) and are loaded with
ctypes. Where the CPU lacks AVX2 and FMA, there is no compiler or the build fails,
`library()` is None and callers keep PyTorch's kernels.
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

from engine.models.machine_cache import cache_folder, cpu_description

_KERNELS = ("panels.c", "ring_attention.c", "row_norms.c", "decoder_step.c", "activations.c")
_SOURCES = [Path(__file__).with_name(name) for name in _KERNELS]
_HEADERS = [Path(__file__).with_name("vector_exp.h")]
_FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]
# Extra compiler flags for a CPU flag (/proc/cpuinfo's name) where the machine has it.
_OPTIONAL_FLAGS = {
    "avx512dq": ["-mavx512f", "-mavx512dq"],
    "avx512_vnni": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"],
    "avx_vnni": ["-mavxvnni"],
    "avx512_bf16": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16"],
}
_POINTER, _INT, _FLOAT = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
_SIGNATURES = {
    "panels_mm": [_POINTER] * 4 + [_INT] * 5,
    "panels_windows": [_POINTER] * 4 + [_INT] * 7,
    "ring_attend": [_POINTER] * 9 + [_INT] * 8 + [_FLOAT, _INT],
    "ring_step": [_POINTER] * 6 + [ctypes.c_int64] + [_POINTER] * 8 + [_INT] * 7,
    "panels_nearest": [_POINTER] * 5 + [_INT] * 5 + [_POINTER],
    "rms_norm_rows": [_POINTER] * 3 + [_INT] * 2 + [_FLOAT],
    "decoder_step": [_POINTER] * 2 + [_INT] + [_POINTER] * 5,
    "elu_rows": [_POINTER] * 2 + [ctypes.c_int64] * 3,
}


@functools.cache
def source_digest() -> str:
    """A digest of the kernels' sources: changed kernels are built, and timed, anew."""
    sources = b"".join(source.read_bytes() for source in _SOURCES + _HEADERS)
    return hashlib.sha256(sources).hexdigest()[:16]


@functools.cache
def library() -> ctypes.CDLL | None:
    """The kernels, or None where they cannot be built here."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    compiler = shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")
    if compiler is None:
        return None
    wanted = _extensions_here()
    try:
        loaded = ctypes.CDLL(str(_built(compiler, _compiler_flags(wanted))))
    except (OSError, subprocess.SubprocessError):
        wanted = ()
        try:  # a compiler too old for the CPU's extensions still builds the AVX2 kernels
            loaded = ctypes.CDLL(str(_built(compiler, _FLAGS)))
        except (OSError, subprocess.SubprocessError):
            return None
    for name, arguments in _SIGNATURES.items():
        function = getattr(loaded, name)
        function.restype, function.argtypes = None, arguments
    loaded.extensions = wanted
    return loaded


def extensions() -> tuple[str, ...]:
    """The CPU's extensions (its /proc/cpuinfo names) the kernels were built for beyond AVX2
    and FMA; none where they were not built."""
    loaded = library()
    return loaded.extensions if loaded is not None else ()


def _extensions_here() -> tuple[str, ...]:
    present = set(cpu_description()["flags"].split())
    return tuple(name for name in _OPTIONAL_FLAGS if name in present)


def _compiler_flags(extensions: tuple[str, ...]) -> list[str]:
    extra = [flag for name in extensions for flag in _OPTIONAL_FLAGS[name]]
    return list(dict.fromkeys(_FLAGS + extra))


def _built(compiler: str, flags: list[str]) -> Path:
    """The shared library for these sources, flags and compiler, built once per machine."""
    key = hashlib.sha256((source_digest() + repr((flags, compiler))).encode()).hexdigest()
    target = cache_folder() / "native" / f"kernels-{key[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: another process may be building it too.
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        subprocess.run(
            [compiler, *flags, *map(str, _SOURCES), "-lm", "-o", str(built)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        built.replace(target)
    return target
