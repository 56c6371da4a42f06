"""RMSNorm of float32 rows in one call (`row_norms.c`, built on the machine by native.py),
where PyTorch spends more time dispatching its half-dozen operations than computing them;
PyTorch's own everywhere else (other dtypes, a GPU, no kernel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.models import native


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x · (mean(x²) + eps)^-½ · weight over the last dimension, in float32 whatever x's
    dtype (the result in x's dtype)."""
    library = native.library()
    fits = x.dtype == weight.dtype == torch.float32 and x.device.type == "cpu"
    if library is None or not fits or not x.is_contiguous():
        return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps).to(x.dtype)
    y = torch.empty_like(x)
    width = x.shape[-1]
    library.rms_norm_rows(
        x.data_ptr(), weight.data_ptr(), y.data_ptr(), x.numel() // width, width, eps
    )
    return y
