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


def engines_for(folder: Path, dtype: str, sizes: list[int]) -> dict[int, KyutaiSlots]:
    """One engine per batch size, all on one model."""
    model = load_model(folder, "cpu", dtype)
    tokenizer = Tokenizer.from_str(_tokenizer_json(model.config.vocab_size))
    info = ModelInfo("random", "kyutai", ("en",), None, 0.5, "cpu", dtype)
    parts = KyutaiParts(model, tokenizer, info)
    return {size: KyutaiSlots(parts, size, pause_flush=False) for size in sizes}


def time_batches(engines: dict[int, KyutaiSlots], ticks: int, warmup: int) -> dict:
    """Each engine's slots all streaming noise, one frame each per tick, the engines ticking
    in turn: tick and Mimi times by batch size, and throughput against one stream per round."""
    slots = {size: [engine.join() for _ in range(size)] for size, engine in engines.items()}
    rng = np.random.default_rng(0)
    mimi = next(iter(engines.values())).model.mimi
    mimi_seconds: list[float] = []
    encode = mimi.encode_rows

    def timed_encode(audio, state, rows):
        start = time.perf_counter()
        codes = encode(audio, state, rows)
        mimi_seconds.append(time.perf_counter() - start)
        return codes

    mimi.encode_rows = timed_encode
    tick_ms: dict[int, list[float]] = {size: [] for size in engines}
    mimi_ms: dict[int, list[float]] = {size: [] for size in engines}
    for i in range(warmup + ticks):
        order = sorted(engines) if i % 2 == 0 else sorted(engines, reverse=True)
        for size in order:
            engine = engines[size]
            for slot in slots[size]:
                engine.push(slot, (rng.standard_normal(FRAME) * 0.1).astype(np.float32))
            start = time.perf_counter()
            outputs = engine.tick()
            elapsed = time.perf_counter() - start
            assert sorted(outputs) == slots[size]
            assert all(out.steps == 1 for out in outputs.values())
            if i >= warmup:
                tick_ms[size].append(elapsed * 1000)
                mimi_ms[size].append(mimi_seconds[-1] * 1000)
    del mimi.encode_rows
    one = np.array(tick_ms[1])
    rows = {}
    for size in sorted(engines):
        ticks_here = np.array(tick_ms[size])
        median = float(np.median(ticks_here))
        rows[size] = {
            "tick_ms_median": median,
            "tick_ms_p95": float(np.percentile(ticks_here, 95)),
            "mimi_ms_median": float(np.median(mimi_ms[size])),
            "mimi_share": float(np.median(mimi_ms[size])) / median,
            "frames_per_second": size * 1000 / median,
            "realtime_streams": size * 1000 / median / FRAMES_PER_SECOND,
            "throughput_vs_1": float(np.median(size * one / ticks_here)),
        }
    return rows


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
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if 1 not in batches:
        parser.error("--batches must include 1: throughputs are against one stream")
    cpu = cpu_description()
    result: dict = {
        "cpu": cpu["model"],
        "cpu_flags": cpu["flags"],
        "threads": torch.get_num_threads(),
        "by_dtype": {},
    }
    for requested in args.dtype or ["int8", "float32"]:
        dtype = resolve_dtype(requested, "cpu", args.folder)
        engines = engines_for(args.folder, dtype, batches)
        with torch.inference_mode():
            rows = time_batches(engines, args.ticks, args.warmup)
        result["by_dtype"][f"{requested} ({dtype})" if requested == "auto" else dtype] = rows
        del engines
        gc.collect()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
