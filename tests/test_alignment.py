"""The monotonic token → frame alignment shared by the encoder-decoder speech models."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from engine.models.alignment import monotonic_path, token_end_times


def test_alignment_path_is_monotonic_and_ignores_a_stray_peak() -> None:
    scores = np.log(
        np.array(
            [
                [0.8, 0.1, 0.05, 0.05, 0.0],
                [0.1, 0.7, 0.1, 0.1, 0.0],
                [0.05, 0.05, 0.2, 0.0, 0.7],  # a stray peak at the last frame ...
                [0.0, 0.0, 0.1, 0.8, 0.1],  # ... that an argmax would make everything after
                [0.0, 0.0, 0.0, 0.1, 0.9],
            ]
        )
        + 1e-6
    )
    assert monotonic_path(scores).tolist() == [0, 1, 2, 3, 4]
    assert monotonic_path(scores[:1]).tolist() == [0]


def test_alignment_path_has_the_largest_sum_of_all_monotonic_paths() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.normal(size=(4, 5))
        paths = itertools.combinations_with_replacement(range(5), 4)  # the non-decreasing ones
        best = max(sum(scores[row, frame] for row, frame in enumerate(p)) for p in paths)
        frames = monotonic_path(scores)
        assert (np.diff(frames) >= 0).all()
        assert np.isclose(scores[np.arange(4), frames].sum(), best)


def test_token_end_times_end_each_frame_and_stop_at_the_audio_end() -> None:
    weights = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.0, 0.1, 0.9]])
    assert token_end_times(weights, 0.02, 1.0) == [0.02, 0.04, 0.06]
    assert token_end_times(weights, 0.02, 0.05) == [0.02, 0.04, 0.05]
