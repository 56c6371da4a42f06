"""Throughput of the batched Kyutai engine by batch size, full-size model, random weights.

    .venv/bin/python tests/benchmarks/kyutai_vs_transformers.py --keep /tmp/kyutai1b \
        --frames 20 --skip-reference                            # once: save a random 1B model
    flock /tmp/team/bench.lock .venv/bin/python tests/benchmarks/kyutai_slots_throughput.py \
        --folder /tmp/kyutai1b --dtype int8 --dtype auto

For each dtype and each batch size B (1, 2, 4, 8 by default), an engine of
engine/serving/kyutai_slots.py with B slots (all engines share one model) gets one
1920-sample frame per slot per tick, and the tick (one batched Mimi pass and one batched LM
pass over the B rows) is timed. The engines tick in turn, round after round (the order
reversed every other round), so a slow spell of the shared host weighs on every batch size
alike; the throughput against B = 1 is the median over rounds of B · (B = 1's tick) / (B's
tick) in the same round (ticking beside the larger engines costs B = 1's tick about a tenth,
its caches taken by the others, so the ratio reads higher than against one stream ticking
alone: see the README). Prints one JSON object: per dtype and B, the median and p95 tick in
ms, Mimi's median share of it, frames stepped per second, the real-time streams that rate
carries (12.5 frames/s each) and the throughput against B = 1. Issue #16's target: at B = 8,
at least 4x the throughput of B = 1 on 2 cores.

With `--processes` each batch size ticks in a process of its own instead, its engine on its
own copy of the model: each first ticks its `--warmup` ticks alone (760 fill the rings, as
after a stream's first minute), then they take blocks of `--block` ticks in turn (the order
reversed every other round), and the throughput against B = 1 is the median over rounds of
B · (B = 1's median tick) / (B's) in the same round. No engine's caches are taken by another
between two of its ticks, as with one stream served alone.

With `--device cuda` (bfloat16; tests/benchmarks/gpu_check.sh runs it) each batch size runs
alone, one after another, its engine freed before the next: the rings of hundreds of streams
(98 MB each for the 1B in bfloat16 at 750 positions) would not all fit at once. `--warmup
760` fills every ring first, as after a stream's first minute. Each batch size's figures
then stand on their own, and its throughput against B = 1 is the ratio of median ticks.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine import openmp  # noqa: E402

openmp.configure()  # as main.py, before torch loads

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from engine.models.kyutai.weights import load_model  # noqa: E402
from engine.models.machine_cache import cpu_description  # noqa: E402
from engine.recognizer import ModelInfo  # noqa: E402
from engine.serving.kyutai_slots import KyutaiSlots  # noqa: E402
from engine.streaming.kyutai_stream import KyutaiParts, resolve_dtype  # noqa: E402
from tests.kyutai_fixtures import _tokenizer_json  # noqa: E402

FRAME = 1920
FRAMES_PER_SECOND = 12.5


def parts_for(folder: Path, dtype: str, device: str = "cpu") -> KyutaiParts:
    """The saved model, loaded once for every engine."""
    model = load_model(folder, device, dtype)
    tokenizer = Tokenizer.from_str(_tokenizer_json(model.config.vocab_size))
    info = ModelInfo("random", "kyutai", ("en",), None, 0.5, device, dtype)
    return KyutaiParts(model, tokenizer, info)


def engines_for(folder: Path, dtype: str, sizes: list[int]) -> dict[int, KyutaiSlots]:
    """One engine per batch size, all on one model (on the CPU)."""
    parts = parts_for(folder, dtype)
    return {size: KyutaiSlots(parts, size, pause_flush=False) for size in sizes}


class _Clock:
    """Ticks of several engines on one model, timed whole and in their Mimi pass (the GPU's
    queue drained before each reading)."""

    def __init__(self, engines: dict[int, KyutaiSlots], device: str) -> None:
        self.engines, self.cuda = engines, device == "cuda"
        self.slots = {
            size: [engine.join() for _ in range(size)] for size, engine in engines.items()
        }
        self.rng = np.random.default_rng(0)
        self.mimi = next(iter(engines.values())).model.mimi
        self.mimi_seconds: list[float] = []
        encode = self.mimi.encode_rows

        def timed_encode(audio, state, rows):
            start = self._now()
            codes = encode(audio, state, rows)
            self.mimi_seconds.append(self._now() - start)
            return codes

        self.mimi.encode_rows = timed_encode
        self.tick_ms: dict[int, list[float]] = {size: [] for size in engines}
        self.mimi_ms: dict[int, list[float]] = {size: [] for size in engines}

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def tick(self, size: int, measured: bool) -> None:
        """Every slot of engine `size` one frame of noise, one tick."""
        engine = self.engines[size]
        for slot in self.slots[size]:
            engine.push(slot, (self.rng.standard_normal(FRAME) * 0.1).astype(np.float32))
        start = self._now()
        outputs = engine.tick()
        elapsed = self._now() - start
        assert sorted(outputs) == self.slots[size]
        assert all(out.steps == 1 for out in outputs.values())
        if measured:
            self.tick_ms[size].append(elapsed * 1000)
            self.mimi_ms[size].append(self.mimi_seconds[-1] * 1000)

    def close(self) -> None:
        del self.mimi.encode_rows


def _figures(size: int, tick_ms: list[float], mimi_ms: list[float], vs_one: float) -> dict:
    ticks = np.array(tick_ms)
    median = float(np.median(ticks))
    return {
        "tick_ms_median": median,
        "tick_ms_p95": float(np.percentile(ticks, 95)),
        "mimi_ms_median": float(np.median(mimi_ms)),
        "mimi_share": float(np.median(mimi_ms)) / median,
        "frames_per_second": size * 1000 / median,
        "realtime_streams": size * 1000 / median / FRAMES_PER_SECOND,
        "throughput_vs_1": vs_one,
    }


def time_batches(engines: dict[int, KyutaiSlots], ticks: int, warmup: int) -> dict:
    """Each engine's slots all streaming noise, one frame each per tick, the engines ticking
    in turn: tick and Mimi times by batch size, and throughput against one stream per round."""
    clock = _Clock(engines, "cpu")
    for i in range(warmup + ticks):
        for size in sorted(engines) if i % 2 == 0 else sorted(engines, reverse=True):
            clock.tick(size, measured=i >= warmup)
    clock.close()
    one = np.array(clock.tick_ms[1])
    rows = {}
    for size in sorted(engines):
        ticks_here = clock.tick_ms[size]
        paired = float(np.median(size * one / np.array(ticks_here)))  # round by round
        rows[size] = _figures(size, ticks_here, clock.mimi_ms[size], paired)
    return rows


def time_each_alone(parts: KyutaiParts, sizes: list[int], ticks: int, warmup: int) -> dict:
    """Each batch size on its own engine, one after another (each freed before the next):
    tick and Mimi times, and throughput against one stream from the median ticks."""
    tick_ms, mimi_ms = {}, {}
    for size in sorted(sizes):
        clock = _Clock({size: KyutaiSlots(parts, size, pause_flush=False)}, parts.info.device)
        for i in range(warmup + ticks):
            clock.tick(size, measured=i >= warmup)
        clock.close()
        tick_ms[size], mimi_ms[size] = clock.tick_ms[size], clock.mimi_ms[size]
        median = np.median(tick_ms[size])  # as it goes, should a time limit cut the run short
        print(f"B = {size}: median tick {median:.1f} ms", file=sys.stderr, flush=True)
        del clock
        gc.collect()
        if parts.info.device == "cuda":
            torch.cuda.empty_cache()
    one = np.median(tick_ms[1])
    return {
        size: _figures(
            size, tick_ms[size], mimi_ms[size], float(size * one / np.median(tick_ms[size]))
        )
        for size in sorted(sizes)
    }


def time_in_processes(
    folder: Path, dtype: str, sizes: list[int], ticks: int, warmup: int, block: int
) -> dict:
    """Each batch size ticked in a process of its own, blocks of `block` ticks in turn, after
    `warmup` ticks each alone: tick and Mimi times, throughput against one stream by round."""
    spawn = multiprocessing.get_context("spawn")  # a fork would share the parent's torch
    workers = {}
    for size in sorted(sizes):
        ours, theirs = spawn.Pipe()
        process = spawn.Process(target=_ticker, args=(folder, dtype, size, theirs), daemon=True)
        process.start()
        workers[size] = (process, ours)
    for _, pipe in workers.values():
        pipe.recv()  # loaded
    for _, pipe in workers.values():  # one after another, so that each warms up alone
        pipe.send(warmup)
        pipe.recv()
    tick_ms: dict[int, list[float]] = {size: [] for size in workers}
    mimi_ms: dict[int, list[float]] = {size: [] for size in workers}
    medians: dict[int, list[float]] = {size: [] for size in workers}
    for round_index in range(max(1, ticks // block)):
        order = sorted(workers) if round_index % 2 == 0 else sorted(workers, reverse=True)
        for size in order:
            workers[size][1].send(block)
            ticked, encoded = workers[size][1].recv()
            tick_ms[size] += ticked
            mimi_ms[size] += encoded
            medians[size].append(float(np.median(ticked)))
    for process, pipe in workers.values():
        pipe.send(None)
        process.join(timeout=60)
    one = np.array(medians[1])
    return {
        size: _figures(
            size, tick_ms[size], mimi_ms[size], float(np.median(size * one / medians[size]))
        )
        for size in sorted(workers)
    }


def _ticker(folder: Path, dtype: str, size: int, pipe) -> None:
    """A worker of `time_in_processes`: loads its engine, then ticks as many times as it is
    told, answering each request with those ticks' times; None ends it."""
    clock = _Clock(engines_for(folder, dtype, [size]), "cpu")
    pipe.send("loaded")
    with torch.inference_mode():
        while (count := pipe.recv()) is not None:
            first = len(clock.tick_ms[size])
            for _ in range(count):
                clock.tick(size, measured=True)
            pipe.send((clock.tick_ms[size][first:], clock.mimi_ms[size][first:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True, help="a saved full-size model")
    parser.add_argument(
        "--dtype",
        action="append",
        choices=["auto", "float32", "bfloat16", "int8", "int4"],
        help="repeat for several (default: int8 and float32)",
    )
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--processes", action="store_true", help="each batch size in a process of its own"
    )
    parser.add_argument("--block", type=int, default=10, help="ticks a turn, with --processes")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if 1 not in batches:
        parser.error("--batches must include 1: throughputs are against one stream")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA GPU here")
    cpu = cpu_description()
    result: dict = {
        "cpu": cpu["model"],
        "cpu_flags": cpu["flags"],
        "threads": torch.get_num_threads(),
        "by_dtype": {},
    }
    if args.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)
    default = ["bfloat16"] if args.device == "cuda" else ["int8", "float32"]
    for requested in args.dtype or default:
        dtype = resolve_dtype(requested, args.device, args.folder)
        with torch.inference_mode():
            if args.device == "cuda":
                rows = time_each_alone(
                    parts_for(args.folder, dtype, "cuda"), batches, args.ticks, args.warmup
                )
            elif args.processes:
                rows = time_in_processes(
                    args.folder, dtype, batches, args.ticks, args.warmup, args.block
                )
            else:
                engines = engines_for(args.folder, dtype, batches)
                rows = time_batches(engines, args.ticks, args.warmup)
                del engines
        result["by_dtype"][f"{requested} ({dtype})" if requested == "auto" else dtype] = rows
        gc.collect()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
