"""Decoding what clients send: what is valid comes out as numbers the engine takes."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from engine.serving.protocol import AudioIn, MarkerIn, ProtocolError, decode

LIMIT = 1 << 20


def test_audio_of_ints_and_floats_becomes_float32():
    decoded = decode(msgpack.packb({"type": "Audio", "pcm": [0, 0.5, -1]}), LIMIT)
    assert isinstance(decoded, AudioIn) and decoded.pcm.dtype == np.float32
    assert decoded.pcm.tolist() == [0.0, 0.5, -1.0]


def test_single_floats_as_kyutai_clients_send_them():
    frame = msgpack.packb({"type": "Audio", "pcm": [0.25, -0.5]}, use_single_float=True)
    assert decode(frame, LIMIT).pcm.tolist() == [0.25, -0.5]


def test_empty_audio_init_and_extra_keys():
    assert decode(msgpack.packb({"type": "Audio", "pcm": []}), LIMIT).pcm.shape == (0,)
    assert decode(msgpack.packb({"type": "Init"}), LIMIT) is None
    marker = decode(msgpack.packb({"type": "Marker", "id": 3, "note": "x"}), LIMIT)
    assert marker == MarkerIn(3)


def test_marker_ids_are_64_bit_signed_as_on_kyutais_server():
    lowest = msgpack.packb({"type": "Marker", "id": -(2**63)})
    assert decode(lowest, LIMIT) == MarkerIn(-(2**63))
    with pytest.raises(ProtocolError, match="64 bits"):
        decode(msgpack.packb({"type": "Marker", "id": 2**63}), LIMIT)  # a uint64 in msgpack


def test_a_frame_at_the_limit_is_read_and_one_byte_more_is_refused():
    frame = msgpack.packb({"type": "Audio", "pcm": [0.0] * 100})
    assert len(decode(frame, len(frame)).pcm) == 100
    with pytest.raises(ProtocolError) as refused:
        decode(frame, len(frame) - 1)
    assert refused.value.code == 1009
