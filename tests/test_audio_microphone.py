"""MicrophoneSource around a stand-in for sounddevice: the callback only copies, and every
way capture can end (failure in the callback, device gone, device silent, stop) closes the
ring with a reason."""

from __future__ import annotations

import time
import types

import numpy as np
import pytest

from engine.audio import sources
from engine.audio.ring import AudioRing
from engine.errors import AudioError


class PortAudioError(Exception):
    pass


class CallbackAbort(Exception):
    pass


class FakeStream:
    fail_to_open = False

    def __init__(self, device, channels, samplerate, dtype, latency, callback, finished_callback):
        if self.fail_to_open:
            raise PortAudioError("Device unavailable [PaErrorCode -9985]")
        self.callback, self.finished = callback, finished_callback
        self.args = (device, channels, samplerate, dtype)
        self.aborted = self.closed = False

    def start(self):
        pass

    def abort(self):
        self.aborted = True

    def close(self):
        self.closed = True


def query_devices(device=None, kind=None):
    if device not in (None, 3):
        raise ValueError(f"No input device matching {device!r}")
    return {"index": 3, "name": "USB Mic", "default_samplerate": 48000.0, "max_input_channels": 2}


@pytest.fixture
def fake_sd(monkeypatch):
    sd = types.SimpleNamespace(
        query_devices=query_devices,
        InputStream=FakeStream,
        PortAudioError=PortAudioError,
        CallbackAbort=CallbackAbort,
    )
    monkeypatch.setattr(sources, "import_sounddevice", lambda: sd)
    monkeypatch.setattr(sources, "pulse_sources", lambda: [])
    FakeStream.fail_to_open = False
    return sd


def started(device=None):
    source = sources.MicrophoneSource(device)
    ring = AudioRing(source.sample_rate)
    reader = ring.reader()
    source.start(ring)
    return source, ring, reader


OK = types.SimpleNamespace(input_overflow=False)


def test_callback_copies_stereo_frames_into_the_ring(fake_sd):
    source, ring, reader = started()
    assert source._stream.args == (3, 2, 48000, "float32") and source.name == "USB Mic"
    block = np.stack([np.full(480, 0.2), np.full(480, 0.4)], axis=1).astype(np.float32)
    source._stream.callback(block, 480, None, OK)
    source._stream.callback(block, 480, None, types.SimpleNamespace(input_overflow=True))
    np.testing.assert_allclose(reader.read(timeout=0), np.full(960, 0.3), rtol=1e-6)
    assert source.overflows == 1 and not ring.closed


def test_failure_inside_the_callback_ends_capture_with_the_reason(fake_sd):
    source, ring, _ = started()
    with pytest.raises(CallbackAbort):  # sounddevice's way to stop the stream cleanly
        source._stream.callback(np.zeros((4, 2, 2), np.float32), 4, None, OK)
    assert ring.closed and ring.end_error and "Audio capture failed" in ring.end_reason


def test_device_gone_ends_capture_with_an_error(fake_sd):
    source, ring, _ = started()
    source._stream.finished()
    assert ring.closed and ring.end_error and "USB Mic stopped" in ring.end_reason


def test_a_device_that_goes_silent_is_treated_as_lost(fake_sd):
    source, ring, _ = started()
    stream = source._stream
    source.check()
    assert not ring.closed
    ring.last_write = time.monotonic() - sources.STALL_SECONDS - 0.1
    source.check()
    assert ring.closed and ring.end_error and "stopped delivering sound" in ring.end_reason
    assert stream.aborted and stream.closed


def test_stop_is_not_an_error(fake_sd):
    source, ring, _ = started()
    stream = source._stream
    source.stop()
    stream.finished()  # PortAudio reports the end of a stream we stopped ourselves
    assert ring.closed and not ring.end_error and ring.end_reason == "Stopped."


def test_unknown_or_unopenable_devices_are_audio_errors(fake_sd):
    with pytest.raises(AudioError) as info:
        sources.MicrophoneSource("Nonexistent")
    assert "Nonexistent" in info.value.message and "livecap devices" in info.value.hint
    FakeStream.fail_to_open = True
    source = sources.MicrophoneSource(3)
    ring = AudioRing(source.sample_rate)
    with pytest.raises(AudioError, match="Cannot open audio input USB Mic"):
        source.start(ring)
    assert ring.closed and ring.end_error
