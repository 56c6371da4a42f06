"""Kyutai's streaming ASR protocol: binary websocket frames, each one msgpack map with a
"type" key. Decoding validates everything a client sends; a frame that breaks the protocol
is a `ProtocolError` whose message is what the client is told before its stream is closed.

Client to server: Audio {pcm: [float, ...]} (mono, the engine's sample rate) and Marker
{id: int}; Init is accepted and ignored (Kyutai's batched server sends it to itself).
Server to client: Ready, Word, EndWord, Marker, Step, Error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

# Websocket close codes (RFC 6455) that say why a stream was ended.
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003  # a frame that is not this protocol
CLOSE_POLICY = 1008  # a limit or the authentication refused the stream
CLOSE_TOO_BIG = 1009
CLOSE_SERVER_ERROR = 1011
CLOSE_TRY_AGAIN = 1013  # no free slot

# Marker ids travel back as Kyutai's i64.
_INT64 = (-(2**63), 2**63 - 1)


class ProtocolError(Exception):
    """A client frame that breaks the protocol: `message` tells the client, `code` closes."""

    def __init__(self, message: str, code: int = CLOSE_UNSUPPORTED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class AudioIn:
    pcm: np.ndarray  # float32, one dimension, every sample finite


@dataclass(frozen=True)
class MarkerIn:
    id: int


def decode(frame: bytes, max_bytes: int) -> AudioIn | MarkerIn | None:
    """One client frame; None for a message that asks nothing (Init)."""
    if len(frame) > max_bytes:
        raise ProtocolError(
            f"a {len(frame)}-byte message is more than this server takes ({max_bytes} bytes): "
            "send the audio in smaller pieces (80 ms, 1920 samples, a message is usual)",
            CLOSE_TOO_BIG,
        )
    try:
        message = msgpack.unpackb(frame, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise ProtocolError("a message is not msgpack: send msgpack maps") from None
    if not isinstance(message, dict):
        raise ProtocolError(
            f"a message is a msgpack {type(message).__name__}, not a map with a 'type' key"
        )
    kind = message.get("type")
    if kind == "Audio":
        return AudioIn(_pcm(message.get("pcm")))
    if kind == "Marker":
        return MarkerIn(_marker_id(message.get("id")))
    if kind == "Init":
        return None
    if kind == "OggOpus":
        raise ProtocolError("OggOpus audio is not supported here: send Audio messages (pcm)")
    raise ProtocolError(f"unknown message type {kind!r}: send 'Audio' or 'Marker'")


def _pcm(pcm: Any) -> np.ndarray:
    if not isinstance(pcm, list):
        raise ProtocolError(f"Audio 'pcm' must be a list of numbers, not {type(pcm).__name__}")
    # without a dtype numpy keeps what the values are: strings, None or nested lists show up
    # as a dtype or shape that is not a flat run of numbers
    samples = np.array(pcm)
    if samples.ndim != 1 or (samples.size and samples.dtype.kind not in "fiu"):
        raise ProtocolError("Audio 'pcm' must be a flat list of numbers")
    samples = samples.astype(np.float32)
    if not np.isfinite(samples).all():
        raise ProtocolError("Audio 'pcm' holds NaN or infinite samples: send finite floats")
    return samples


def _marker_id(marker_id: Any) -> int:
    if isinstance(marker_id, bool) or not isinstance(marker_id, int):
        raise ProtocolError(f"Marker 'id' must be an integer, not {type(marker_id).__name__}")
    if not _INT64[0] <= marker_id <= _INT64[1]:
        raise ProtocolError("Marker 'id' must fit in 64 bits (signed)")
    return marker_id


def encode(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message)


def ready() -> dict[str, Any]:
    return {"type": "Ready"}


def word(text: str, start_time: float) -> dict[str, Any]:
    return {"type": "Word", "text": text, "start_time": start_time}


def end_word(stop_time: float) -> dict[str, Any]:
    return {"type": "EndWord", "stop_time": stop_time}


def step(step_idx: int, buffered_pcm: int) -> dict[str, Any]:
    # prs (pause probabilities) stays empty: the engine does not expose them
    return {"type": "Step", "step_idx": step_idx, "prs": [], "buffered_pcm": buffered_pcm}


def marker(marker_id: int) -> dict[str, Any]:
    return {"type": "Marker", "id": marker_id}


def error(message: str) -> dict[str, Any]:
    return {"type": "Error", "message": message}
