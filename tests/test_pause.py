import numpy as np

from engine.streaming.pause import PauseDetector

SR = 16000


def _tone(seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _quiet(seconds: float, amp: float = 1e-4, seed: int = 0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(SR * seconds))).astype(np.float32)


def test_pause_reported_once_where_quiet_begins():
    audio = np.concatenate([_quiet(0.5), _tone(1.0), _quiet(1.5), _tone(0.7), _quiet(0.2)])
    pauses = PauseDetector(SR, min_pause=0.5).feed(audio)
    assert len(pauses) == 1
    assert abs(pauses[0] - 1.5) <= 0.02


def test_odd_sized_pieces_give_the_same_pauses():
    audio = np.concatenate([_tone(0.8), _quiet(0.9), _tone(0.4), _quiet(0.8, seed=1)])
    whole = PauseDetector(SR).feed(audio)
    det, pieces, at = PauseDetector(SR), [], 0
    rng = np.random.default_rng(3)
    while at < len(audio):
        n = int(rng.integers(1, 2000))
        pieces += det.feed(audio[at : at + n])
        at += n
    assert pieces == whole and len(whole) == 2


def test_short_gaps_and_silence_alone_are_not_pauses():
    det = PauseDetector(SR, min_pause=0.5)
    assert det.feed(_quiet(3.0)) == []  # no speech yet
    assert det.feed(np.concatenate([_tone(0.5), _quiet(0.3), _tone(0.5)])) == []
    assert det.in_speech


def test_steady_background_noise_is_not_speech():
    rng = np.random.default_rng(7)
    noise = (0.01 * rng.standard_normal(SR * 6)).astype(np.float32)  # about -40 dBFS hiss
    speech = np.concatenate([noise[: SR * 4], noise[SR * 4 : SR * 5] + _tone(1.0), noise[SR * 5 :]])
    pauses = PauseDetector(SR).feed(speech)
    assert len(pauses) == 1 and abs(pauses[0] - 5.0) <= 0.04
