"""How a load leaves the C library's heap: large blocks freed while loading go back to the
system at once (the loader's temporary copies would otherwise stay resident); after it, a
step's temporaries of a few MiB come from the heap and are reused instead of being mapped
afresh, and page-faulted, at every call.

Each check runs in a fresh interpreter: a heap that already holds large free blocks (from
other tests) serves an allocation from them whatever the threshold."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_CHECK = """
import ctypes
from engine.models import loading

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def mapped_by_one_block():
    # how many mapped blocks one 4 MiB allocation adds (1: mapped on its own)
    before = libc.mallinfo2().hblks
    block = libc.malloc(4 * 2**20)
    added = libc.mallinfo2().hblks - before
    libc.free(block)
    return added

try:
    with loading.returning_freed_blocks():
        inside = mapped_by_one_block()
        {fail}
except RuntimeError:
    pass
print(inside, mapped_by_one_block())
"""


def _run(fail: bool) -> tuple[int, int]:
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc 2.33 or later: no mallinfo2 to count mapped blocks with")
    code = _CHECK.format(fail='raise RuntimeError("a damaged checkpoint")' if fail else "pass")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    inside, after = result.stdout.split()
    return int(inside), int(after)


def test_blocks_are_given_back_while_loading_and_reused_after() -> None:
    assert _run(fail=False) == (1, 0)


def test_a_failed_load_restores_reuse_too() -> None:
    assert _run(fail=True) == (1, 0)
