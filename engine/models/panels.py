"""Weights in panels of 8 outputs, times a few rows at the speed of reading them, on x86 CPUs
with AVX2: float32, bfloat16, or int8 codes with a scale per output and run of inputs.

A streaming step multiplies one row (or a batch's few) by every weight once, so its time is
the bytes over the rate its kernel reads them at. PyTorch's kernels read well below memory
speed on some CPUs for so few rows (int8 codes widened through bfloat16, bfloat16 where it is
emulated, float32 at two rows); `panels.c` widens each weight once (float to float32, int8
codes to int16 against 16-bit activation codes) and multiplies it by every row at hand (see
there), built on the machine (native.py). Float panels convolve too (`windows`): Mimi's
convolutions read their windows where they lie in the input. Where it cannot be
built, `available()` is False and callers keep PyTorch's kernels; kernel_choice.py times them
all where the panels exist.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from engine.models import native

PANEL = 8  # outputs per panel: one AVX2 register of float32 sums
# Inputs per scale. Row scales are set by a row's largest weight; one per 32 inputs follows
# the weights closer (int8's relative error on the 1B's matrices: 0.0083 with one per row,
# 0.0065 per 128 inputs, 0.0054 per 32) for a bfloat16 scale per 32 codes: what keeps the
# 1B int8 step's final hidden state within the 0.999 cosine of float32's (see the README).
GROUP = 32
KINDS = {torch.int8: 0, torch.bfloat16: 1, torch.float32: 2}  # panels.c's enum


def available() -> bool:
    """Whether the kernel runs here (see native.py)."""
    return native.library() is not None


@dataclass(frozen=True)
class Panels:
    """A matrix [out, in] in the kernel's layout, each panel's 8 outputs side by side (outputs
    past `out`: zero): float32 or bfloat16 weights [⌈out / 8⌉, in, 8], or int8 codes
    [⌈out / 8⌉, ⌈in / 2⌉, 16] whose inputs go in pairs (the 8 outputs' codes for inputs 2q
    and 2q + 1 interleaved, as the integer multiply takes them; a missing last input zero)
    with bfloat16 scales [⌈out / 8⌉, ⌈in / GROUP⌉, 8] (symmetric: each output's run of GROUP
    inputs has its largest |w| at ±127, the codes chosen for the scale as rounded to bfloat16;
    no calibration)."""

    values: torch.Tensor
    scales: torch.Tensor | None
    out: int
    width: int  # inputs

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Rows `index` [n] of a float32 or bfloat16 matrix: [n, in]."""
        return self.values[index // PANEL, :, index % PANEL]

    def dequantized(self) -> torch.Tensor:
        """The float64 matrix [out, in] the panels stand for."""
        if self.scales is None:
            width = self.width
            return self.values.transpose(1, 2).reshape(-1, width)[: self.out].double()
        count, pairs = self.values.shape[:2]
        codes = self.values.view(count, pairs, PANEL, 2).permute(0, 2, 1, 3)
        codes = codes.reshape(count * PANEL, 2 * pairs)[: self.out, : self.width].double()
        scales = self.scales.transpose(1, 2).reshape(-1, self.scales.shape[1])[: self.out]
        return codes * scales.double().repeat_interleave(GROUP, dim=1)[:, : self.width]


def arrange(weight: torch.Tensor) -> Panels:
    """A float32 or bfloat16 `weight` [out, in] as Panels, in its own dtype."""
    out, width = weight.shape
    padded = torch.zeros(_padded(out), width, dtype=weight.dtype)
    padded[:out] = weight
    return Panels(_panels(padded), None, out, width)


def quantize(weight: torch.Tensor) -> Panels:
    """`weight` [out, in] as int8 Panels. Row blocks starting at multiples of 8 give the
    panels of the whole matrix at the same place (`quantize_into`)."""
    out, width = weight.shape
    padded, groups = _padded(out), -(-width // GROUP)
    runs = torch.zeros(padded, groups * GROUP)
    runs[:out, :width] = weight.float()
    runs = runs.view(padded, groups, GROUP)
    scales = (runs.abs().amax(dim=-1).clamp(min=1e-12) / 127.0).bfloat16()  # [padded, groups]
    codes = torch.round(runs / scales[..., None].float()).clamp(-127, 127).to(torch.int8)
    scales[out:] = 0
    pairs = -(-width // 2)
    codes = codes.view(padded, -1)[:, : 2 * pairs]  # GROUP is even: the padding input is zero
    paired = codes.reshape(-1, PANEL, pairs, 2).transpose(1, 2).reshape(-1, pairs, 2 * PANEL)
    return Panels(paired.contiguous(), _panels(scales), out, width)


def empty_int8(out: int, width: int) -> Panels:
    """int8 Panels for a matrix [out, in] whose rows `quantize_into` will fill."""
    panels, groups = _padded(out) // PANEL, -(-width // GROUP)
    codes = torch.empty(panels, -(-width // 2), 2 * PANEL, dtype=torch.int8)
    return Panels(codes, torch.empty(panels, groups, PANEL, dtype=torch.bfloat16), out, width)


def quantize_into(target: Panels, row: int, block: torch.Tensor) -> None:
    """Rows `row` onwards of int8 `target` from the float rows `block` (`row` a multiple of
    8; a block that ends short of one only as the matrix's last)."""
    if row % PANEL:
        raise ValueError(f"panels start at multiples of {PANEL} rows, not at row {row}")
    part, first = quantize(block), row // PANEL
    target.values[first : first + len(part.values)] = part.values
    target.scales[first : first + len(part.scales)] = part.scales


def mm(x: torch.Tensor, weight: Panels) -> torch.Tensor:
    """x [..., in] · Wᵀ [..., out]; float32 sums, the result in x's dtype."""
    width = weight.width
    flat = x.reshape(-1, width).to(torch.float32).contiguous()
    y = torch.empty(flat.shape[0], weight.out, dtype=torch.float32)
    if flat.shape[0]:
        scales = weight.scales.data_ptr() if weight.scales is not None else None
        native.library().panels_mm(
            flat.data_ptr(), weight.values.data_ptr(), scales, y.data_ptr(),
            flat.shape[0], weight.out, width, GROUP, KINDS[weight.dtype],
        )  # fmt: skip
    return y.to(x.dtype).view(*x.shape[:-1], weight.out)


def windows(
    x: torch.Tensor, weight: Panels, bias: torch.Tensor | None, stride: int
) -> torch.Tensor:
    """A convolution over channels-last x [streams, span, channels] float32 (each stream led by
    what precedes it): [streams, windows, out], each window of weight.width / channels samples,
    one every `stride`, times float32 `weight`, plus bias. The windows are read in place."""
    streams, span, channels = x.shape
    kernel = weight.width // channels
    count = (span - kernel) // stride + 1
    x = x.contiguous()
    y = torch.empty(streams, count, weight.out, dtype=torch.float32)
    if y.numel():
        bias = bias.to(torch.float32).contiguous() if bias is not None else None
        native.library().panels_windows(
            x.data_ptr(), weight.values.data_ptr(), bias.data_ptr() if bias is not None else None,
            y.data_ptr(), streams, span, channels, stride, count, weight.out, weight.width,
        )  # fmt: skip
    return y


class Codebooks:
    """float32 codebooks [size, dim] for a residual vector quantization in one call
    (`nearest`): each as panels, as int8 panels that screen its entries (panels.c), and its
    entries' |e|², |e − ê|, |ê| and |e| (ê: what the int8 panels stand for)."""

    def __init__(self, entries: list[torch.Tensor]) -> None:
        self.size, self.dim = entries[0].shape
        self.books = [arrange(book.float()) for book in entries]
        self.screens = [quantize(book) for book in entries]
        pairs = zip(entries, self.screens, strict=True)
        self.entries = [_entry_norms(book, screen) for book, screen in pairs]
        self._pointers = [
            (ctypes.c_void_p * len(entries))(*(t.data_ptr() for t in tensors))
            for tensors in (
                [book.values for book in self.books],
                [screen.values for screen in self.screens],
                [screen.scales for screen in self.screens],
                self.entries,
            )
        ]

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """Codes [rows, codebooks] of x [rows, dim]: each codebook's entry nearest to what the
        codebooks before it left (least |e|² − 2 r·e in float32, the first on ties)."""
        left = x.to(torch.float32, copy=True).contiguous()
        codes = torch.empty(len(left), len(self.books), dtype=torch.long)
        if len(left):
            native.library().panels_nearest(
                left.data_ptr(), *self._pointers, len(self.books),
                len(left), self.size, self.dim, GROUP, codes.data_ptr(),
            )  # fmt: skip
        return codes


def _entry_norms(book: torch.Tensor, screen: Panels) -> torch.Tensor:
    """[4, size] float32: each entry's |e|² (as the float32 search subtracts it), |e − ê|,
    |ê| and |e|."""
    book = book.float()
    coded = screen.dequantized()
    exact = book.double()
    norms = ((exact - coded).norm(dim=1), coded.norm(dim=1), exact.norm(dim=1))
    return torch.stack(((book * book).sum(dim=1), *(n.float() for n in norms))).contiguous()


def _padded(out: int) -> int:
    return -(-out // PANEL) * PANEL


def _panels(rows: torch.Tensor) -> torch.Tensor:
    """[8n, m] → [n, m, 8]."""
    return rows.reshape(-1, PANEL, rows.shape[1]).transpose(1, 2).contiguous()
