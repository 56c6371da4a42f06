"""File source: mixed to mono, paced at real time or as fast as readers go; clear errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile

from engine.audio.ring import AudioRing
from engine.audio.sources import FileSource
from engine.errors import AudioError


@pytest.fixture
def stereo_file(tmp_path):
    rng = np.random.default_rng(1)
    left = rng.uniform(-0.5, 0.5, 8000).astype(np.float32)
    right = rng.uniform(-0.5, 0.5, 8000).astype(np.float32)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    return path, (left + right) / 2


def drain(reader):
    chunks = []
    while (chunk := reader.read(timeout=1)) is not None:
        chunks.append(chunk)
    return np.concatenate(chunks)


def test_fast_replay_delivers_every_sample_mixed_to_mono(stereo_file):
    path, mono = stereo_file
    source = FileSource(path, realtime=False)
    ring = AudioRing(source.sample_rate, seconds=0.05)  # far smaller than the file
    reader = ring.reader()
    source.start(ring)
    np.testing.assert_allclose(drain(reader), mono, atol=1e-6)
    assert reader.dropped_samples == 0 and ring.end_reason == "End of file." and not ring.end_error


def test_realtime_replay_is_paced(stereo_file):
    path, mono = stereo_file
    source = FileSource(path, realtime=True)
    ring = AudioRing(source.sample_rate)
    reader = ring.reader()
    began = time.monotonic()
    source.start(ring)
    audio = drain(reader)
    elapsed = time.monotonic() - began
    assert audio.size == mono.size
    assert 0.9 <= elapsed <= 2.0  # one second of audio


def test_stop_ends_the_ring(stereo_file):
    source = FileSource(stereo_file[0], realtime=True)
    ring = AudioRing(source.sample_rate)
    source.start(ring)
    source.stop()
    assert ring.closed and ring.end_reason == "Stopped."


def test_missing_file_is_an_audio_error(tmp_path):
    with pytest.raises(AudioError) as info:
        FileSource(tmp_path / "nope.wav")
    assert "nope.wav" in info.value.message and info.value.hint
