"""Which kernel multiplies a streaming step's few rows by each matrix, measured here.

A streaming step reads every weight once, so its time is the bytes read over the rate the
kernel reads them at, and that rate depends on the CPU far more than the bytes do: on one
CPU bfloat16 `torch.mv` reads fastest, on another `F.linear`. So nothing is assumed: for each
dtype, matrix shape and row count a model uses (the LM's one-row steps, Mimi's two-row
frames), every candidate is timed once per machine on random matrices of that shape
(together larger than the last-level cache, as a step's are), checked against a float64
product, and the fastest correct one is kept. The figures are cached in the
user's cache folder under the CPU's model and flags, the torch version, the thread count and
the candidates (with the C kernels' source), so later loads only read them. `--dtype auto`
picks the dtype whose best kernels give the shortest step from the same figures.

A text decoder's matrices are nn.Linear layers until `prepare_decoder` replaces them by the
forms of kernels.py, its int8 step matrices by the panels where these measured fastest.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.models import kernels, native, panels
from engine.models.machine_cache import cache_folder, cpu_description

Product = Callable[[torch.Tensor], torch.Tensor]  # x [..., in] → x · Wᵀ [..., out]
Shape = tuple[int, int]  # (out, in)

# The kernel each weight form uses where nothing was measured (small matrices, a GPU).
DEFAULTS = {"float32": "linear", "bfloat16": "mv", "int8": "int8pack", "int4": "int4"}
_CANDIDATES = {
    "float32": ("linear", "mv", "matmul", "panels"),
    "bfloat16": ("linear", "mv", "matmul", "panels"),
    # fbgemm's int8 x int8 kernel (kernels.PackedInt8Linear) read the 1B's larger matrices up
    # to 38 % faster on one CPU, but its packed copies took peak RSS from 1.21x to 1.26-1.31x
    # the weights (over the 1.2x bound); the panels (panels.py) replace the codes.
    "int8": ("int8pack", "panels"),
}
BYTES = {"float32": 4, "bfloat16": 2, "int8": 1}  # per weight
AUTO_DTYPES = ("float32", "bfloat16", "int8")  # what `--dtype auto` chooses among
# Smaller matrices sit in cache: their kernel matters little. Matrices of this size do not
# (a translation decoder's 512 x 512 in int8: its step reads 22 MB of them).
_MEASURED_FROM_BYTES = 2**18
_MIN_TIMED_BYTES = 64 * 2**20  # timed set at least this, and twice the last-level cache
_REPEATS = 5
# A candidate is correct when its product is this close to the float64 one, relative to the
# product's norm: bfloat16 rounds outputs to 2⁻⁹; int8 kernels that overflow miss by far more.
_TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-2, "int8": 1e-2}

_chosen: dict[str, dict] = {}  # this process's choices, for `livecap bench --json`


def held(kernel: str, weight: torch.Tensor | panels.Panels) -> torch.Tensor | panels.Panels:
    """W [out, in] in the layout `kernel` reads it in: `matmul` holds Wᵀ [in, out] (a few rows
    times a contiguous [in, out] matrix reads faster than times the transposed view of
    [out, in] on some CPUs, slower on others), `panels` W as panels.Panels (int8 ones come
    quantized into them); every other kernel holds W as given."""
    if kernel == "matmul":
        return weight.T.contiguous()
    if kernel == "panels" and not isinstance(weight, panels.Panels):
        return panels.arrange(weight)
    return weight


def product(
    kernel: str, weight: torch.Tensor | panels.Panels, scales: torch.Tensor | None
) -> Product:
    """x · Wᵀ on `kernel` for float weights (as `held` lays them out), int8 codes with per-row
    `scales`, panels (panels.Panels, an int8 one's scales inside), or int4 codes with their
    scales and zeros."""
    # Float weights take activations of another dtype too (an int8 model's bfloat16
    # projections beside float32 activations): in the weight's dtype, out in the input's.
    if kernel == "linear":
        return lambda x: F.linear(x.to(weight.dtype), weight).to(x.dtype)
    if kernel == "mv":

        def one_row_mv(x: torch.Tensor) -> torch.Tensor:
            if x.numel() != x.shape[-1] or x.is_cuda:
                return F.linear(x.to(weight.dtype), weight).to(x.dtype)
            product = torch.mv(weight, x.reshape(-1).to(weight.dtype))
            return product.view(*x.shape[:-1], -1).to(x.dtype)

        return one_row_mv
    if kernel == "matmul":
        return lambda x: (x.to(weight.dtype) @ weight).to(x.dtype)
    if kernel == "int8pack":
        # bfloat16 activations: the kernel reads float32 ones several times slower
        return lambda x: kernels.int8_weight_mm(x.to(torch.bfloat16), weight, scales).to(x.dtype)
    if kernel == "panels":
        if not panels.available():
            raise RuntimeError("the panels kernel cannot be built on this machine")
        if weight.dtype == torch.bfloat16:  # as the other kernels: x rounded to bfloat16
            return lambda x: panels.mm(x.to(torch.bfloat16).to(x.dtype), weight)
        return lambda x: panels.mm(x, weight)
    if kernel == "int4":
        return lambda x: kernels.int4_mm(x, weight, scales)
    raise ValueError(f"unknown kernel {kernel!r}")


def kernel_for(form: str, shape: Shape, device: torch.device, rows: int = 1) -> str:
    """The kernel for one matrix of `shape` held as `form` (float32, bfloat16, int8) that
    multiplies `rows` rows at a time."""
    if not _candidates(form) or device.type != "cpu":
        return DEFAULTS[form]
    if shape[0] * shape[1] * BYTES[form] < _MEASURED_FROM_BYTES:
        return DEFAULTS[form]
    rates = measured_rates(form, shape, rows)
    best = max(rates, key=rates.get) if rates else DEFAULTS[form]
    _chosen[_key(form, shape, rows)] = {"kernel": best, "gb_per_s": rates}
    return best


def step_seconds(matrices: list[tuple[str, Shape]]) -> float:
    """A one-row pass over `matrices` (form, shape: each matrix once) on each one's fastest
    kernel; 0 for matrices small enough to stay in cache."""
    total = 0.0
    for form, shape in matrices:
        if shape[0] * shape[1] * BYTES[form] < _MEASURED_FROM_BYTES:
            continue  # in cache: a small share of a step whichever the form
        rates = measured_rates(form, shape)
        rate = max(rates.values()) if rates else 1.0
        total += shape[0] * shape[1] * BYTES[form] / (rate * 1e9)
    return total


def chosen() -> dict[str, dict]:
    """Every choice this process made: kernel and each candidate's GB/s, by matrix kind."""
    return dict(_chosen)


def measured_rates(form: str, shape: Shape, rows: int = 1) -> dict[str, float]:
    """GB/s of each correct candidate for `form` × `shape` times `rows` rows, from the cache
    or timed now."""
    key = _key(form, shape, rows)
    cache = _read_cache()
    if key not in cache:
        cache[key] = _time_candidates(form, shape, rows)
        _write_cache(cache)
    return {name: rate for name, rate in cache[key].items() if name in _candidates(form)}


def _candidates(form: str) -> tuple[str, ...]:
    """The kernels `form` can run on here: the panels only where their C kernel builds."""
    names = _CANDIDATES.get(form, ())
    return tuple(n for n in names if n != "panels" or panels.available())


def _key(form: str, shape: Shape, rows: int) -> str:
    return f"{form} {shape[0]}x{shape[1]}" + (f" by {rows} rows" if rows > 1 else "")


def _machine_key() -> str:
    cpu = cpu_description()
    flags = hashlib.sha256(cpu["flags"].encode()).hexdigest()[:12]
    threads = torch.get_num_threads()
    # The candidates too: `auto` compares forms by their figures, so all of them are measured
    # anew, together, when any form gains a candidate, the C kernels change or the int8
    # panels' scales cover other runs of inputs (not some now and some on a busier day).
    here = sorted((form, _candidates(form)) for form in _CANDIDATES)
    here += [native.source_digest(), panels.GROUP]
    candidates = hashlib.sha256(repr(here).encode()).hexdigest()[:8]
    return (
        f"{cpu['model']} | flags {flags} | torch {torch.__version__} | {threads} threads"
        f" | candidates {candidates}"
    )


def _cache_file() -> Path:
    return cache_folder() / "kernel_rates.json"


def _read_cache() -> dict[str, dict[str, float]]:
    try:
        entries = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    machine = entries.get(_machine_key()) if isinstance(entries, dict) else None
    return machine if isinstance(machine, dict) else {}


def _write_cache(machine: dict[str, dict[str, float]]) -> None:
    """Best effort: a read-only cache folder only means measuring again next time."""
    path = _cache_file()
    try:
        entries = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        entries = entries if isinstance(entries, dict) else {}
        entries[_machine_key()] = machine
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".tmp").write_text(json.dumps(entries, indent=1), encoding="utf-8")
        path.with_suffix(".tmp").replace(path)
    except (OSError, ValueError):
        pass


def _last_level_cache_bytes() -> int:
    try:
        size = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
    except OSError:
        return 0
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)


def _time_candidates(form: str, shape: Shape, rows: int = 1) -> dict[str, float]:
    """Time every candidate on random matrices of `shape` (round robin, so a change of load
    on a shared CPU touches all alike); the rates of those whose products are correct."""
    matrix_bytes = shape[0] * shape[1] * BYTES[form]
    timed_bytes = max(_MIN_TIMED_BYTES, 2 * _last_level_cache_bytes())
    count = max(2, -(-timed_bytes // matrix_bytes))
    dtype = torch.float32 if form == "float32" else torch.bfloat16
    x = torch.randn(rows, shape[1], generator=torch.Generator().manual_seed(count)).to(dtype)

    def stored(index: int, kernel: str) -> tuple[torch.Tensor | panels.Panels, torch.Tensor | None]:
        # The same matrices for every candidate, made one at a time: only the stored sets are
        # held, never a float32 copy of them (which took a cold first load's peak memory
        # 0.4 GB past the model's).
        matrix = torch.randn(shape, generator=torch.Generator().manual_seed(index)) * 0.02
        return _stored(form, kernel, matrix)

    runs: dict[str, list[Product]] = {}
    for name in _candidates(form):
        try:
            sets = [stored(0, name)]
            if not _correct(product(name, held(name, sets[0][0]), sets[0][1]), sets[0], x, form):
                continue
            sets += [stored(index, name) for index in range(1, count)]
            runs[name] = [product(name, held(name, weight), scales) for weight, scales in sets]
        except (RuntimeError, NotImplementedError, AttributeError):
            continue  # a kernel this build or CPU lacks
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for repeat in range(_REPEATS + 1):
            for name, products in runs.items():
                start = time.perf_counter()
                for run in products:
                    run(x)
                if repeat:  # the first pass warms up (page faults, kernel selection)
                    times[name].append(time.perf_counter() - start)
    return {name: count * matrix_bytes / statistics.median(t) / 1e9 for name, t in times.items()}


def _stored(
    form: str, kernel: str, weight: torch.Tensor
) -> tuple[torch.Tensor | panels.Panels, torch.Tensor | None]:
    """`weight` as `form` in what `kernel` takes: (weight, per-row scales or None)."""
    if form != "int8":
        return weight.to(getattr(torch, form)), None
    if kernel == "panels":
        return panels.quantize(weight), None
    codes, scales = kernels.quantize_rows(weight)
    return codes, scales.to(torch.bfloat16)


def _correct(run: Product, stored: tuple, x: torch.Tensor, form: str) -> bool:
    weight, scales = stored
    if isinstance(weight, panels.Panels):
        restored = weight.dequantized()
    elif scales is None:
        restored = weight.double()
    else:
        restored = weight.double() * scales.double()[:, None]
    exact = x.double() @ restored.T
    with torch.inference_mode():
        got = run(x).double()
    return bool((got - exact).norm() <= _TOLERANCE[form] * exact.norm())


# ---- the forms of a text decoder's matrices ----------------------------------------------


def prepare_decoder(
    decoder: nn.Module, precision: str, beams: int, whole_steps: bool = False
) -> None:
    """Put every matrix of a loaded text decoder (with an `lm_head`) in its fastest correct
    form for `precision` on a CPU, in place; on a GPU the plain layers are the fast ones.

    - int8: weight-only int8 everywhere the kernel's blocks fit (a decoder step reads weights,
      which int8 quarters): a step matrix (the output layer too) on the panels where they
      measured fastest here for one row — all of them where the panels run and the caller
      steps the whole decoder in one call (`whole_steps`, decoder_step.py) — the output layer
      otherwise on fbgemm where that is exact;
    - float32 and bfloat16: the step matrices on `RowLinear`; float32's output layer screened
      for greedy search where fbgemm is exact, and every step matrix packed for the beams."""
    if decoder.lm_head.weight.device.type != "cpu":
        return
    if precision == "int8":
        _make_int8(decoder, whole_steps and panels.available())
    rows = _replace_linears(decoder, kernels.RowLinear, lambda m: type(m) is nn.Linear)
    if precision == "float32" and kernels.fbgemm_int8():
        decoder.lm_head = kernels.ScreenedHead(decoder.lm_head)
    if precision == "float32":
        kernels.pack_for_beams(rows, beams)


def _make_int8(decoder: nn.Module, all_on_panels: bool) -> None:
    def on_panels(linear: nn.Module) -> bool:
        shape = tuple(linear.weight.shape)
        step = type(linear) is nn.Linear  # not the memory projection (many rows)
        chosen = all_on_panels or kernel_for("int8", shape, linear.weight.device) == "panels"
        return step and chosen

    if kernels.fbgemm_int8() and not on_panels(decoder.lm_head):
        decoder.lm_head = kernels.PackedInt8Linear.from_linear(decoder.lm_head)
    _replace_linears(decoder, kernels.PanelsLinear, on_panels)
    _replace_linears(decoder, kernels.Int8Linear, _int8_step_matrix)


def _int8_step_matrix(linear: nn.Linear) -> bool:
    """A step matrix (not the memory projection, which meets many rows once a sentence and
    keeps float32 weights: exact, and faster there than int8 widened) whose inputs fit the
    int8 kernel's blocks."""
    return type(linear) is nn.Linear and linear.in_features % 16 == 0


def _replace_linears(
    module: nn.Module, form: Callable[[nn.Linear], nn.Module], fits: Callable[[nn.Linear], bool]
) -> list[nn.Module]:
    """Replace every nn.Linear below `module` that `fits` by `form(linear)`; the new ones."""
    made = []
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and fits(child):
            made.append(form(child))
            setattr(module, name, made[-1])
        else:
            made += _replace_linears(child, form, fits)
    return made
