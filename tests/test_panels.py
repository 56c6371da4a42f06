"""The int8 panels kernel (engine/models/panels.py): the exact product of its codes for
any rows, shapes and thread count, each row's sums independent of the rows beside it, the
screened codebook search's float32 nearest entries, and PyTorch's kernels kept where it cannot
be built."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.models import kernel_choice, machine_cache, native, panels

needs_kernel = pytest.mark.skipif(
    not panels.available(),
    reason="the panels kernel needs Linux on x86 with AVX2 and FMA, and a C compiler",
)


def matrix(out: int, width: int) -> torch.Tensor:
    return torch.randn(out, width, generator=torch.Generator().manual_seed(out + width)) * 0.02


def as_sixteen_bits(x: torch.Tensor) -> torch.Tensor:
    """The activations int8 panels multiply: each row's run of GROUP inputs rounded (half to
    even, in float32 as the kernel rounds) to 16-bit codes of its largest |x| / 32767."""
    runs = x.float().split(panels.GROUP, dim=-1)
    restored = []
    for run in runs:
        largest = run.abs().amax(dim=-1, keepdim=True)
        inverse = torch.where(largest > 0, torch.tensor(32767.0) / largest, 0.0)
        step = largest / torch.tensor(32767.0)
        restored.append(torch.round(run * inverse).double() * step.double())
    return torch.cat(restored, dim=-1)


def test_quantized_panels_stand_for_the_weights_within_half_a_step() -> None:
    """One bfloat16 scale per output and run of GROUP inputs (the last run shorter), each
    run's largest weight ±127 codes; dequantized, every weight within half its run's step."""
    out, width = 20, panels.GROUP * 2 + 40
    weight = matrix(out, width)
    weight[3, 5] = 1.0  # one large weight coarsens its own run only
    held = panels.quantize(weight)
    restored = held.dequantized()
    steps = (
        torch.stack(
            [run.abs().amax(dim=1) / 127 for run in weight.split(panels.GROUP, dim=1)], dim=1
        )
        .bfloat16()
        .repeat_interleave(panels.GROUP, dim=1)[:, :width]
    )
    assert restored.shape == (out, width)
    assert ((restored - weight.double()).abs() <= steps.double() / 2 + 1e-9).all()
    assert steps[3, 5] > 10 * steps[3, -1] and steps[3, 5] > 10 * steps[4, 5]


def test_row_blocks_fill_the_panels_of_the_whole_matrix() -> None:
    weight = matrix(44, 24)
    whole, filled = panels.quantize(weight), panels.empty_int8(44, 24)
    for row in range(0, 44, 16):
        panels.quantize_into(filled, row, weight[row : row + 16])
    assert torch.equal(filled.values, whole.values) and torch.equal(filled.scales, whole.scales)
    with pytest.raises(ValueError, match="multiples of 8"):
        panels.quantize_into(filled, 4, weight[4:12])


@needs_kernel
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 9, 13])
@pytest.mark.parametrize(("out", "width"), [(8, 16), (52, 41), (100, 300), (392, 24)])
@pytest.mark.parametrize("dtype", [torch.int8, torch.bfloat16, torch.float32])
def test_panels_give_the_product_of_their_weights(rows, out, width, dtype) -> None:
    """Every kind of weight and tile shape (rows in pairs, fours and singles; panels in groups
    and one by one; outputs not a multiple of 8; int8's runs of inputs whole and short, an odd
    number of them) sums in float32 to the float64 product of the weights the panels stand
    for, and int8 of the 16-bit activations it multiplies them by (its integer sums exact)."""
    weight = matrix(out, width)
    held = panels.quantize(weight) if dtype == torch.int8 else panels.arrange(weight.to(dtype))
    assert held.dtype == dtype
    x = torch.randn(2, rows, width, generator=torch.Generator().manual_seed(rows))
    got = panels.mm(x, held)
    multiplied = as_sixteen_bits(x) if dtype == torch.int8 else x.double()
    exact = multiplied @ held.dequantized().T
    assert got.shape == (2, rows, out) and got.dtype == torch.float32
    assert (got.double() - exact).norm() <= 1e-6 * exact.norm()
    unrounded = x.double() @ held.dequantized().T  # 16 bits move a product by ~2⁻¹⁵ of it
    assert (got.double() - unrounded).norm() <= 1e-4 * unrounded.norm()


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.int8, torch.bfloat16, torch.float32])
def test_a_rows_sums_do_not_depend_on_the_rows_beside_it_or_the_threads(dtype) -> None:
    """Each output is summed in input order whatever tile its row falls in (rows by eights,
    fours and singles) and however the panels are split between threads, so a stream's step
    in a batch is bit for bit its step alone (the server's batched-equals-single parity rests
    on it)."""
    weight = matrix(392, 200)
    held = panels.quantize(weight) if dtype == torch.int8 else panels.arrange(weight.to(dtype))
    x = torch.randn(140, 200, generator=torch.Generator().manual_seed(0))  # blocks of rows
    together = panels.mm(x, held)
    alone = torch.cat([panels.mm(row[None], held) for row in x])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = panels.mm(x, held)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(together, alone) and torch.equal(together, one_thread)


@needs_kernel
@pytest.mark.parametrize(
    ("kernel", "stride", "channels", "out"), [(3, 1, 5, 20), (8, 4, 16, 32), (4, 2, 3, 52)]
)
@pytest.mark.parametrize("bias", [True, False])
def test_windows_convolve_each_stream_where_its_input_lies(kernel, stride, channels, out, bias):
    """panels.windows over channels-last streams is each one's conv1d (a float64 reference):
    tiles of rows that straddle two streams, outputs not a multiple of 8 or 16, more rows than
    a thread takes at once; and a stream's outputs are bit for bit those it gets alone."""
    generator = torch.Generator().manual_seed(kernel * 100 + out)
    streams, span = 3, 41 * stride + kernel  # 42 windows a stream, 126 rows
    x = torch.randn(streams, span, channels, generator=generator)
    weight = torch.randn(out, channels, kernel, generator=generator) * 0.1
    offset = torch.randn(out, generator=generator) if bias else None
    held = panels.arrange(weight.permute(0, 2, 1).reshape(out, -1))
    got = panels.windows(x, held, offset, stride)
    exact = F.conv1d(
        x.double().transpose(1, 2),
        weight.double(),
        offset.double() if bias else None,
        stride=stride,
    ).transpose(1, 2)
    assert got.shape == exact.shape == (streams, 42, out)
    assert (got.double() - exact).norm() <= 1e-6 * exact.norm()
    assert torch.equal(got[1], panels.windows(x[1:2], held, offset, stride)[0])


@needs_kernel
def test_panels_return_the_input_dtype() -> None:
    held = panels.quantize(matrix(16, 32))
    x = torch.randn(3, 32).bfloat16()
    got = kernel_choice.product("panels", kernel_choice.held("panels", held), None)(x)
    exact = x.double() @ held.dequantized().T
    assert got.dtype == torch.bfloat16 and got.shape == (3, 16)
    assert (got.double() - exact).norm() <= 1e-2 * exact.norm()


def nearest_codes(books: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Residual vector quantization in float64: each book's entry nearest to what is left."""
    left, codes = x.double(), []
    for book in books:
        index = torch.cdist(left, book.double()).argmin(dim=1)
        left = left - book.double()[index]
        codes.append(index)
    return torch.stack(codes, dim=1)


@needs_kernel
@pytest.mark.parametrize("dim", [256, 40])
def test_the_screened_codebook_search_finds_the_nearest_entries(dim) -> None:
    """Codebooks read through their int8 screen give the float32 search's codes, the nearest
    entries, also where two entries are too close for the screen to tell apart (their
    distances differ by a fraction of its error bound, yet by thousands of float32 steps): the
    second of the pair, nearer the row but with the larger norm, is the one found; where most
    entries are (a codebook of near-equal entries, read whole); and for a row holding a NaN."""
    generator = torch.Generator().manual_seed(dim)
    books = [torch.randn(66, dim, generator=generator) for _ in range(3)]  # 66: not whole lanes
    books[2] = torch.randn(dim, generator=generator) + 1e-2 * books[2]
    base = books[0][5].clone()
    books[0][9] = base + 1e-2 * base.sign()
    x = torch.randn(4, dim, generator=generator)
    x[1] = base + 3e-2 * base.sign()  # 2e-2 from entry 9 in each input, 3e-2 from entry 5
    x[3, 0] = float("nan")  # compares with nothing: the first entry of every codebook
    codes = panels.Codebooks(books).nearest(x)
    assert codes[1, 0] == 9 and (codes[3] == 0).all()
    assert torch.equal(codes, nearest_codes(books, x))
    assert len(panels.Codebooks(books).nearest(x[:0])) == 0


@needs_kernel
def test_the_kernels_are_built_for_the_extensions_this_cpu_lists() -> None:
    """Beyond AVX2 and FMA, each of AVX-512 (with DQ), its VNNI and BF16, and AVX-VNNI that
    this CPU lists (gcc 12 knows them all)."""
    listed = set(machine_cache.cpu_description()["flags"].split())
    known = ("avx512dq", "avx512_vnni", "avx_vnni", "avx512_bf16")
    assert set(native.extensions()) == {name for name in known if name in listed}


def test_a_machine_that_cannot_build_it_keeps_pytorchs_kernels(monkeypatch, tmp_path) -> None:
    """A compiler that fails (or none) leaves the kernel unavailable, and every matrix is
    measured and multiplied on PyTorch's own kernels alone."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails every build
    assert native.library.__wrapped__() is None
    monkeypatch.setattr(panels, "available", lambda: False)
    assert kernel_choice._candidates("int8") == ("int8pack",)
    assert kernel_choice._candidates("float32") == ("linear", "mv", "matmul")
    held = panels.quantize(matrix(16, 32))
    with pytest.raises(RuntimeError, match="cannot be built"):
        kernel_choice.product("panels", held, None)
