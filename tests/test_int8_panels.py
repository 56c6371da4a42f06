"""The int8 panels kernel (engine/models/int8_panels.py): the exact product of its codes for
any rows, shapes and thread count, each row's sums independent of the rows beside it, and
PyTorch's kernels kept where it cannot be built."""

from __future__ import annotations

import pytest
import torch

from engine.models import int8_panels, kernels
from engine.models.kyutai import kernel_choice

needs_kernel = pytest.mark.skipif(
    not int8_panels.available(),
    reason="the int8 panels kernel needs Linux on x86 with AVX2 and FMA, and a C compiler",
)


def codes_and_scales(out: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(out * 1000 + width)
    return kernels.quantize_rows(torch.randn(out, width, generator=generator) * 0.02)


@needs_kernel
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 9])
@pytest.mark.parametrize(("out", "width"), [(8, 16), (52, 40), (100, 64), (392, 24)])
def test_panels_give_the_product_of_their_codes(rows, out, width) -> None:
    """Every tile shape (rows in pairs, fours and singles; panels in groups and one by one;
    outputs not a multiple of 8) sums in float32 to the float64 product."""
    codes, scales = codes_and_scales(out, width)
    x = torch.randn(2, rows, width, generator=torch.Generator().manual_seed(rows))
    got = int8_panels.mm(x, int8_panels.pack(codes), int8_panels.padded_scale(scales), out)
    exact = x.double() @ (codes.double() * scales.double()[:, None]).T
    assert got.shape == (2, rows, out) and got.dtype == torch.float32
    assert (got.double() - exact).norm() <= 1e-6 * exact.norm()


@needs_kernel
def test_a_rows_sums_do_not_depend_on_the_rows_beside_it_or_the_threads() -> None:
    """Each output is summed in input order whatever tile its row falls in and however the
    panels are split between threads, so a stream's step in a batch is bit for bit its step
    alone (the server's batched-equals-single parity rests on it)."""
    codes, scales = codes_and_scales(392, 64)
    panels, scale = int8_panels.pack(codes), int8_panels.padded_scale(scales)
    x = torch.randn(9, 64, generator=torch.Generator().manual_seed(0))
    together = int8_panels.mm(x, panels, scale, 392)
    alone = torch.cat([int8_panels.mm(row[None], panels, scale, 392) for row in x])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = int8_panels.mm(x, panels, scale, 392)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(together, alone) and torch.equal(together, one_thread)


@needs_kernel
def test_panels_return_the_input_dtype() -> None:
    codes, scales = codes_and_scales(16, 32)
    x = torch.randn(3, 32).bfloat16()
    product = kernel_choice.product("panels", kernel_choice.held("panels", codes), scales)
    got = product(x)
    exact = x.double() @ (codes.double() * scales.double()[:, None]).T
    assert got.dtype == torch.bfloat16 and got.shape == (3, 16)
    assert (got.double() - exact).norm() <= 1e-2 * exact.norm()


def test_a_machine_that_cannot_build_it_keeps_pytorchs_kernels(monkeypatch, tmp_path) -> None:
    """A compiler that fails (or none) leaves the kernel unavailable, and int8 matrices are
    measured and multiplied on PyTorch's own kernel alone."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails every build
    assert int8_panels._library.__wrapped__() is None
    monkeypatch.setattr(int8_panels, "available", lambda: False)
    assert kernel_choice._candidates("int8") == ("int8pack",)
    codes, scales = codes_and_scales(16, 32)
    with pytest.raises(RuntimeError, match="cannot be built"):
        kernel_choice.product("panels", codes, scales)
