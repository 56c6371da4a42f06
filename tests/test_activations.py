"""ELU written into place (engine/models/activations.py): e^x − 1 within a few float32 ulp of
its own value (near zero too), x itself above zero and for NaN, rows placed apart in a larger
buffer with the gaps untouched, and PyTorch's ELU for what the kernel does not take."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.models import activations, native

needs_kernel = pytest.mark.skipif(
    native.library() is None, reason="the C kernels need Linux on x86 with AVX2 and FMA"
)


def values() -> torch.Tensor:
    """Negatives from -100 to just below zero (down to the smallest normal floats), zero,
    positives, infinities and NaN, shuffled: runs of eight mix signs."""
    tiny = [-1e-38, -1e-30, -1e-12, -1e-7, -3e-5, -0.01, -0.3466, -0.3467, -0.7, -1.0]
    spread = torch.linspace(-100.0, 8.0, 5007).tolist()  # 5025 in all
    special = [0.0, -0.0, 1e-30, 5.0, float("inf"), float("-inf"), float("nan"), -87.5]
    every = torch.tensor(tiny + spread + special)
    return every[torch.randperm(len(every), generator=torch.Generator().manual_seed(0))]


@needs_kernel
def test_elu_is_expm1_within_a_few_ulp_of_its_value() -> None:
    x = values().view(3, 1675)
    got = activations.elu_into(x, torch.empty_like(x))
    exact = torch.where(x > 0, x.double(), torch.special.expm1(x.double()))
    finite = exact.isfinite()
    relative = ((got.double() - exact).abs() / exact.abs().clamp(min=1e-300))[finite & (x != 0)]
    assert relative.max() <= 4 * 2.0**-23
    assert torch.equal(got[x == 0], x[x == 0])
    assert got[x == float("inf")].eq(float("inf")).all()
    assert got[x == float("-inf")].eq(-1.0).all() and got[x.isnan()].isnan().all()


@needs_kernel
def test_rows_go_where_the_caller_places_them() -> None:
    x = torch.randn(4, 1001, 7, generator=torch.Generator().manual_seed(1))  # 7007 a row
    buffer = torch.full((4, 1003, 7), 5.0)
    out = activations.elu_into(x, buffer[:, 2:])
    assert out.data_ptr() == buffer[:, 2:].data_ptr()
    assert torch.allclose(buffer[:, 2:], F.elu(x), rtol=1e-6, atol=1e-7)
    assert buffer[:, :2].eq(5.0).all()  # what precedes each row untouched


def test_what_the_kernel_does_not_take_goes_to_pytorch() -> None:
    x = torch.randn(3, 40, dtype=torch.float64)
    assert torch.equal(activations.elu_into(x, torch.empty_like(x)), F.elu(x))
    empty = torch.empty(0, 5, 3)
    assert activations.elu_into(empty, torch.empty_like(empty)).shape == (0, 5, 3)
