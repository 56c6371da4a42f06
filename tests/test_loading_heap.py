"""How a load leaves the C library's heap: large blocks freed while loading go back to the
system at once (the loader's temporary copies would otherwise stay resident); after it, a
step's temporaries of a few MiB come from the heap and are reused instead of being mapped
afresh, and page-faulted, at every call."""

from __future__ import annotations

import ctypes

import pytest

from engine.models import loading

_BLOCK = 4 * 2**20  # a batch's convolution windows are this order of size


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("not glibc 2.33 or later: no mallinfo2 to count mapped blocks with")
    libc.mallinfo2.restype = _Mallinfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def _mapped_by_one_block(libc: ctypes.CDLL) -> int:
    """How many mapped blocks one allocation of _BLOCK bytes adds (1: mapped on its own)."""
    before = libc.mallinfo2().hblks
    block = libc.malloc(_BLOCK)
    added = libc.mallinfo2().hblks - before
    libc.free(block)
    return added


def test_blocks_are_given_back_while_loading_and_reused_after() -> None:
    libc = _libc()
    with loading.returning_freed_blocks():
        assert _mapped_by_one_block(libc) == 1
    assert _mapped_by_one_block(libc) == 0


def test_a_failed_load_restores_reuse_too() -> None:
    libc = _libc()
    with pytest.raises(RuntimeError), loading.returning_freed_blocks():
        raise RuntimeError("a damaged checkpoint")
    assert _mapped_by_one_block(libc) == 0
