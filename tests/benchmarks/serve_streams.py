"""Many streams against `livecap serve`: compute throughput by batch size, and how many
streams keep real time.

    .venv/bin/python tests/benchmarks/serve_streams.py --model /tmp/kyutai-1b --dtype int8 \
        --streams 1,2,4,8 --seconds 20

Starts `main.py serve --batch max(streams)` once (idle slots cost nothing), then for each N:
- flood: once all N clients have their slots, each sends `--seconds` of audio as fast as it
  can, in 1 s messages, and waits for every Step; frames stepped per second of wall time is
  the throughput, and the server's /metrics give the frames stepped per second of ticking,
  the mean tick time and batch fill over that phase, and the time of the ticks that stepped
  all N streams: N frames per such tick is the compute throughput at N (the first streams
  to send step a few part-filled ticks, and finish that many ticks ahead);
- live: N clients send one 80 ms frame every 80 ms for `--seconds`; a stream keeps real time
  when the Step of each frame comes back within 1 s of sending it (p95 lag ≤ 1 s).
With `--rounds R` the floods are run R times, the stream counts in turn (the order reversed
every other round), so a slow spell of the shared host weighs on every count alike; each
ratio against N = 1 is the median of the rounds' ratios, each against its own round's N = 1,
and the live phase runs in the first round only. With `--warm S` each flood's clients first
send S seconds of audio, stepped before the measured part starts: 60 s fills a 1B stream's
key/value ring, as every stream's is after its first minute (the live phase starts cold).
Prints one JSON object with the CPU, per-N
figures (medians over the rounds) and the throughput ratios against N = 1.
`--model` is a Kyutai STT folder; `tests/benchmarks/kyutai_vs_transformers.py --config 1b`
builds a full-size random one (its `--keep` folder).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import msgpack
import numpy as np
import websockets

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.models.machine_cache import cpu_description  # noqa: E402

RATE, FRAME = 24_000, 1920
FRAME_SECONDS = FRAME / RATE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args, port: int) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "main.py"), "serve", "--model", args.model]
    command += ["--batch", str(max(args.streams)), "--port", str(port), "--dtype", args.dtype]
    # its log goes to a file: on our standard output it would mix into the JSON, and an
    # unread pipe would fill up and stall the server
    log = tempfile.TemporaryFile("w+")
    server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the server exited: {log.read()}")
        try:
            _metrics(port)
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not start within 10 minutes")


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ("{" not in line or "by_frames" in line):
            name, value = line.split()
            values[name] = float(value)
    return values


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    samples = int(seconds * RATE) // FRAME * FRAME
    envelope = 0.5 + 0.5 * np.sin(np.arange(samples) / RATE * 2 * np.pi * 3)
    return (0.1 * envelope * rng.standard_normal(samples)).astype(np.float32)


def _audio(pcm: np.ndarray) -> bytes:
    return msgpack.packb({"type": "Audio", "pcm": pcm.tolist()})


class _Start:
    """Where the measured floods begin: once every stream has its slot (and, with `warm`,
    has had its warm-up audio stepped), the server's metrics are read and all start."""

    def __init__(self, port: int, streams: int) -> None:
        self.port, self.waiting = port, streams
        self.go = asyncio.Event()
        self.metrics: dict[str, float] = {}
        self.time = 0.0

    async def ready(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.metrics = await asyncio.to_thread(_metrics, self.port)
            self.time = time.monotonic()
            self.go.set()
        await self.go.wait()


async def _stream(
    url: str, pcm: np.ndarray, paced: bool, start: _Start, warm: np.ndarray
) -> list[float]:
    """`warm` sent and stepped first (not measured); then, once every stream is ready, `pcm`
    (at once, or a frame per 80 ms): the lag of each of its frames' Step."""
    async with websockets.connect(url, max_size=None, open_timeout=60) as websocket:
        assert msgpack.unpackb(await websocket.recv())["type"] == "Ready"
        # in 30 s pieces, each stepped before the next: the server holds 60 s a stream
        for piece in np.split(warm, range(30 * RATE, len(warm), 30 * RATE)):
            await _send_and_step(websocket, piece, paced=False)
        await start.ready()
        return await _send_and_step(websocket, pcm, paced)


async def _send_and_step(websocket, pcm: np.ndarray, paced: bool) -> list[float]:
    """Send `pcm` (at once, in 1 s messages, or a frame per 80 ms) and wait for its Steps:
    each frame's lag."""
    frames = len(pcm) // FRAME
    sent: list[float] = []
    lags: list[float] = []

    async def send() -> None:
        start = time.monotonic()
        if not paced:  # back to back in 1 s messages (one message has at most 4 MiB)
            sent.extend([start] * frames)
            for i in range(0, len(pcm), RATE):
                await websocket.send(_audio(pcm[i : i + RATE]))
            return
        for i in range(frames):
            await asyncio.sleep(max(0.0, start + i * FRAME_SECONDS - time.monotonic()))
            sent.append(time.monotonic())
            await websocket.send(_audio(pcm[i * FRAME : (i + 1) * FRAME]))

    sender = asyncio.create_task(send())
    steps = 0
    while steps < frames:  # Step i answers model frame i; the first prefix frames too
        message = msgpack.unpackb(await websocket.recv())
        if message["type"] == "Step":
            lags.append(time.monotonic() - sent[min(steps, len(sent) - 1)])
            steps += 1
    await sender
    return lags


async def _run(
    port: int, streams: int, seconds: float, paced: bool, warm: float = 0.0
) -> tuple[_Start, list[list[float]]]:
    # Streams connect one after another; were each to send as soon as it joined, the first
    # would step alone for a few ticks and finish that many ticks before the others.
    url = f"ws://127.0.0.1:{port}/api/asr-streaming"
    start = _Start(port, streams)
    tasks = [
        _stream(url, _speechlike(seconds, seed), paced, start, _speechlike(warm, seed + 100))
        for seed in range(streams)
    ]
    return start, await asyncio.gather(*tasks)


def measure(port: int, streams: int, seconds: float, live: bool = True, warm: float = 0.0) -> dict:
    start, _ = asyncio.run(_run(port, streams, seconds, paced=False, warm=warm))
    wall = time.monotonic() - start.time
    before, after = start.metrics, _metrics(port)
    ticks = after["livecap_step_seconds_count"] - before["livecap_step_seconds_count"]
    tick_seconds = after["livecap_step_seconds_sum"] - before["livecap_step_seconds_sum"]
    frames = after["livecap_frames_stepped_total"] - before["livecap_frames_stepped_total"]
    full = f'livecap_tick_seconds_by_frames_{{}}{{{{frames="{streams}"}}}}'
    full_ticks = after[full.format("count")] - before.get(full.format("count"), 0)
    full_seconds = after[full.format("sum")] - before.get(full.format("sum"), 0)
    result = {
        "streams": streams,
        "flood_frames_per_second": frames / wall,
        "frames_per_tick_second": frames / tick_seconds,
        "mean_tick_ms": 1000 * tick_seconds / max(ticks, 1),
        "full_tick_ms": 1000 * full_seconds / full_ticks,  # the ticks that stepped all N
        "full_ticks": full_ticks,
        "frames_per_full_tick_second": streams * full_ticks / full_seconds,
        "mean_batch_fill": frames / max(ticks, 1),
    }
    if live:
        _, lags = asyncio.run(_run(port, streams, seconds, paced=True))
        p95s = [float(np.percentile(stream, 95)) for stream in lags]
        result["live_lag_p95_seconds"] = p95s
        result["streams_keeping_real_time"] = sum(p95 <= 1.0 for p95 in p95s)
    return result


_RATIOS = (
    ("flood_frames_per_second", "throughput_vs_one_stream"),
    ("frames_per_tick_second", "tick_throughput_vs_one_stream"),
    ("frames_per_full_tick_second", "full_tick_throughput_vs_one_stream"),
)


def summary(rounds: list[dict[int, dict]]) -> list[dict]:
    """Per stream count: the median of each figure over the rounds, the live phase's (first
    round only) as it was, and each ratio against one stream as the median of the rounds'
    ratios (each against the one-stream figure of its own round)."""
    results = []
    for n in rounds[0]:
        runs = [measured[n] for measured in rounds]
        result = dict(runs[0])
        for figure in (
            "flood_frames_per_second",
            "frames_per_tick_second",
            "mean_tick_ms",
            "full_tick_ms",
            "frames_per_full_tick_second",
            "mean_batch_fill",
        ):
            result[figure] = float(np.median([run[figure] for run in runs]))
        if 1 in rounds[0]:
            for figure, ratio in _RATIOS:
                result[ratio] = float(np.median([m[n][figure] / m[1][figure] for m in rounds]))
            full = "frames_per_full_tick_second"
            result["full_tick_throughput_by_round"] = [m[n][full] / m[1][full] for m in rounds]
        result["rounds"] = len(runs)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--streams", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=1, help="floods of every stream count")
    parser.add_argument(
        "--warm",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="audio each flood's streams send first, unmeasured (60: full 1B rings)",
    )
    args = parser.parse_args()
    args.streams = [int(n) for n in args.streams.split(",")]
    port = _free_port()
    server = start_server(args, port)
    rounds: list[dict[int, dict]] = []
    try:
        for index in range(args.rounds):
            order = args.streams if index % 2 == 0 else args.streams[::-1]
            measured = {
                n: measure(port, n, args.seconds, live=index == 0, warm=args.warm) for n in order
            }
            rounds.append({n: measured[n] for n in args.streams})
    finally:
        server.terminate()
        server.wait(timeout=30)
    results = summary(rounds)
    output = {"cpu": cpu_description(), "dtype": args.dtype, "warm_seconds": args.warm}
    print(json.dumps(output | {"results": results}, indent=2))


if __name__ == "__main__":
    main()
