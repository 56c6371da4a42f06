"""Throughput of the batched Kyutai engine by batch size, full-size model, random weights.

    .venv/bin/python tests/benchmarks/kyutai_vs_transformers.py --keep /tmp/kyutai1b \
        --frames 20 --skip-reference                            # once: save a random 1B model
    flock /tmp/team/bench.lock .venv/bin/python tests/benchmarks/kyutai_slots_throughput.py \
        --folder /tmp/kyutai1b --dtype int8 --dtype auto

For each dtype and each batch size B (1, 2, 4, 8 by default), B slots of
engine/serving/kyutai_slots.py each get one 1920-sample frame per tick, and the tick (one
batched Mimi pass and one batched LM pass over the B rows) is timed. Prints one JSON object:
per dtype and B, the median and p95 tick in ms, Mimi's median share of it, frames stepped per
second, the real-time streams that rate carries (12.5 frames/s each) and the throughput
against B = 1. Issue #16's target: at B = 8, at least 4x the throughput of B = 1 on 2 cores.
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


def engine_for(folder: Path, dtype: str, slots: int) -> KyutaiSlots:
    model = load_model(folder, "cpu", dtype)
    tokenizer = Tokenizer.from_str(_tokenizer_json(model.config.vocab_size))
    info = ModelInfo("random", "kyutai", ("en",), None, 0.5, "cpu", dtype)
    return KyutaiSlots(KyutaiParts(model, tokenizer, info), slots, pause_flush=False)


def time_batch(engine: KyutaiSlots, batch: int, ticks: int, warmup: int) -> dict:
    """B streams of noise, one frame each per tick: tick and Mimi times."""
    slots = [engine.join() for _ in range(batch)]
    rng = np.random.default_rng(batch)
    mimi_seconds: list[float] = []
    encode = engine.model.mimi.encode_rows

    def timed_encode(audio, state, rows):
        start = time.perf_counter()
        codes = encode(audio, state, rows)
        mimi_seconds.append(time.perf_counter() - start)
        return codes

    engine.model.mimi.encode_rows = timed_encode
    tick_ms, mimi_ms = [], []
    for i in range(warmup + ticks):
        for slot in slots:
            engine.push(slot, (rng.standard_normal(FRAME) * 0.1).astype(np.float32))
        start = time.perf_counter()
        outputs = engine.tick()
        elapsed = time.perf_counter() - start
        assert sorted(outputs) == slots and all(out.steps == 1 for out in outputs.values())
        if i >= warmup:
            tick_ms.append(elapsed * 1000)
            mimi_ms.append(mimi_seconds[-1] * 1000)
    del engine.model.mimi.encode_rows
    for slot in slots:
        engine.leave(slot)
    median = float(np.median(tick_ms))
    return {
        "tick_ms_median": median,
        "tick_ms_p95": float(np.percentile(tick_ms, 95)),
        "mimi_ms_median": float(np.median(mimi_ms)),
        "mimi_share": float(np.median(mimi_ms)) / median,
        "frames_per_second": batch * 1000 / median,
        "realtime_streams": batch * 1000 / median / FRAMES_PER_SECOND,
    }


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
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    cpu = cpu_description()
    result: dict = {
        "cpu": cpu["model"],
        "cpu_flags": cpu["flags"],
        "threads": torch.get_num_threads(),
        "by_dtype": {},
    }
    for requested in args.dtype or ["int8", "float32"]:
        dtype = resolve_dtype(requested, "cpu", args.folder)
        engine = engine_for(args.folder, dtype, max(batches))
        with torch.inference_mode():
            rows = {b: time_batch(engine, b, args.ticks, args.warmup) for b in batches}
        for entry in rows.values():
            entry["throughput_vs_1"] = entry["frames_per_second"] / rows[1]["frames_per_second"]
        result["by_dtype"][f"{requested} ({dtype})" if requested == "auto" else dtype] = rows
        del engine
        gc.collect()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
