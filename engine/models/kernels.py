"""The CPU forms a weight matrix can take on PyTorch's kernels (and the panels'), each an
nn.Module where a text decoder holds it; kernel_choice.py chooses among them.

Model files describe networks with plain nn.Linear layers; a family's loader has
kernel_choice.prepare_decoder replace them, after the weights are in, by the fastest correct
form (a decoder's `MemoryLinear`, which meets many rows, keeps the general kernel in float),
and Kyutai's layers use the one-row and int8 products. The fixed rules here were measured by
tests/benchmarks/cpu_kernels.py (2 cores, decoder-sized matrices too many for any cache, so a
step's time is the bytes it reads over the rate the kernel reads them at). Kernels whose
correctness depends on the CPU are probed on it once per process rather than assumed
(`fbgemm_levels`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from engine.models import panels
from engine.models.generation import Screened

# ---- float: few rows ----------------------------------------------------------------------


def one_row(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """x · weightᵀ through matrix-vector when x is one bfloat16 row on a CPU (it reads the
    weights faster than linear's matrix path: "bfloat16 mv" against "bfloat16 linear" in
    cpu_kernels.py); None for any other x."""
    if x.dtype != torch.bfloat16 or x.numel() != x.shape[-1] or x.is_cuda:
        return None
    return torch.mv(weight, x.reshape(-1)).view(*x.shape[:-1], -1)


_FEW_ROWS = (4, 48)  # below 4 rows x · weightᵀ is as fast; from ~64 the GEMM kernel wins
_SLICE = 1024  # weight rows per slice: larger matrices gain ~15% (smaller slices lose)


def rows_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weightᵀ + bias for decoder steps, where a few rows meet a whole matrix: one bfloat16
    row through `one_row`; 4 to 48 float32 rows (beams, drafts, a forced prefix) as
    weight · xᵀ in slices of weight rows, whose cost stays nearly flat as rows are added where
    x · weightᵀ grows with them ("weight · xT in slices" in cpu_kernels.py)."""
    if x.is_cuda:
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1])
    y = one_row(flat, weight)
    if y is None and x.dtype == torch.float32 and _FEW_ROWS[0] <= len(flat) <= _FEW_ROWS[1]:
        y = flat.new_empty(len(weight), len(flat))  # [out, rows]: each slice written in place
        for start in range(0, len(weight), _SLICE):
            torch.mm(weight[start : start + _SLICE], flat.T, out=y[start : start + _SLICE])
        y = y.T.contiguous()
    if y is None:
        return F.linear(x, weight, bias)
    y = y + bias if bias is not None else y
    return y.view(*x.shape[:-1], -1)


class RowLinear(nn.Module):
    """A decoder step's nn.Linear (its parameters shared, ties kept) on `rows_linear`; beam
    steps use the weights packed for their number of rows where `pack_for_beams` did."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.in_features = linear.in_features
        self.beam_rows: BeamRowsWeight | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.beam_rows is not None and self.beam_rows.fits(x):
            return self.beam_rows.linear(x, self.bias)
        return rows_linear(x, self.weight, self.bias)


class BeamRowsWeight:
    """A float32 matrix in MKL's packed layout for products with exactly `rows` rows (x ·
    weightᵀ), as beam search multiplies its beams by every decoder matrix at each step.

    Packing once spares the GEMM kernel re-laying out the weights at every call, which is most
    of its cost when a few rows meet many weights ("MKL-packed weights" in cpu_kernels.py).
    The packed copy is as large as the matrix again."""

    def __init__(self, weight: torch.Tensor, rows: int) -> None:
        self.weight, self.rows = weight, rows
        self.packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, rows)

    @staticmethod
    def available(weight: torch.Tensor) -> bool:
        """MKL builds on a CPU, float32 weights."""
        supported = torch._C.has_mkl and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight")
        return supported and weight.device.type == "cpu" and weight.dtype == torch.float32

    def fits(self, x: torch.Tensor) -> bool:
        return x.numel() == self.rows * x.shape[-1]

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return torch.ops.mkl._mkl_linear(x, self.packed, self.weight, bias, self.rows)


def pack_for_beams(linears: list[RowLinear], beams: int) -> None:
    """Give `linears` their weights packed for `beams` rows, if they are float32 on an MKL
    build and the copy leaves at least 2 GB of memory free."""
    if beams < 2 or not all(BeamRowsWeight.available(m.weight) for m in linears):
        return
    needed = sum(m.weight.nbytes for m in linears)
    spare = available_memory()
    if spare is not None and spare < needed + 2**31:
        return
    for linear in linears:
        linear.beam_rows = BeamRowsWeight(linear.weight, beams)


def available_memory() -> int | None:
    """Bytes of memory the system can still give (Linux's MemAvailable); None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


# ---- int8 weights -------------------------------------------------------------------------


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row: w ≈ codes * scale, codes in [-127, 127], float32
    scales [rows]. The scales are rounded to bfloat16 before the codes are chosen: the int8
    kernels take bfloat16 scales, and codes chosen for the unrounded scale would be off by
    its rounding (up to 2⁻⁹ of the row) once it is converted."""
    weight = weight.float()
    scales = (weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0).bfloat16().float()
    codes = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return codes, scales


def int8_weight_mm(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [..., D] · (codes · scales)ᵀ on PyTorch's int8-weight kernel (the codes are widened
    inside it, never materialised)."""
    out = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), codes, scales)
    return out.view(*x.shape[:-1], codes.shape[0])


class Int8Linear(nn.Module):
    """Weight-only int8 Linear: one scale per output row, bfloat16 activations.

    The int8-weight kernel reads the weights once per 4 input rows, so a pass over many rows
    (the forced prefix of a live decode, the alignment pass over a whole hypothesis) widens
    the weights once instead ("int8 N rows" in cpu_kernels.py): to bfloat16 from 12 rows
    where the CPU multiplies it natively; where bfloat16 is emulated that product was 3-4x
    slower than the int8 kernel at 12 to 200 rows (AVX2 EPYC), so the kernel keeps up to 64
    rows and the weights are widened to float32 beyond."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        codes, scales = quantize_rows(linear.weight.detach())
        self.register_buffer("weight", codes)
        self.register_buffer("scale", scales.to(torch.bfloat16))  # as the kernel takes them
        self.bias = linear.bias
        native = native_bfloat16()
        self._widen_from_rows = 12 if native else 64
        self._wide = torch.bfloat16 if native else torch.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] >= self._widen_from_rows:
            wide = self._wide
            y = F.linear(flat.to(wide), self.weight.to(wide)) * self.scale.to(wide)
        else:
            y = int8_weight_mm(flat.to(torch.bfloat16).contiguous(), self.weight, self.scale)
        if self.bias is not None:
            y = y + self.bias  # in float32 (the bias's), one op: a decoder step has dozens
        return y.to(x.dtype).view(*x.shape[:-1], -1)


class PanelsLinear(nn.Module):
    """Weight-only int8 Linear on the panels kernel (panels.py: a scale per output and run of
    inputs), for a decoder step's few rows where kernel_choice.py measured it reading faster
    than `Int8Linear`'s kernel."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.held = panels.quantize(linear.weight.detach())
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = panels.mm(x, self.held)
        return y + self.bias if self.bias is not None else y


def int8_blocks(
    weight: torch.Tensor, rows: int = 16384
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`quantize_rows` over runs of `rows` rows, as (float32 block, codes, bfloat16 scales):
    no full-size float32 temporary for a 250k-row output layer."""
    for start in range(0, len(weight), rows):
        block = weight.detach()[start : start + rows].float()
        codes, scales = quantize_rows(block)
        yield block, codes, scales.to(torch.bfloat16)


# ---- int4 weights --------------------------------------------------------------------------

INT4_GROUP = 32  # inputs per scale and zero: 1 byte of metadata per 8 of codes


def quantize_int4_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit codes per run of INT4_GROUP inputs of each row (its min to its max in
    15 steps: no calibration data), in the layout of PyTorch's CPU int4 kernel: packed codes
    uint8 [rows, in / 2] and bfloat16 scales and zeros [in / group, rows, 2]. Runs of rows
    converted apart give, concatenated, what the whole matrix would."""
    groups = weight.float().reshape(weight.shape[0], -1, INT4_GROUP)
    low, high = groups.amin(-1), groups.amax(-1)
    scale = ((high - low) / 15).clamp(min=1e-12)
    codes = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15)
    packed = torch._convert_weight_to_int4pack_for_cpu(codes.reshape(weight.shape).int(), 1)
    zeros = low + 8 * scale  # the kernel computes (code - 8) * scale + zero
    return packed, torch.stack((scale.T, zeros.T), dim=-1).to(torch.bfloat16)


def int4_mm(x: torch.Tensor, packed: torch.Tensor, scales_and_zeros: torch.Tensor) -> torch.Tensor:
    """x [..., D] · Wᵀ for W in `quantize_int4_groups`' form (bfloat16 activations)."""
    flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
    out = torch._weight_int4pack_mm_for_cpu(flat, packed, INT4_GROUP, scales_and_zeros)
    return out.to(x.dtype).view(*x.shape[:-1], packed.shape[0])


# ---- int8 × int8 on fbgemm ----------------------------------------------------------------


class PackedInt8Linear(nn.Module):
    """Int8 codes on fbgemm's int8 × int8 kernel, for a large output layer: for one row or a
    few beams it reads the weights faster than the int8-weight kernel ("fbgemm, split
    activations" in cpu_kernels.py). Use only where `fbgemm_int8()`.

    The kernel takes activations as integers too, and sums them exactly for codes up to
    L = `fbgemm_levels()`, so each row goes in as parts: x = s·(h + l/2L + ...) + e with
    h = round(x/s), s = max|x|/L, each next part the rounded remainder scaled by 2L. Two
    parts at L = 127 hold about 16 bits per value (|e| ≤ s/508); at L = 63 three parts hold
    more. Every part is sent as integers times s, which the kernel's own rounding returns
    unchanged. The result is many times closer to x · (codes · scale)ᵀ than bfloat16
    activations give."""

    def __init__(
        self,
        codes: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor | None,
        levels: int | None = None,
    ) -> None:
        super().__init__()
        self.packed = _fbgemm_pack(codes, scale)
        self.bias = bias
        self.levels = levels or fbgemm_levels() or 127  # every part's codes within ±levels
        self.parts = 2 if self.levels == 127 else 3

    @classmethod
    def from_linear(cls, linear: nn.Module) -> PackedInt8Linear:
        blocks = list(int8_blocks(linear.weight))
        codes, scale = torch.cat([b[1] for b in blocks]), torch.cat([b[2] for b in blocks])
        return cls(codes, scale, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _, _ = self.product(x.reshape(-1, x.shape[-1]).float())
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).view(*x.shape[:-1], -1)

    def product(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """flat [T, D] → x̂ · (codes · scale)ᵀ [T, V] without bias, the activations x̂ [T, D]
        the kernel multiplied, and Σ |part i| / (2L)^i [T, V], the size of the float results
        its rounding is relative to."""
        levels = self.levels
        split = 2.0 * levels  # each remainder is at most half a unit: its codes within ±L
        step = float(flat.abs().max()) / levels or 1.0
        codes = [torch.round(flat / step)]
        restored = codes[0]  # x̂ / step so far
        for part in range(1, self.parts):
            codes.append(torch.round((flat - restored * step) * (split**part / step)))
            restored = restored + codes[-1] / split**part
        products = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            torch.cat(codes) * step,
            step,
            levels + 1,  # zero point: the codes as unsigned integers 1 .. 2L + 1
            self.packed,
        ).split(len(flat))
        scaled = [products[0]] + [p / split**i for i, p in enumerate(products[1:], start=1)]
        return sum(scaled), restored * step, sum(p.abs() for p in scaled)


def _fbgemm_pack(codes: torch.Tensor, scale: torch.Tensor) -> object:
    """fbgemm's packed form of int8 codes with one scale per row (no extra copy is kept)."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"  # "x86" may choose oneDNN, which lacks the op
    try:
        with warnings.catch_warnings():
            # quantized tensors are deprecated but still carry fbgemm's weights in the torch
            # this project pins; fbgemm_levels() checks for them before a model is loaded
            warnings.simplefilter("ignore", UserWarning)
            zero = torch.zeros(len(codes), dtype=torch.long)
            weight = torch._make_per_channel_quantized_tensor(codes, scale.double(), zero, 0)
            return torch.ops.quantized.linear_prepack(weight, None)
    finally:
        torch.backends.quantized.engine = previous


@functools.cache
def fbgemm_levels() -> int | None:
    """The largest activation code L for which fbgemm's int8 × int8 kernel sums exactly here,
    measured once per process on the extreme codes instead of assumed: 127 where the CPU adds
    u8 × s8 products in int32 (AVX512-VNNI, AMX); 63 where it adds pairs of them in saturating
    int16 (AVX2's vpmaddubsw), which full-range activations overflow and 7-bit ones cannot
    (2 · 127 · 127 < 2¹⁵); None without fbgemm. PackedInt8Linear's split activations and
    ScreenedHead's bound need exact sums."""
    for levels in (127, 63):
        try:
            product = functools.partial(_fbgemm_integer_product, zero_point=levels + 1)
            if int8_products_exact(product, levels):
                return levels
        except (RuntimeError, AttributeError, NotImplementedError):
            return None
    return None


def fbgemm_int8() -> bool:
    """Whether PackedInt8Linear (and so ScreenedHead) can run exactly on this machine."""
    return fbgemm_levels() is not None


def int8_products_exact(
    product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], levels: int = 127
) -> bool:
    """Whether `product(activations, codes)` (integer-valued float32 [T, D] within ±`levels`,
    int8 [V, D]) gives the exact integer products, codes and activations at the ends of their
    ranges included."""
    width, generator = 64, torch.Generator().manual_seed(0)  # the caller's RNG is untouched
    signs = torch.tensor([1.0, -1.0]).repeat(width // 2)
    edges = torch.stack([torch.ones(width), -torch.ones(width), signs, -signs])
    activations = torch.randint(-levels, levels + 1, (4, width), generator=generator).float()
    codes = torch.randint(-127, 128, (4, width), generator=generator).float()
    activations, codes = torch.cat([edges * levels, activations]), torch.cat([edges * 127, codes])
    exact = activations.double() @ codes.double().T
    return torch.equal(product(activations, codes.to(torch.int8)).double(), exact)


def _fbgemm_integer_product(
    activations: torch.Tensor, codes: torch.Tensor, zero_point: int
) -> torch.Tensor:
    packed = _fbgemm_pack(codes, torch.ones(len(codes), dtype=torch.bfloat16))
    quantized = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
    return quantized(activations, 1.0, zero_point, packed)  # step 1: the codes as given


class ScreenedHead(nn.Module):
    """The output layer of a float32 decoder on a CPU, read at a sixth of the cost for greedy
    search, with the exact float32 argmax. Use only where `fbgemm_int8()`.

    A greedy step multiplies one row by the whole output layer (mBART-50's is most of the bytes
    a step reads) only to pick its best token. Here an int8 copy on
    PackedInt8Linear's kernel gives every logit approximately, with a bound on its error:
    |w·x - ŵ·x̂| ≤ ‖x‖‖w - ŵ‖ (the codes) + ‖x - x̂‖‖ŵ‖ (the activations' integer parts) +
    float32 rounding, of the kernel's results and of the exact logits themselves (≤ 2⁻¹²‖x‖‖w‖
    for widths up to 4096). Only tokens whose interval reaches the best lower bound can win
    (a handful); their logits are then computed from the float32 rows. Beam search, which
    needs every log-probability, gets the plain float32 layer's logits."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.linear = linear  # float32, its weight shared with the embeddings when tied
        codes, scales, error, norm = [], [], [], []
        for block, block_codes, block_scales in int8_blocks(self.weight):
            restored = block_codes.float() * block_scales.float()[:, None]
            codes.append(block_codes)
            scales.append(block_scales)
            error.append((block - restored).norm(dim=1))
            norm.append(restored.norm(dim=1))
        self.screen = PackedInt8Linear(torch.cat(codes), torch.cat(scales), self.bias)
        self.register_buffer("code_error", torch.cat(error))  # [V] ‖w - ŵ‖
        self.register_buffer("code_norm", torch.cat(norm))  # [V] ‖ŵ‖

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor | Screened:
        if x.shape[0] != 1:  # several beams
            return self.linear(x)
        rows = x[0]  # [T, D]
        kernel, restored, magnitude = self.screen.product(rows)  # [T, V], [T, D], [T, V]
        approx = kernel if self.bias is None else kernel + self.bias
        size = rows.norm(dim=1, keepdim=True)
        activations = (rows - restored).norm(dim=1, keepdim=True) + size * 2**-12
        rounding = (magnitude + approx.abs()) * 2**-20
        bound = size * self.code_error + activations * self.code_norm + rounding

        def exact(row: int, ids: torch.Tensor) -> torch.Tensor:
            bias = None if self.bias is None else self.bias[ids]
            return F.linear(rows[row], self.weight[ids], bias)

        return Screened(approx, bound, exact)
