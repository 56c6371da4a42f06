"""How fast this CPU reads weights through each one-row matmul kernel PyTorch offers.

    flock /tmp/team/bench.lock .venv/bin/python tests/benchmarks/cpu_kernels.py
    flock /tmp/team/bench.lock .venv/bin/python tests/benchmarks/cpu_kernels.py --lm

`--lm` times every one-row candidate on the Kyutai 1B LM's own matrix shapes against the
CPU's raw read rate (a 1 GiB sum), interleaved so a change of load touches all alike:
float32 and bfloat16 `linear` / `mv`, int8 weight-only (`torch._weight_int8pack_mm`, per row
or per column group), fbgemm int8 x int8 with exact split activations, `torch._int_mm`,
onnxruntime's `MatMulNBits` (8 and 4 bits, float or int8 compute; its one-node model is
encoded here by hand, as the `onnx` package is not a dependency), int4 on PyTorch's CPU
kernel, and int8 with group-wise scales as two int4 planes on that kernel. (torchao's CPU
int8 and int4 weight-only paths call these same PyTorch kernels.)

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


# ---- --lm: the 1B LM's shapes ------------------------------------------------------------

LM_SHAPES = [(6144, 2048), (2048, 2048), (11264, 2048), (2048, 5632), (8001, 2048)]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: int | str | bytes) -> bytes:
    """One protobuf field: an integer (wire type 0) or bytes / a message (wire type 2)."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    value = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def matmul_nbits_model(codes, scales, n: int, k: int, bits: int, block: int, level: int):
    """An ONNX ModelProto with one com.microsoft MatMulNBits node y = x · Wᵀ (x float32 [1, k])
    for codes uint8 [n, k / block, block · bits / 8] (zero point 2^(bits-1)) and float32
    scales [n, k / block]."""

    def tensor(name, array, elem):  # TensorProto: dims, data_type, name, raw_data
        dims = b"".join(_field(1, d) for d in array.shape)
        return dims + _field(2, elem) + _field(8, name) + _field(9, array.tobytes())

    def value(name, shape):  # ValueInfoProto of a float32 tensor
        dims = b"".join(_field(1, _field(1, d)) for d in shape)
        return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, dims)))

    attributes = {"K": k, "N": n, "bits": bits, "block_size": block, "accuracy_level": level}
    node = b"".join(_field(1, name) for name in ("x", "w", "s")) + _field(2, "y")
    node += _field(4, "MatMulNBits") + _field(7, "com.microsoft")
    for name, number in attributes.items():  # AttributeProto: name, i, type INT
        node += _field(5, _field(1, name) + _field(3, number) + _field(20, 2))
    graph = _field(1, node) + _field(2, "g") + _field(5, tensor("w", codes, 2))
    graph += _field(5, tensor("s", scales.reshape(-1), 1))
    graph += _field(11, value("x", (1, k))) + _field(12, value("y", (1, n)))
    opsets = _field(8, _field(1, "") + _field(2, 17)) + _field(
        8, _field(1, "com.microsoft") + _field(2, 1)
    )
    return _field(1, 8) + opsets + _field(7, graph)


def ort_product(weight: torch.Tensor, bits: int, block: int, level: int):
    import numpy as np
    import onnxruntime as ort

    n, k = weight.shape
    half = 2 ** (bits - 1)
    groups = weight.numpy().reshape(n, k // block, block)
    scales = (np.maximum(np.abs(groups).max(-1), 1e-12) / (half - 1)).astype(np.float32)
    codes = np.clip(np.round(groups / scales[..., None]), 1 - half, half - 1).astype(np.int32)
    codes += half
    packed = codes if bits == 8 else codes[..., 0::2] | codes[..., 1::2] << 4
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = matmul_nbits_model(packed.astype(np.uint8), scales, n, k, bits, block, level)
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


def int8_as_int4_planes(weight: torch.Tensor, group: int):
    """Symmetric int8 codes c with one scale s per `group` inputs, as two int4 planes for
    PyTorch's CPU int4 kernel: c = 16·h + l, h in [-8, 7] (scale 16·s), l in [0, 15]
    (scale s, zero 8·s), both exact in bfloat16 for a bfloat16 s."""
    n, k = weight.shape
    groups = weight.reshape(n, k // group, group)
    step = (groups.abs().amax(-1) / 127).clamp(min=1e-12).bfloat16().float()
    codes = torch.round(groups / step[..., None]).clamp(-128, 127)
    high = torch.floor(codes / 16)
    low = codes - 16 * high
    pack = torch._convert_weight_to_int4pack_for_cpu
    planes = [pack((p + offset).reshape(n, k).int(), 1) for p, offset in ((high, 8), (low, 0))]
    zero = torch.zeros_like(step.T)
    metadata = [torch.stack(m, -1).bfloat16() for m in ((16 * step.T, zero), (step.T, 8 * step.T))]

    def run(x: torch.Tensor) -> torch.Tensor:
        mm = torch._weight_int4pack_mm_for_cpu
        xb = x.bfloat16()
        return sum(mm(xb, p, group, m).float() for p, m in zip(planes, metadata, strict=True))

    return run


def lm_candidates(weight: torch.Tensor) -> dict[str, tuple[float, Callable]]:
    """name → (bytes per weight, builder of x → x · Wᵀ for float32 x [1, k])."""
    from engine.models import kernels

    def int8_rows(w):
        codes, scales = kernels.quantize_rows(w)
        scales = scales.bfloat16()
        return lambda x: kernels.int8_weight_mm(x.bfloat16(), codes, scales)

    def int8_column_groups(w, group):
        parts = [
            kernels.quantize_rows(w[:, i : i + group].contiguous())
            for i in range(0, w.shape[1], group)
        ]
        parts = [(codes, scales.bfloat16()) for codes, scales in parts]

        def run(x):
            xb = x.bfloat16()
            return sum(
                kernels.int8_weight_mm(xb[:, i * group : (i + 1) * group], c, s)
                for i, (c, s) in enumerate(parts)
            )

        return run

    def fbgemm(w):
        codes, scales = kernels.quantize_rows(w)
        return kernels.PackedInt8Linear(codes, scales.bfloat16(), None)

    def int_mm(w):
        codes, scales = kernels.quantize_rows(w)
        transposed = codes.T.contiguous()

        def run(x):  # one int8 part: not exact, shown for its rate
            step = x.abs().max() / 127
            return torch._int_mm(torch.round(x / step).to(torch.int8), transposed) * (scales * step)

        return run

    def int4(w):
        packed, metadata = kernels.quantize_int4_groups(w)
        return lambda x: kernels.int4_mm(x, packed, metadata)

    candidates = {
        "float32 linear": (4, lambda w: lambda x: F.linear(x, w)),
        "float32 mv": (4, lambda w: lambda x: torch.mv(w, x[0])),
        "bfloat16 linear": (
            2,
            lambda w: (lambda wb: lambda x: F.linear(x.bfloat16(), wb))(w.bfloat16()),
        ),
        "bfloat16 mv": (
            2,
            lambda w: (lambda wb: lambda x: torch.mv(wb, x[0].bfloat16()))(w.bfloat16()),
        ),
        "int8 rows, _weight_int8pack_mm": (1, int8_rows),
        "int8 rows, _weight_int8pack_mm per 1024 columns": (
            1,
            lambda w: int8_column_groups(w, 1024),
        ),
        "int8 rows, torch._int_mm (1-part activations)": (1, int_mm),
        "int4 group 32, _weight_int4pack_mm_for_cpu": (0.5, int4),
        "int8 group 128 as two int4 planes": (1, lambda w: int8_as_int4_planes(w, 128)),
    }
    if kernels.fbgemm_int8():
        candidates["int8 rows, fbgemm x split activations"] = (1, fbgemm)
    for bits, block, level in ((8, 128, 0), (8, 128, 4), (8, 32, 4), (4, 32, 4), (4, 128, 4)):
        name = f"ort MatMulNBits {bits}-bit block {block} accuracy {level}"
        candidates[name] = (bits / 8, lambda w, b=(bits, block, level): ort_product(w, *b))
    return candidates


def raw_read_rate() -> float:
    """GB/s of a 1 GiB float32 sum: about what this CPU's cores can read from memory."""
    values = torch.ones(2**28)
    return values.numel() * 4 / median_seconds(values.sum, 5) / 1e9


def lm_shapes(repeats: int = 5, timed_bytes: int = 128 * 2**20) -> None:
    results = {
        "threads": torch.get_num_threads(),
        "raw_read_gb_per_s": raw_read_rate(),
        "shapes": {},
    }
    print("raw read GB/s", round(results["raw_read_gb_per_s"], 1), flush=True)
    for n, k in LM_SHAPES:
        count = max(2, -(-timed_bytes // (n * k)))  # as many int8 bytes as timed_bytes
        generator = torch.Generator().manual_seed(0)
        weights = [torch.randn(n, k, generator=generator) * 0.02 for _ in range(count)]
        x = torch.randn(1, k, generator=generator)
        exact = (x.double() @ weights[0].double().T).view(-1)
        runs, sizes, cosines = {}, {}, {}
        for name, (size, build) in lm_candidates(weights[0]).items():
            try:
                runs[name] = [build(w) for w in weights]
                with torch.inference_mode():
                    got = runs[name][0](x).double().view(-1)
            except (RuntimeError, NotImplementedError, ImportError) as exc:
                print(f"{n}x{k} {name}: unavailable ({str(exc)[:80]})", flush=True)
                runs.pop(name, None)
                continue
            sizes[name] = size
            cosines[name] = float(F.cosine_similarity(got, exact, dim=0))
        times = {name: [] for name in runs}
        with torch.inference_mode():
            for repeat in range(repeats + 1):
                for name, products in runs.items():
                    start = time.perf_counter()
                    for run in products:
                        run(x)
                    if repeat:
                        times[name].append(time.perf_counter() - start)
        shape = results["shapes"][f"{n}x{k}"] = {}
        for name, spent in times.items():
            seconds = statistics.median(spent)
            shape[name] = {
                "gb_per_s": round(count * n * k * sizes[name] / seconds / 1e9, 2),
                "ms_per_matrix": round(1000 * seconds / count, 3),
                "output_cosine": round(cosines[name], 6),
            }
            print(f"{n}x{k} {name}", json.dumps(shape[name]), flush=True)
        runs = weights = None
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    if "--lm" in sys.argv[1:]:
        lm_shapes()
    else:
        main()
