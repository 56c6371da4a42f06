"""A real uvicorn server on a free loopback port, in a thread, for the server's tests, and a
few client helpers over the `websockets` library (the one Kyutai's own clients use)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import msgpack
import uvicorn
import websockets


@contextlib.contextmanager
def running(app, ws_max_size: int = 16 * 1024 * 1024) -> Iterator[str]:
    """Serve `app` until the block ends; yields 'HOST:PORT'."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", ws_max_size=ws_max_size, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def url(address: str, query: str = "") -> str:
    return f"ws://{address}/api/asr-streaming{query}"


def connect(address: str, query: str = "", **kwargs):
    kwargs.setdefault("max_queue", None)  # read all: a paused reader delays the close
    return websockets.connect(url(address, query), open_timeout=5, close_timeout=2, **kwargs)


def audio(samples) -> bytes:
    return msgpack.packb({"type": "Audio", "pcm": [float(x) for x in samples]})


def marker(marker_id: int) -> bytes:
    return msgpack.packb({"type": "Marker", "id": marker_id})


async def receive(websocket, timeout: float = 5.0) -> dict:
    return msgpack.unpackb(await asyncio.wait_for(websocket.recv(), timeout))


async def receive_until(websocket, kind: str, timeout: float = 5.0) -> list[dict]:
    """Messages up to and with the first of type `kind`."""
    messages = []
    while not messages or messages[-1]["type"] != kind:
        messages.append(await receive(websocket, timeout))
    return messages


async def receive_all(websocket, timeout: float = 5.0) -> list[dict]:
    """Every message until the server closes the connection."""
    messages = []
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            messages.append(await receive(websocket, timeout))
    return messages


def get(address: str, path: str) -> tuple[str, str]:
    """(content type, body) of GET http://address/path."""
    with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as response:
        return response.headers["content-type"], response.read().decode()


def get_json(address: str, path: str):
    return json.loads(get(address, path)[1])


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)
