"""Token end times from cross-attention, shared by the encoder-decoder speech models.

A decoder's cross-attention, averaged over layers and heads, says which encoder frames each
text token looked at. Taking each token's own argmax would let one stray peak throw every
later token to the wrong place; instead the tokens follow the monotonic token → frame path
that collects the most log-attention, and a token ends where its frame ends.
"""

from __future__ import annotations

import numpy as np
import torch


def monotonic_path(scores: np.ndarray) -> np.ndarray:
    """scores [T, S] → one frame per row, never decreasing, with the largest summed score."""
    best = scores.astype(np.float64)
    for row in range(1, len(best)):  # best path ending at each frame, via an earlier frame
        best[row] += np.maximum.accumulate(best[row - 1])
    frames = np.zeros(len(best), dtype=np.int64)
    frames[-1] = int(best[-1].argmax())
    for row in range(len(best) - 2, -1, -1):
        frames[row] = int(best[row, : frames[row + 1] + 1].argmax())
    return frames


def token_end_times(
    weights: torch.Tensor, seconds_per_frame: float, duration: float
) -> list[float]:
    """Cross-attention weights [T, S] of T text tokens → each token's end time in seconds:
    the end of its frame on the monotonic path, capped at the audio's `duration`."""
    # the floor keeps log() finite where a frame got no attention at all
    frames = monotonic_path(torch.log(weights.float() + 1e-6).cpu().numpy())
    return [min(duration, (int(f) + 1) * seconds_per_frame) for f in frames]
