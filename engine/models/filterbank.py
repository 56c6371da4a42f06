"""Speech2Text's input: a Kaldi-compatible log-mel filterbank (80 mel bins, 25 ms povey
window, 10 ms hop, pre-emphasis 0.97, DC removal, no dither, int16 sample scale), then
per-utterance mean/variance normalisation.
"""

from __future__ import annotations

import numpy as np
import torch

SAMPLE_RATE = 16000
FRAME_SHIFT = 160  # 10 ms feature hop
FRAME_LENGTH = 400  # 25 ms feature window


def _mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def _kaldi_mel_filters(num_bins: int, fft_size: int, sample_rate: int) -> torch.Tensor:
    """[fft_size // 2 + 1, num_bins] triangles in mel space between 20 Hz and Nyquist."""
    edges = torch.linspace(
        _mel(torch.tensor(20.0, dtype=torch.float64)).item(),
        _mel(torch.tensor(sample_rate / 2, dtype=torch.float64)).item(),
        num_bins + 2,
        dtype=torch.float64,
    )
    bin_hz = torch.arange(fft_size // 2 + 1, dtype=torch.float64) * sample_rate / fft_size
    bin_mel = _mel(bin_hz)[:, None]  # [F, 1]
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel - left) / (centre - left)
    falling = (right - bin_mel) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class FilterbankFeatures:
    """Mono float32 audio at 16 kHz → normalised log-mel features [frames, num_bins]."""

    fft_size = 512
    _energy_floor = float(torch.finfo(torch.float32).eps)
    _min_std = 1e-5  # digital silence has zero variance: leave it at zero instead of NaN

    def __init__(self, num_bins: int = 80) -> None:
        self.window = torch.hann_window(FRAME_LENGTH, periodic=False, dtype=torch.float64) ** 0.85
        self.filters = _kaldi_mel_filters(num_bins, self.fft_size, SAMPLE_RATE)

    def log_mel(self, audio: np.ndarray) -> torch.Tensor:
        """Kaldi-compatible log-mel filterbank [frames, bins] (float64), before normalising."""
        samples = torch.as_tensor(np.asarray(audio, dtype=np.float32)).to(torch.float64) * 32768.0
        if samples.numel() < FRAME_LENGTH:
            return torch.zeros(0, self.filters.shape[1], dtype=torch.float64)
        frames = samples.unfold(0, FRAME_LENGTH, FRAME_SHIFT)  # [T, 400]
        frames = frames - frames.mean(dim=1, keepdim=True)
        emphasised = torch.cat(
            [frames[:, :1] * (1.0 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]], dim=1
        )
        power = torch.fft.rfft(emphasised * self.window, n=self.fft_size).abs() ** 2  # [T, 257]
        return torch.clamp(power @ self.filters, min=self._energy_floor).log()

    def __call__(self, audio: np.ndarray) -> torch.Tensor:
        """Log-mel with per-utterance mean/variance normalisation, float32 [frames, bins]."""
        feats = self.log_mel(audio)
        if feats.shape[0] == 0:
            return feats.float()
        centred = feats - feats.mean(dim=0)
        std = centred.pow(2).mean(dim=0).sqrt().clamp(min=self._min_std)
        return (centred / std).float()
