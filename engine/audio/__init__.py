"""Audio capture: sources (microphone, system-audio monitor, file), the ring, resampling, levels.

The capture side writes mono float32 at the device's rate into an AudioRing; each engine
reads through its own RingReader, which resamples (soxr) to that engine's rate.
"""

from engine.audio.devices import InputDevice, list_input_devices
from engine.audio.meter import measure
from engine.audio.resample import StreamResampler
from engine.audio.ring import AudioRing, RingReader
from engine.audio.sources import FileSource, MicrophoneSource, Source

__all__ = [
    "AudioRing",
    "FileSource",
    "InputDevice",
    "MicrophoneSource",
    "RingReader",
    "Source",
    "StreamResampler",
    "list_input_devices",
    "measure",
]
