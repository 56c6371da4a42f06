"""The server scaled out on Ray Serve, on a local Ray cluster on this machine's CPUs: two
replicas, each its own engine in its own process; streams spread over both, a stream past
every replica's slots is refused as on one machine, and a killed replica ends only its own
streams."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import msgpack
import numpy as np
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from engine.serving.app import NO_FREE_CHANNELS, ServeSettings  # noqa: E402
from engine.serving.ray_app import APP_NAME, application  # noqa: E402

pytestmark = pytest.mark.timeout(240)
REPO = Path(__file__).resolve().parent.parent
SLOTS = 2


def _scripted_engine():
    from tests.serving_doubles import ScriptedSlots

    return ScriptedSlots(slots=SLOTS, sample_rate=1000, frame_size=100)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with Serve on a loopback port; yields the streaming URL."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"ws://127.0.0.1:{port}/api/asr-streaming"
    finally:
        serve.shutdown()
        ray.shutdown()


def _open(url: str):
    websocket = connect(url, open_timeout=30, close_timeout=2)
    return websocket, msgpack.unpackb(websocket.recv(timeout=30))


def _audio(seconds: float) -> bytes:
    pcm = np.full(int(seconds * 1000), 0.1, np.float32)
    return msgpack.packb({"type": "Audio", "pcm": pcm.tolist()})


def _words(websocket, count: int, timeout: float = 20.0) -> list[str]:
    words: list[str] = []
    deadline = time.monotonic() + timeout
    while len(words) < count:
        message = msgpack.unpackb(websocket.recv(timeout=max(0.1, deadline - time.monotonic())))
        if message["type"] == "Word":
            words.append(message["text"])
    return words


def _replica_actors() -> list:
    names = ray.util.list_named_actors(all_namespaces=True)
    return [
        ray.get_actor(actor["name"], namespace=actor["namespace"])
        for actor in names
        if actor["name"].startswith("SERVE_REPLICA") and APP_NAME in actor["name"]
    ]


def test_serve_ray_without_a_cluster_says_how_to_start_one():
    """Runs before the cluster fixture starts one (tests run in file order)."""
    result = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "serve", "--model", "kyutai/x", "--ray"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert result.returncode == 2
    assert "No Ray cluster is running" in result.stderr
    assert "ray start --head" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_address_where_no_cluster_answers_is_refused_at_once():
    """Ray itself would retry such an address for minutes; nothing listens on a free port."""
    address = f"127.0.0.1:{_free_port()}"
    command = [sys.executable, str(REPO / "main.py"), "serve", "--model", "kyutai/x", "--ray"]
    result = subprocess.run(
        [*command, "--ray-address", address], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"No Ray cluster answers at {address}." in result.stderr
    assert "Traceback" not in result.stderr


def test_streams_spread_over_replicas_and_a_dead_replica_ends_only_its_own(cluster):
    serve.run(
        application(_scripted_engine, SLOTS, ServeSettings(), replicas=2),
        name=APP_NAME,
        route_prefix="/",
    )
    streams = [_open(cluster) for _ in range(2 * SLOTS)]
    assert [ready for _, ready in streams] == [{"type": "Ready"}] * (2 * SLOTS)

    # every replica's slots are taken: the next stream is refused, as on one machine
    extra, refusal = _open(cluster)
    assert refusal == {"type": "Error", "message": NO_FREE_CHANNELS}
    extra.close()

    for websocket, _ in streams:
        websocket.send(_audio(0.4))
    assert all(_words(websocket, 2) == ["w0", "w1"] for websocket, _ in streams)

    replicas = _replica_actors()
    assert len(replicas) == 2
    ray.kill(replicas[0], no_restart=True)
    time.sleep(1.0)

    survivors, ended = [], 0
    for websocket, _ in streams:
        try:
            websocket.send(_audio(0.4))
            survivors.append(_words(websocket, 2, timeout=10.0))
        except (ConnectionClosed, TimeoutError):
            ended += 1
    # the dead replica held exactly its own slots' streams; the others go on, in order
    assert ended == SLOTS
    assert survivors == [["w2", "w3"]] * SLOTS
    for websocket, _ in streams:
        websocket.close()
    serve.delete(APP_NAME)


@pytest.mark.skipif(os.environ.get("LIVECAP_SKIP_RAY_MODEL") == "1", reason="asked to skip")
def test_replicas_load_the_real_engine(cluster, tmp_path_factory):
    from engine.cli.serve import load_slot_engine  # what `livecap serve --ray` gives replicas
    from engine.models.contract import LoadOptions
    from tests.kyutai_fixtures import SHAPES, build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("kyutai-ray"), SHAPES["gqa"])
    options = LoadOptions(device="cpu", dtype="float32")
    factory = partial(load_slot_engine, str(folder), options, SLOTS)
    serve.run(
        application(factory, SLOTS, ServeSettings(), replicas=1), name=APP_NAME, route_prefix="/"
    )
    websocket, ready = _open(cluster)
    assert ready == {"type": "Ready"}
    websocket.send(_audio_24k(1.0))
    steps = 0
    while steps < 12:
        if msgpack.unpackb(websocket.recv(timeout=30))["type"] == "Step":
            steps += 1
    websocket.close()
    serve.delete(APP_NAME)


def _audio_24k(seconds: float) -> bytes:
    rng = np.random.default_rng(0)
    pcm = (0.1 * rng.standard_normal(int(seconds * 24_000))).astype(np.float32)
    return msgpack.packb({"type": "Audio", "pcm": pcm.tolist()})
