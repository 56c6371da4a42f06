"""Input devices: PortAudio's, plus PulseAudio/PipeWire sources, marking system audio.

On Linux, PortAudio (through ALSA) shows PulseAudio as one "pulse" device; the individual
sources, including each output's `.monitor` (what the computer is playing), come from
`pactl`. A monitor source is opened through the "pulse" device with PULSE_SOURCE set.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from engine.errors import AudioError

NO_AUDIO_HINT = (
    "Install PortAudio (Debian: apt install libportaudio2) and make sure a sound server "
    "(PulseAudio or PipeWire) or a sound card is available."
)


@dataclass(frozen=True)
class InputDevice:
    index: int | str  # PortAudio device index, or a PulseAudio source name
    name: str
    hostapi: str
    channels: int
    default_rate: float
    is_system_audio: bool  # captures what the computer plays (a monitor / loopback)


def import_sounddevice():
    """sounddevice, or AudioError when the PortAudio library is missing."""
    try:
        import sounddevice
    except OSError as exc:
        raise AudioError(
            f"No audio system: PortAudio is not installed ({exc}).", NO_AUDIO_HINT
        ) from None
    return sounddevice


def list_input_devices() -> list[InputDevice]:
    """Every input; raises AudioError when there is no audio system or no input at all."""
    sd = import_sounddevice()
    hostapis = sd.query_hostapis()
    devices = [
        InputDevice(
            index=int(info["index"]),
            name=str(info["name"]),
            hostapi=str(hostapis[info["hostapi"]]["name"]),
            channels=int(info["max_input_channels"]),
            default_rate=float(info["default_samplerate"]),
            is_system_audio="loopback" in str(info["name"]).lower()
            or str(info["name"]).endswith(".monitor"),
        )
        for info in sd.query_devices()
        if info["max_input_channels"] > 0
    ]
    devices += pulse_sources()
    if not devices:
        raise AudioError("No audio input devices were found.", NO_AUDIO_HINT)
    return devices


def pulse_sources() -> list[InputDevice]:
    """PulseAudio (or PipeWire's pulse server) sources from `pactl`; none if it is absent."""
    if shutil.which("pactl") is None:
        return []
    try:
        listing = subprocess.run(
            ["pactl", "list", "short", "sources"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    sources = []
    for line in listing.splitlines():
        # index, name, driver, sample spec ("float32le 2ch 48000Hz"), state
        fields = line.split("\t")
        if len(fields) < 4:
            continue
        spec = fields[3].split()
        channels = next((int(s[:-2]) for s in spec if s.endswith("ch")), 2)
        rate = next((float(s[:-2]) for s in spec if s.endswith("Hz")), 48000.0)
        name = fields[1]
        sources.append(
            InputDevice(name, name, "PulseAudio", channels, rate, name.endswith(".monitor"))
        )
    return sources
