"""Audio sources: a sounddevice input stream or a file, writing mono float32 into a ring.

A source has a `name`, a `sample_rate`, and `start(ring)` / `stop()`; it closes the ring
when it ends (end of file, device lost, stopped), with the reason. `check()` is called
about ten times a second by the session to notice a device that silently stopped.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile

from engine.audio.devices import import_sounddevice, pulse_sources
from engine.audio.ring import AudioRing
from engine.errors import AudioError

# PortAudio's input buffer: enough to ride out a busy machine not scheduling us for a while.
CAPTURE_LATENCY = 0.2
STALL_SECONDS = 2.0  # a device silent this long while running is treated as lost
_USER_PULSE_SOURCE = os.environ.get("PULSE_SOURCE")  # the user's own choice, if any


class Source(Protocol):
    name: str
    sample_rate: int

    def start(self, ring: AudioRing) -> None: ...

    def stop(self) -> None: ...

    def check(self) -> None: ...


class MicrophoneSource:
    """An input device: a PortAudio index or name, a PulseAudio source name, or the default."""

    def __init__(self, device: int | str | None = None) -> None:
        self._sd = import_sounddevice()
        self._pulse_source: str | None = None
        pulse = {s.index: s.name for s in pulse_sources()} if isinstance(device, str) else {}
        if device in pulse:
            self._pulse_source, device = device, "pulse"
        try:
            info = self._sd.query_devices(device, "input")
        except (ValueError, self._sd.PortAudioError) as exc:
            raise AudioError(
                f"Cannot use audio input {device if device is not None else '(default)'}: {exc}",
                "List the inputs with `livecap devices` and pick one with --input.",
            ) from None
        self.device = int(info["index"])
        self.name = pulse[self._pulse_source] if self._pulse_source else str(info["name"])
        self.sample_rate = int(info["default_samplerate"])
        self.channels = min(2, int(info["max_input_channels"]))
        self._stream = None
        self._ring: AudioRing | None = None
        self._stopping = False
        self.overflows = 0  # times PortAudio lost input before it reached us

    def start(self, ring: AudioRing) -> None:
        self._ring = ring
        # libpulse reads PULSE_SOURCE when the stream connects: it picks the source to record.
        if self._pulse_source is not None:
            os.environ["PULSE_SOURCE"] = self._pulse_source
        elif _USER_PULSE_SOURCE is None:
            os.environ.pop("PULSE_SOURCE", None)  # set by an earlier session, not by the user
        else:
            os.environ["PULSE_SOURCE"] = _USER_PULSE_SOURCE
        try:
            self._stream = self._sd.InputStream(
                device=self.device,
                channels=self.channels,
                samplerate=self.sample_rate,
                dtype="float32",
                latency=CAPTURE_LATENCY,
                callback=self._callback,
                finished_callback=self._finished,
            )
            self._stream.start()
        except (self._sd.PortAudioError, ValueError) as exc:
            ring.close(f"Cannot open {self.name}: {exc}", error=True)
            raise AudioError(
                f"Cannot open audio input {self.name}: {exc}",
                "Check that the device is connected and not in exclusive use; "
                "see `livecap devices`.",
            ) from None
        ring.last_write = time.monotonic()

    def _callback(self, indata: np.ndarray, frames: int, when: object, status: object) -> None:
        # Runs on PortAudio's thread: copy and return. Any failure ends capture with a reason.
        try:
            if status.input_overflow:
                self.overflows += 1
            self._ring.write(indata)
        except BaseException as exc:  # noqa: BLE001 - nothing may escape into PortAudio
            self._ring.close(f"Audio capture failed: {exc!r}", error=True)
            raise self._sd.CallbackAbort from None

    def _finished(self) -> None:
        if not self._stopping and self._ring is not None:
            self._ring.close(f"The audio input {self.name} stopped.", error=True)

    def check(self) -> None:
        ring = self._ring
        if ring is None or ring.closed or self._stopping:
            return
        if time.monotonic() - ring.last_write > STALL_SECONDS:
            ring.close(
                f"The audio input {self.name} stopped delivering sound (disconnected?).",
                error=True,
            )
            self._close_stream()

    def stop(self) -> None:
        self._stopping = True
        self._close_stream()
        if self._ring is not None:
            self._ring.close("Stopped.")

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except self._sd.PortAudioError:
                pass  # the device is already gone; there is nothing left to release


class FileSource:
    """A sound file (WAV, FLAC, OGG…) replayed in real time, or as fast as readers go."""

    BLOCK_SECONDS = 0.02

    def __init__(self, path: str | Path, realtime: bool = True) -> None:
        self.path = Path(path)
        self.realtime = realtime
        self.name = self.path.name
        try:
            info = soundfile.info(str(self.path))
        except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioError(
                f"Cannot read audio file {self.path}: {exc}",
                "Give a WAV, FLAC or OGG file that exists and is readable.",
            ) from None
        self.sample_rate = int(info.samplerate)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ring: AudioRing | None = None

    def start(self, ring: AudioRing) -> None:
        self._ring = ring
        self._thread = threading.Thread(target=self._run, args=(ring,), daemon=True)
        self._thread.start()

    def _run(self, ring: AudioRing) -> None:
        block = max(1, round(self.sample_rate * self.BLOCK_SECONDS))
        began = time.monotonic()
        sent = 0
        try:
            with soundfile.SoundFile(str(self.path)) as sound:
                while not self._stop.is_set():
                    samples = sound.read(block, dtype="float32", always_2d=True)
                    if samples.shape[0] == 0:
                        ring.close("End of file.")
                        return
                    if self.realtime:
                        delay = began + sent / self.sample_rate - time.monotonic()
                        if delay > 0 and self._stop.wait(delay):
                            break
                    ring.write(samples, wait=not self.realtime)
                    sent += samples.shape[0]
        except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
            ring.close(f"Reading {self.path} failed: {exc}", error=True)
            return
        ring.close("Stopped.")

    def check(self) -> None:
        """A file cannot stall."""

    def stop(self) -> None:
        self._stop.set()
        if self._ring is not None:
            self._ring.close("Stopped.")  # also wakes a write waiting for a slow reader
        if self._thread is not None:
            self._thread.join()
