"""The whole path on loopback: `build_app` over the batched Kyutai engine on a tiny random
model, real websockets, three streams at once as Kyutai's file client sends them (audio,
a marker, silence), then our RemoteRecognizer against the same server. Each stream's words
are what the single-stream recognizer gives for the same audio."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from engine.events import Commit
from engine.models.contract import LoadOptions
from engine.serving.app import ServeSettings, build_app
from engine.serving.kyutai_slots import load_slots
from engine.streaming.kyutai_stream import load_recognizer
from tests.kyutai_fixtures import SHAPES, build_tiny_model, speechlike_audio
from tests.serving_harness import audio, connect, marker, receive, running

pytest.importorskip("transformers")
pytestmark = pytest.mark.timeout(120)

OPTIONS = LoadOptions(device="cpu", dtype="float32")
SILENCE_SECONDS = 2.0  # after the marker: more than the tiny model's 0.5 s delay


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a busy machine: two torch threads fight for the cores (tens of times
    slower), one does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("serve-e2e"), SHAPES["gqa"])


def _single_stream_words(folder, samples: np.ndarray) -> list[tuple[str, float]]:
    recognizer = load_recognizer(folder, str(folder), OPTIONS)
    events = recognizer.feed(samples)
    return [(e.text, round(e.start, 3)) for e in events if isinstance(e, Commit)]


async def _file_client(address: str, samples: np.ndarray) -> list[tuple[str, float]]:
    """As Kyutai's file client: the audio in 80 ms messages, a marker, silence; then every
    word until the marker has come back and the server has gone quiet."""
    words, marked = [], False
    async with connect(address) as websocket:
        assert (await receive(websocket))["type"] == "Ready"
        for start in range(0, len(samples), 1920):
            await websocket.send(audio(samples[start : start + 1920]))
        await websocket.send(marker(7))
        await websocket.send(audio(np.zeros(int(SILENCE_SECONDS * 24_000), np.float32)))
        while True:
            try:
                message = await receive(websocket, timeout=2.0 if marked else 30.0)
            except TimeoutError:
                assert marked, "the marker never came back"
                return words
            if message["type"] == "Word":
                words.append((message["text"], round(message["start_time"], 3)))
            marked = marked or message == {"type": "Marker", "id": 7}


def test_three_streams_at_once_each_get_their_single_stream_words(folder):
    clips = [speechlike_audio(seconds, seed) for seconds, seed in ((3.0, 1), (2.0, 2), (4.0, 3))]
    silence = np.zeros(int(SILENCE_SECONDS * 24_000), np.float32)
    expected = [_single_stream_words(folder, np.concatenate([clip, silence])) for clip in clips]
    assert any(expected), "the tiny model gave no words: the test would prove nothing"
    engine = load_slots(folder, str(folder), OPTIONS, slots=4)
    with running(build_app(engine, ServeSettings())) as address:

        async def all_streams():
            return await asyncio.gather(*(_file_client(address, clip) for clip in clips))

        got = asyncio.run(all_streams())
    assert got == expected


def test_remote_recognizer_against_our_server_gives_the_single_stream_words(folder):
    from engine.remote import load_remote

    clip = speechlike_audio(3.0, 4)
    silence = np.zeros(int(SILENCE_SECONDS * 24_000), np.float32)
    local = load_recognizer(folder, str(folder), OPTIONS)
    expected = [e.text for e in local.feed(np.concatenate([clip, silence])) + local.flush()
                if isinstance(e, Commit)]  # fmt: skip
    engine = load_slots(folder, str(folder), OPTIONS, slots=2)
    with running(build_app(engine, ServeSettings(api_keys=frozenset({"k1"})))) as address:
        remote = load_remote(f"ws://{address}", LoadOptions(api_key="k1"))
        events = []
        for start in range(0, len(clip) + len(silence), 4800):
            events += remote.feed(np.concatenate([clip, silence])[start : start + 4800])
        events += remote.flush()
    assert [e.text for e in events if isinstance(e, Commit)] == expected
