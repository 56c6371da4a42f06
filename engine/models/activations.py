"""ELU written straight into place (`activations.c`, built on the machine by native.py):
Mimi's convolutions take their input ELU'd, in a buffer after the samples that precede it.
PyTorch's own where the kernel is missing or the tensors do not fit it."""

from __future__ import annotations

import torch

from engine.models import native


def elu_into(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = ELU(x) (alpha 1) for x [rows, ...]; out of x's shape may lie apart row by row
    (a view into a larger buffer), each row contiguous. Returns out."""
    library = native.library()
    fits = (
        library is not None
        and x.numel() > 0
        and x.dtype == out.dtype == torch.float32
        and x.device.type == out.device.type == "cpu"
        and x.is_contiguous()
        and out.shape == x.shape
        and out[0].is_contiguous()
    )
    if not fits:
        return torch.ops.aten.elu.out(x, 1.0, 1, 1, out=out)
    rows = x.shape[0]
    library.elu_rows(x.data_ptr(), out.data_ptr(), rows, x.numel() // rows, out.stride(0))
    return out
