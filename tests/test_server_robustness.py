"""What one stream does (stop reading, fail in the engine, go idle) never stops another
stream or the batch loop; and the figures /metrics and /api/modules_info give."""

from __future__ import annotations

import asyncio
import socket

import pytest

from engine.serving.app import ServeSettings, build_app
from tests.serving_doubles import POISON, ScriptedSlots
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
from tests.test_server import expected_stream, metric, seconds_of, send_in_pieces, without_buffered

pytestmark = pytest.mark.timeout(30)


def used_slots(address: str) -> str:
    return get_json(address, "/api/modules_info")[0]["used_slots"]


def small_receive_buffer(address: str) -> socket.socket:
    """A client socket whose kernel buffer stays small (loopback buffers grow to megabytes):
    a client that stops reading fills it in a few messages."""
    host, port = address.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect((host, int(port)))
    return sock


def errors(address: str, kind: str) -> float:
    return metric(get(address, "/metrics")[1], f'livecap_errors_total{{kind="{kind}"}}')


async def transcribe(websocket, seconds: float, marker_id: int) -> list[dict]:
    """Send `seconds` of audio and a marker; the messages up to its echo."""
    await send_in_pieces(websocket, seconds_of(0.1, seconds))
    await websocket.send(marker(marker_id))
    return await receive_until(websocket, "Marker")


def test_a_client_that_stops_reading_is_dropped_and_another_stream_goes_on():
    # Two clients send the same 30 s; one reads, one does not. 100 kB words, one a frame,
    # compression off: 30 MB of words each, more than the socket buffers (4 MB) and the
    # 100-message outbox (10 MB) can hold for the one that does not read. A 5 ms tick gives
    # the reader a pace it can follow, with a third of a second of slack on a busy machine.
    engine = ScriptedSlots(
        frames_per_word=1, delay_frames=0, word_padding=100_000, tick_seconds=0.005
    )
    settings = ServeSettings(max_outbound_messages=100, close_timeout_seconds=10)
    with running(build_app(engine, settings)) as address:

        async def scenario():
            slow = await connect(
                address, compression=None, max_queue=1, sock=small_receive_buffer(address)
            )
            async with connect(address, compression=None) as good:
                assert await receive(good) == {"type": "Ready"}
                speech = seconds_of(0.1, 30.0)
                await asyncio.gather(
                    send_in_pieces(slow, speech, piece=1000),
                    send_in_pieces(good, speech, piece=1000),
                )
                await good.send(marker(5))
                good_messages = await receive_until(good, "Marker", timeout=20)
                await asyncio.to_thread(wait_until, lambda: errors(address, "slow_reader") == 1)
                slots_after_drop = used_slots(address)
            slow_messages = await receive_all(slow)  # reads again: the backlog, then the Error
            await slow.close()
            return slots_after_drop, good_messages, slow_messages, slow.close_code

        slots_after_drop, good_messages, slow_messages, slow_code = asyncio.run(scenario())
        dropped = errors(address, "slow_reader")
    words = [m["text"] for m in good_messages if m["type"] == "Word"]
    assert words == [f"w{k}" + "x" * 100_000 for k in range(300)]  # 30 s: 300 frames, a word each
    assert good_messages[-1] == {"type": "Marker", "id": 5}
    assert dropped == 1  # only the client that did not read
    assert slots_after_drop == "1"  # its slot was freed
    assert slow_messages[0] == {"type": "Ready"}
    assert slow_messages[-1]["type"] == "Error"
    assert "stopped reading" in slow_messages[-1]["message"]
    assert slow_code == 1008
    # it got a prefix of its stream and then nothing more
    assert len([m for m in slow_messages if m["type"] == "Word"]) < 300


def test_an_engine_failure_in_one_stream_ends_only_that_stream():
    with running(build_app(ScriptedSlots(delay_frames=0))) as address:

        async def scenario():
            async with connect(address) as good, connect(address) as broken:
                await receive(good), await receive(broken)
                await broken.send(audio([POISON, 0.0]))
                broken_messages = await receive_all(broken)
                return broken_messages, broken.close_code, await transcribe(good, 0.4, 2)

        broken_messages, broken_code, good_messages = asyncio.run(scenario())
        metrics = get(address, "/metrics")[1]
    assert broken_messages == [
        {"type": "Error", "message": "the server failed on this stream: poisoned samples"}
    ]
    assert broken_code == 1011
    assert without_buffered(good_messages) == expected_stream(4) + [{"type": "Marker", "id": 2}]
    assert metric(metrics, 'livecap_errors_total{kind="engine"}') == 1


def test_a_failed_join_is_an_error_for_that_client_and_the_next_one_joins():
    engine = ScriptedSlots(delay_frames=0)
    with running(build_app(engine)) as address:

        async def scenario():
            engine.fail_next_join = True
            async with connect(address) as failed:
                failed_messages = await receive_all(failed)
            async with connect(address) as after:
                await receive(after)
                return failed_messages, failed.close_code, await transcribe(after, 0.2, 1)

        failed_messages, code, after_messages = asyncio.run(scenario())
    assert failed_messages == [
        {"type": "Error", "message": "the server failed to open a stream: scripted join failure"}
    ]
    assert code == 1011
    assert without_buffered(after_messages) == expected_stream(2) + [{"type": "Marker", "id": 1}]


@pytest.mark.parametrize("failing", ["tick", "ready"])
def test_an_engine_failure_ends_its_streams_and_the_loop_serves_the_next_ones(failing):
    engine = ScriptedSlots(delay_frames=0)
    with running(build_app(engine)) as address:

        async def scenario():
            async with connect(address) as first, connect(address) as second:
                await receive(first), await receive(second)
                setattr(engine, f"fail_next_{failing}", True)
                await first.send(audio(seconds_of(0.1, 0.1)))
                ended = [await receive_all(first), await receive_all(second)]
            await asyncio.to_thread(wait_until, lambda: used_slots(address) == "0")
            async with connect(address) as after:
                await receive(after)
                return ended, await transcribe(after, 0.2, 9)

        ended, after_messages = asyncio.run(scenario())
    for messages in ended:
        assert messages == [
            {"type": "Error", "message": f"the engine failed: scripted {failing} failure"}
        ]
    assert without_buffered(after_messages) == expected_stream(2) + [{"type": "Marker", "id": 9}]


def test_an_idle_stream_is_closed_but_not_one_that_waits_for_its_transcript():
    engine = ScriptedSlots(delay_frames=0)
    settings = ServeSettings(idle_timeout_seconds=0.3)
    with running(build_app(engine, settings)) as address:

        async def scenario():
            async with connect(address) as idle:
                await receive(idle)
                idle_messages = await receive_all(idle)
                idle_code = idle.close_code
            async with connect(address) as waiting:
                await receive(waiting)
                engine.paused = True
                await send_in_pieces(waiting, seconds_of(0.1, 0.2))
                await asyncio.sleep(0.8)  # idle for longer than the timeout, audio pending
                engine.paused = False
                await waiting.send(marker(4))  # wakes the loop
                waited = await receive_until(waiting, "Marker")
            return idle_messages, idle_code, waited

        idle_messages, idle_code, waited = asyncio.run(scenario())
    assert [m["type"] for m in idle_messages] == ["Error"]
    assert "nothing came for 0.3 s" in idle_messages[0]["message"] and idle_code == 1008
    assert without_buffered(waited) == expected_stream(2) + [{"type": "Marker", "id": 4}]


def test_modules_info_and_metrics_count_streams_frames_and_batches():
    engine = ScriptedSlots(slots=3, delay_frames=0)
    with running(build_app(engine)) as address:

        async def scenario():
            async with connect(address) as first, connect(address) as second:
                await receive(first), await receive(second)
                engine.paused = True
                await send_in_pieces(first, seconds_of(0.1, 1.0))
                await send_in_pieces(second, seconds_of(0.1, 1.0))
                await asyncio.to_thread(
                    wait_until, lambda: engine.buffered(0) == engine.buffered(1) == 1000
                )
                engine.paused = False
                await first.send(marker(1)), await second.send(marker(2))  # wake the loop
                await receive_until(first, "Marker"), await receive_until(second, "Marker")
                return get_json(address, "/api/modules_info"), get(address, "/metrics")

        info, (content_type, metrics) = asyncio.run(scenario())
        wait_until(lambda: metric(get(address, "/metrics")[1], "livecap_streams_open") == 0)
    assert info == [
        {
            "type": "batched_asr",
            "path": "/api/asr-streaming",
            "lm": "scripted-slots",
            "used_slots": "2",
            "total_slots": "3",
        }
    ]
    assert content_type.startswith("text/plain")
    assert metric(metrics, "livecap_slots") == 3
    assert metric(metrics, "livecap_streams_open") == 2
    assert metric(metrics, "livecap_streams_total") == 2
    assert metric(metrics, "livecap_audio_received_seconds_total") == 2.0
    assert metric(metrics, "livecap_frames_stepped_total") == 20
    # both slots held their 10 frames before the first tick: 10 ticks of 2
    assert engine.batch_sizes == [2] * 10
    assert metric(metrics, "livecap_step_seconds_count") == 10
    assert metric(metrics, "livecap_batch_fill_sum") == 20
    assert metric(metrics, 'livecap_batch_fill_bucket{le="1"}') == 0
    assert metric(metrics, 'livecap_batch_fill_bucket{le="2"}') == 10
    assert metric(metrics, 'livecap_tick_seconds_by_frames_count{frames="2"}') == 10
    assert 'livecap_tick_seconds_by_frames_count{frames="1"}' not in metrics
    assert metric(metrics, "livecap_audio_dropped_seconds_total") == 0


def test_a_connection_cut_mid_stream_frees_its_slot_and_counts_its_audio_as_dropped():
    engine = ScriptedSlots()
    with running(build_app(engine)) as address:

        async def scenario():
            cut = await connect(address)
            await receive(cut)
            engine.paused = True  # its audio stays queued in the slot
            await send_in_pieces(cut, seconds_of(0.1, 1.0))
            await asyncio.to_thread(wait_until, lambda: engine.buffered(0) == 1000)
            cut.transport.abort()  # no close handshake: the TCP connection just ends

        asyncio.run(scenario())
        wait_until(lambda: used_slots(address) == "0")
        metrics = get(address, "/metrics")[1]
    assert metric(metrics, "livecap_audio_dropped_seconds_total") == 1.0
    assert metric(metrics, "livecap_streams_open") == 0


def test_a_tick_waits_half_a_frame_for_the_streams_it_stepped_last_time():
    """Live clients send out of phase: a tick due while a stream it stepped last time is a
    moment short of its next frame waits for it (up to half a frame) and steps both together;
    a stream that stops sending holds the others up once, for no longer than that."""
    engine = ScriptedSlots(slots=2, frame_size=400, delay_frames=0)  # 0.4 s frames
    frame = seconds_of(0.1, 0.4)
    with running(build_app(engine)) as address:

        async def scenario():
            async with connect(address) as first, connect(address) as second:
                await receive(first), await receive(second)
                engine.paused = True
                await first.send(audio(frame)), await second.send(audio(frame))
                await asyncio.to_thread(
                    wait_until, lambda: engine.buffered(0) == engine.buffered(1) == 400
                )
                engine.paused = False
                await first.send(marker(1))  # wake the loop: one tick of both
                await receive_until(first, "Step"), await receive_until(second, "Step")
                await first.send(audio(frame))
                await asyncio.sleep(0.05)  # the second's frame comes 50 ms later
                await second.send(audio(frame))
                await receive_until(first, "Step"), await receive_until(second, "Step")
                sent = asyncio.get_running_loop().time()
                await first.send(audio(frame))  # and then the second sends nothing
                await receive_until(first, "Step")
                return asyncio.get_running_loop().time() - sent

        alone = asyncio.run(scenario())
    assert engine.batch_sizes == [2, 2, 1]
    assert alone < 2.0  # waited out half a frame (0.2 s), then stepped without the second
