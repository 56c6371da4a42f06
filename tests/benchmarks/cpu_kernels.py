"""How fast this CPU reads weights through each one-row matmul kernel PyTorch offers.

    flock /tmp/team/bench.lock .venv/bin/python tests/benchmarks/cpu_kernels.py

A streaming step multiplies one row of activations by every weight matrix once, so its time
is the bytes read divided by the rate a kernel reads them at. This prints, for a stack of
decoder-sized matrices (too many for any cache), each kernel's median time per matrix and its
read rate in GB/s, plus for the quantized ones the weight error and the output cosine against
float32, and for int8 how passes of several rows fare. The engines choose their kernels from
these figures (engine/models/kernels.py; fbgemm's int8 kernel only where its probe finds it
exact on this CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.models.kernels import (  # noqa: E402
    BeamRowsWeight,
    PackedInt8Linear,
    fbgemm_int8,
    rows_linear,
)


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: first-touch page faults, kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def int4_groups(weight: torch.Tensor, group: int):
    """Asymmetric 4-bit codes per run of `group` inputs, packed for the CPU int4 kernel."""
    rows = weight.reshape(weight.shape[0], -1, group)
    low, high = rows.amin(-1), rows.amax(-1)
    scale = ((high - low) / 15).clamp(min=1e-12)
    codes = torch.round((rows - low[..., None]) / scale[..., None]).clamp(0, 15)
    restored = (codes * scale[..., None] + low[..., None]).reshape(weight.shape)
    packed = torch._convert_weight_to_int4pack_for_cpu(codes.reshape(weight.shape).int(), 1)
    zeros = low + 8 * scale  # the kernel computes (q - 8) * scale + zero
    scales_and_zeros = torch.stack((scale.T, zeros.T), dim=-1).to(torch.bfloat16)
    return packed, scales_and_zeros, restored


def as_linear(weight: torch.Tensor) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    linear.weight = nn.Parameter(weight, requires_grad=False)
    return linear


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=11264, help="output features")
    parser.add_argument("--cols", type=int, default=2048, help="input features")
    parser.add_argument("--matrices", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    n, k, count = args.rows, args.cols, args.matrices
    weights = [torch.randn(n, k) * 0.02 for _ in range(count)]
    x = torch.randn(1, k)
    exact = [F.linear(x, w) for w in weights[:2]]
    results = {"threads": torch.get_num_threads(), "matrix": [n, k], "kernels": {}}

    def record(name: str, run: Callable[[], list], nbytes: int, restored=None) -> None:
        seconds = median_seconds(run, args.repeats)
        entry = {"ms_per_matrix": 1000 * seconds / count, "gb_per_s": nbytes / seconds / 1e9}
        if restored is not None:
            outputs = run()[:2]
            entry["weight_rel_error"] = float((restored - weights[0]).norm() / weights[0].norm())
            entry["output_cosine"] = min(
                float(F.cosine_similarity(o.float().view(-1), e.view(-1), dim=0))
                for o, e in zip(outputs, exact, strict=True)
            )
        results["kernels"][name] = entry
        print(name, json.dumps(entry), flush=True)

    record("float32 linear", lambda: [F.linear(x, w) for w in weights], n * k * 4 * count)
    for rows in (5, 16):  # beams, drafts and prefixes: RowLinear's weight · xᵀ in slices
        xr = torch.randn(rows, k)
        record(
            f"float32 {rows} rows (linear)",
            lambda xr=xr: [F.linear(xr, w) for w in weights],
            n * k * 4 * count,
        )
        record(
            f"float32 {rows} rows (weight · xT in slices, rows_linear)",
            lambda xr=xr: [rows_linear(xr, w, None) for w in weights],
            n * k * 4 * count,
        )
    if BeamRowsWeight.available(weights[0]):  # beam steps: weights packed for 5 rows
        packs = [BeamRowsWeight(w, 5) for w in weights]
        xr = torch.randn(5, k)
        record(
            "float32 5 rows (MKL-packed weights, BeamRowsWeight)",
            lambda: [p.linear(xr, None) for p in packs],
            n * k * 4 * count,
        )
        packs = None
    transposed = [w.T.contiguous() for w in weights]
    record("float32 x @ w.T stored", lambda: [x @ w for w in transposed], n * k * 4 * count)
    transposed = None  # free before the next copy
    halves = [w.bfloat16() for w in weights]
    xb = x.bfloat16()
    record("bfloat16 linear", lambda: [F.linear(xb, w) for w in halves], n * k * 2 * count)
    record("bfloat16 mv", lambda: [torch.mv(w, xb[0]) for w in halves], n * k * 2 * count)
    halves = None

    int8 = []
    for w in weights:
        scale = w.abs().amax(dim=1) / 127
        int8.append((torch.round(w / scale[:, None]).to(torch.int8), scale))
    restored = int8[0][0].float() * int8[0][1][:, None]
    bf_scales = [(q, s.bfloat16()) for q, s in int8]
    record(
        "int8 weight-only (_weight_int8pack_mm, bfloat16 x)",
        lambda: [torch._weight_int8pack_mm(xb, q, s) for q, s in bf_scales],
        n * k * count,
        restored,
    )
    record(
        "int8 weight-only (_weight_int8pack_mm, float32 x)",
        lambda: [torch._weight_int8pack_mm(x, q, s) for q, s in int8],
        n * k * count,
        restored,
    )
    if fbgemm_int8():  # PackedInt8Linear: fbgemm's int8 x int8 kernel, activations in 2 parts
        packed = [PackedInt8Linear.from_linear(as_linear(w)) for w in weights]
        for rows in (1, 5):
            xr = x if rows == 1 else torch.randn(rows, k)
            record(
                f"int8 {rows} rows (fbgemm, split activations)",
                lambda xr=xr: [layer(xr) for layer in packed],
                n * k * count,
                restored if rows == 1 else None,
            )
        packed = None
    for rows in (4, 5, 12, 26):  # passes over many rows: the int8 kernel reads per 4 rows
        xr = torch.randn(rows, k).bfloat16()
        record(
            f"int8 {rows} rows (_weight_int8pack_mm)",
            lambda xr=xr: [torch._weight_int8pack_mm(xr, q, s) for q, s in bf_scales],
            n * k * count,
        )
        record(
            f"int8 {rows} rows (widened to bfloat16, then linear)",
            lambda xr=xr: [F.linear(xr, q.to(torch.bfloat16)) * s for q, s in bf_scales],
            n * k * count,
        )
    int8 = bf_scales = None

    for group in (32, 128):
        packs = [int4_groups(w, group) for w in weights]
        record(
            f"int4 weight-only group {group} (_weight_int4pack_mm_for_cpu, bfloat16 x)",
            lambda g=group, p=packs: [
                torch._weight_int4pack_mm_for_cpu(xb, w, g, sz) for w, sz, _ in p
            ],
            n * k * count // 2,
            packs[0][2],
        )
        packs = None
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
