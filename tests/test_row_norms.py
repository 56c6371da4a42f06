"""RMSNorm in one C call (engine/models/row_norms.py) gives PyTorch's result, for any rows
and widths, and leaves every other case to PyTorch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.models import native, row_norms

needs_kernel = pytest.mark.skipif(
    native.library() is None, reason="the C kernels need Linux on x86 with AVX2 and a compiler"
)


def _reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x.double(), (x.shape[-1],), weight.double(), eps)


def _close(got: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5) -> None:
    torch.testing.assert_close(got.double(), expected, rtol=tolerance, atol=tolerance / 10)


@needs_kernel
@pytest.mark.parametrize(("rows", "width"), [(1, 2048), (3, 512), (2, 37), (1, 5)])
def test_float32_rows_match_the_float64_norm(rows, width) -> None:
    generator = torch.Generator().manual_seed(width)
    x = torch.randn(rows, 1, width, generator=generator) * 3
    weight = torch.randn(width, generator=generator)
    got = row_norms.rms_norm(x, weight, 1e-8)
    assert got.shape == x.shape and got.dtype == torch.float32
    _close(got, _reference(x, weight, 1e-8))


@needs_kernel
def test_eps_keeps_a_zero_row_finite() -> None:
    got = row_norms.rms_norm(torch.zeros(1, 64), torch.ones(64), 1e-8)
    assert torch.equal(got, torch.zeros(1, 64))


def test_other_dtypes_and_layouts_stay_on_pytorch(monkeypatch) -> None:
    """bfloat16 rows are normalized in float32 and returned in bfloat16; a strided view and
    a machine without the kernel give PyTorch's own result."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 96, generator=generator)
    weight = torch.randn(96, generator=generator)
    half = row_norms.rms_norm(x.bfloat16(), weight, 1e-6)
    assert half.dtype == torch.bfloat16
    _close(half, _reference(x.bfloat16(), weight, 1e-6), tolerance=1e-2)
    strided = x.T.contiguous().T  # same values, not contiguous
    assert not strided.is_contiguous()
    _close(row_norms.rms_norm(strided, weight, 1e-6), _reference(x, weight, 1e-6))
    monkeypatch.setattr(native, "library", lambda: None)
    _close(row_norms.rms_norm(x, weight, 1e-6), _reference(x, weight, 1e-6))
