"""The Livecap server over real websockets on loopback (uvicorn in a thread, the `websockets`
client library), on a scripted SlotEngine whose outputs each test fixes
(tests/serving_doubles.py): the protocol mapping, marker timing, auth, capacity, and that one
stream's bad message, overflow, slow reading or engine failure ends that stream only."""

from __future__ import annotations

import asyncio
import re

import msgpack
import numpy as np
import pytest

from engine.serving.app import ServeSettings, build_app
from tests.serving_doubles import ScriptedSlots
from tests.serving_harness import (
    audio,
    connect,
    get,
    get_json,
    marker,
    receive,
    receive_all,
    receive_until,
    running,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

RATE = 1000  # the double's sample rate: 100-sample frames of 0.1 s
FRAME_SECONDS = 0.1


def seconds_of(value: float, seconds: float) -> np.ndarray:
    return np.full(round(seconds * RATE), value, np.float32)


async def send_in_pieces(websocket, samples: np.ndarray, piece: int = 80) -> None:
    """Pieces that do not fall on frame bounds: cutting frames is the engine's job."""
    for start in range(0, len(samples), piece):
        await websocket.send(audio(samples[start : start + piece]))


def expected_stream(frames: int, frames_per_word: int = 2) -> list[dict]:
    """What the double's script gives for `frames` frames, Steps without buffered_pcm."""
    messages: list[dict] = []
    for frame in range(1, frames + 1):
        if frame % frames_per_word == 0:
            k = frame // frames_per_word - 1
            start = (frame - frames_per_word) * FRAME_SECONDS
            messages.append({"type": "Word", "text": f"w{k}", "start_time": start})
            messages.append({"type": "EndWord", "stop_time": frame * FRAME_SECONDS})
        messages.append({"type": "Step", "step_idx": frame - 1, "prs": []})
    return messages


def without_buffered(messages: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "buffered_pcm"} for m in messages]


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} not in the metrics"
    return float(found.group(1))


def test_ready_words_steps_and_marker_after_the_models_delay():
    engine = ScriptedSlots(delay_frames=3)
    with running(build_app(engine)) as address:

        async def client():
            async with connect(address) as websocket:
                assert await receive(websocket) == {"type": "Ready"}
                await send_in_pieces(websocket, seconds_of(0.1, 1.0))
                await websocket.send(marker(7))
                await send_in_pieces(websocket, seconds_of(0.0, 1.0))
                return await receive_until(websocket, "Marker")

        messages = asyncio.run(client())
    # the marker came after 1.0 s of audio: transcribed_seconds reaches 1.0 at frame 13
    assert without_buffered(messages) == expected_stream(13) + [{"type": "Marker", "id": 7}]
    buffered = [m["buffered_pcm"] for m in messages if m["type"] == "Step"]
    assert all(isinstance(n, int) and 0 <= n <= 2000 for n in buffered)


def test_kyutai_file_client_flow_faster_than_real_time_loses_nothing():
    """Kyutai's stt_from_file_rust_server.py, message for message (single floats, the key in
    the header, 1 s of silence, the audio, 5 s of silence, the marker, then 35 s of silence at
    once), sent as fast as the socket takes it: every word comes, in order, before the echo."""
    engine = ScriptedSlots(delay_frames=5)
    settings = ServeSettings(api_keys=frozenset({"public_token"}))
    with running(build_app(engine, settings)) as address:

        async def client():
            headers = {"kyutai-api-key": "public_token"}
            async with connect(address, additional_headers=headers) as websocket:

                async def send(samples):
                    pcm = [float(x) for x in samples]
                    message = {"type": "Audio", "pcm": pcm}
                    await websocket.send(msgpack.packb(message, use_single_float=True))

                await send(seconds_of(0.0, 1.0))
                speech = seconds_of(0.5, 3.0)
                for start in range(0, len(speech), 80):
                    await send(speech[start : start + 80])
                for _ in range(5):
                    await send(seconds_of(0.0, 1.0))
                await websocket.send(msgpack.packb({"type": "Marker", "id": 0}))
                for _ in range(35):
                    await send(seconds_of(0.0, 1.0))
                return await receive_until(websocket, "Marker")

        messages = asyncio.run(client())
    assert messages[0] == {"type": "Ready"}
    # the marker came after 9 s (90 frames); with 5 frames of delay it is due at frame 95
    assert without_buffered(messages[1:]) == expected_stream(95) + [{"type": "Marker", "id": 0}]


def refused(address: str, query: str = "", headers: dict | None = None) -> tuple[list, int]:
    async def client():
        async with connect(address, query, additional_headers=headers or {}) as websocket:
            messages = await receive_all(websocket)
            return messages, websocket.close_code

    return asyncio.run(client())


def ready(address: str, query: str = "", headers: dict | None = None) -> dict:
    async def client():
        async with connect(address, query, additional_headers=headers or {}) as websocket:
            return await receive(websocket)

    return asyncio.run(client())


def test_auth_by_header_or_query_and_refusals():
    settings = ServeSettings(api_keys=frozenset({"k1", "k2"}))
    with running(build_app(ScriptedSlots(), settings)) as address:
        assert ready(address, headers={"kyutai-api-key": "k1"}) == {"type": "Ready"}
        assert ready(address, query="?auth_id=k2") == {"type": "Ready"}
        wrong, wrong_code = refused(address, headers={"kyutai-api-key": "k3"})
        missing, missing_code = refused(address)
        wrong_query, _ = refused(address, query="?auth_id=k1x")
        info = get_json(address, "/api/modules_info")
        metrics = get(address, "/metrics")[1]
    assert [m["type"] for m in wrong] == ["Error"] and "wrong API key" in wrong[0]["message"]
    assert [m["type"] for m in wrong_query] == ["Error"]
    assert [m["type"] for m in missing] == ["Error"]
    assert "kyutai-api-key" in missing[0]["message"] and "auth_id" in missing[0]["message"]
    assert wrong_code == missing_code == 1008
    assert info[0]["used_slots"] == "0"  # a refused client never held a slot
    assert metric(metrics, 'livecap_errors_total{kind="auth"}') == 3


def test_no_free_channels_then_a_disconnect_frees_the_slot():
    with running(build_app(ScriptedSlots(slots=1))) as address:

        async def scenario():
            async with connect(address) as first:
                assert await receive(first) == {"type": "Ready"}
                async with connect(address) as second:
                    assert await receive_all(second) == [
                        {"type": "Error", "message": "no free channels"}
                    ]
                    assert second.close_code == 1013
                used = get_json(address, "/api/modules_info")[0]["used_slots"]
            wait_until(lambda: get_json(address, "/api/modules_info")[0]["used_slots"] == "0")
            async with connect(address) as third:
                return used, await receive(third)

        used, third_ready = asyncio.run(scenario())
    assert used == "1"
    assert third_ready == {"type": "Ready"}


MALFORMED = {
    "not msgpack": (b"\xc1\xc1\xc1", "not msgpack", 1003),
    "not a map": (msgpack.packb([1, 2]), "not a map", 1003),
    "unknown type": (msgpack.packb({"type": "Audi0", "pcm": []}), "unknown message type", 1003),
    "no type": (msgpack.packb({"pcm": [0.0]}), "unknown message type", 1003),
    "pcm not a list": (msgpack.packb({"type": "Audio", "pcm": "abc"}), "list of numbers", 1003),
    "pcm of strings": (msgpack.packb({"type": "Audio", "pcm": ["0.1"]}), "flat list", 1003),
    "pcm nested": (msgpack.packb({"type": "Audio", "pcm": [[0.1]]}), "flat list", 1003),
    "pcm NaN": (msgpack.packb({"type": "Audio", "pcm": [0.0, float("nan")]}), "NaN", 1003),
    "pcm infinite": (msgpack.packb({"type": "Audio", "pcm": [float("inf")]}), "NaN", 1003),
    "marker id text": (msgpack.packb({"type": "Marker", "id": "7"}), "integer", 1003),
    "marker id bool": (msgpack.packb({"type": "Marker", "id": True}), "integer", 1003),
    "ogg opus": (msgpack.packb({"type": "OggOpus", "data": b"x"}), "not supported", 1003),
    "huge frame": (audio(np.zeros(5000)), "more than this server takes", 1009),
    "text frame": ("hello", "text frame", 1003),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_message_ends_only_its_stream(case):
    frame, expected, code = MALFORMED[case]
    settings = ServeSettings(max_frame_bytes=10_000)
    with running(build_app(ScriptedSlots(delay_frames=0), settings)) as address:

        async def scenario():
            async with connect(address) as good, connect(address) as bad:
                assert await receive(good) == await receive(bad) == {"type": "Ready"}
                await send_in_pieces(good, seconds_of(0.1, 0.4))
                await bad.send(frame)
                bad_messages = await receive_all(bad)
                await send_in_pieces(good, seconds_of(0.1, 0.4))
                await good.send(marker(1))
                good_messages = await receive_until(good, "Marker")
                return bad_messages, bad.close_code, good_messages

        bad_messages, bad_code, good_messages = asyncio.run(scenario())
        metrics = get(address, "/metrics")[1]
    assert [m["type"] for m in bad_messages] == ["Error"]
    assert expected in bad_messages[0]["message"]
    assert bad_code == code
    assert without_buffered(good_messages) == expected_stream(8) + [{"type": "Marker", "id": 1}]
    assert metric(metrics, 'livecap_errors_total{kind="protocol"}') == 1


def test_audio_beyond_the_buffer_bound_ends_the_stream_with_an_error():
    engine = ScriptedSlots(delay_frames=0)
    engine.paused = True  # nothing is stepped: every sample sent stays buffered
    settings = ServeSettings(max_buffer_seconds=2.0)
    with running(build_app(engine, settings)) as address:

        async def scenario():
            async with connect(address) as websocket:
                await receive(websocket)
                await send_in_pieces(websocket, seconds_of(0.1, 2.0), piece=500)
                await websocket.send(marker(3))
                engine.paused = False
                await websocket.send(audio([]))  # wakes the loop: the engine has work now
                taken = await receive_until(websocket, "Marker")
                engine.paused = True
                await send_in_pieces(websocket, seconds_of(0.1, 2.0), piece=500)
                await websocket.send(audio([0.1]))  # one sample past the bound
                return taken, await receive_all(websocket), websocket.close_code

        taken, refused_messages, code = asyncio.run(scenario())
        # the connection asks the loop to free the slot as it closes: wait for the loop
        wait_until(lambda: get_json(address, "/api/modules_info")[0]["used_slots"] == "0")
        metrics = get(address, "/metrics")[1]
    # exactly 2 s is buffered and transcribed; the one sample past it ends the stream
    assert without_buffered(taken) == expected_stream(20) + [{"type": "Marker", "id": 3}]
    assert [m["type"] for m in refused_messages] == ["Error"]
    assert "more than 2 s" in refused_messages[0]["message"] and code == 1008
    assert metric(metrics, 'livecap_errors_total{kind="buffer"}') == 1
    # the refused sample, then the 2 s that were still queued when the stream ended
    assert metric(metrics, "livecap_audio_dropped_seconds_total") == pytest.approx(2.001)


def test_markers_waiting_for_their_echo_are_bounded():
    engine = ScriptedSlots(delay_frames=0)
    engine.paused = True  # no audio is transcribed, so no marker after audio is echoed
    settings = ServeSettings(max_pending_markers=3)
    with running(build_app(engine, settings)) as address:

        async def scenario():
            async with connect(address) as websocket:
                await receive(websocket)
                await websocket.send(marker(0))  # no audio before it: echoed at once
                echo = await receive(websocket)
                await websocket.send(audio(seconds_of(0.1, 0.1)))
                for marker_id in (1, 2, 3, 4):
                    await websocket.send(marker(marker_id))
                return echo, await receive_all(websocket), websocket.close_code

        echo, refused_messages, code = asyncio.run(scenario())
    assert echo == {"type": "Marker", "id": 0}
    assert [m["type"] for m in refused_messages] == ["Error"]
    assert "more than 3 markers" in refused_messages[0]["message"] and code == 1008
