"""Input devices: PortAudio's, plus PulseAudio/PipeWire sources, marking system audio.

On Linux, PortAudio (through ALSA) shows PulseAudio as one "pulse" device; the individual
sources, including each output's `.monitor` (what the computer is playing), come from
`pactl`. A monitor source is opened through the "pulse" device with PULSE_SOURCE set.
"""

from __future__ import annotations

import json
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
        raise AudioError(
            "No audio input devices were found.",
            "Connect a microphone, or start a sound server (PulseAudio or PipeWire) to "
            "capture what the computer plays.",
        )
    return devices


def pulse_sources() -> list[InputDevice]:
    """PulseAudio (or PipeWire's pulse server) sources from `pactl`; none if it is absent."""
    listing = _pactl("-f", "json", "list", "sources")
    if listing is None:
        return []
    try:
        sources = json.loads(listing)
    except json.JSONDecodeError:
        return []
    return [
        InputDevice(
            index=source["name"],
            name=source.get("description") or source["name"],
            hostapi="PulseAudio",
            channels=_spec_value(source.get("sample_specification", ""), "ch", 2),
            default_rate=float(_spec_value(source.get("sample_specification", ""), "Hz", 48000)),
            is_system_audio=source["name"].endswith(".monitor"),
        )
        for source in sources
        if isinstance(source, dict) and "name" in source
    ]


def _pactl(*args: str) -> str | None:
    if shutil.which("pactl") is None:
        return None
    try:
        return subprocess.run(
            ["pactl", *args], capture_output=True, text=True, timeout=5, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _spec_value(spec: str, unit: str, default: int) -> int:
    """A number from a sample spec such as "s16le 2ch 44100Hz"."""
    for field in spec.split():
        if field.endswith(unit) and field[: -len(unit)].isdigit():
            return int(field[: -len(unit)])
    return default
