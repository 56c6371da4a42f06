"""The CPU kernels of engine/models/kernels.py against the plain float32 products they
stand in for: few-row float forms, int8 weights, fbgemm's int8 × int8 kernel with split
activations, the screened output layer's error bound, and the probe that decides whether
fbgemm may be used on this CPU.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.models import bart, kernel_choice, kernels, machine_cache, panels
from engine.models.generation import Screened

needs_exact_fbgemm = pytest.mark.skipif(
    not kernels.fbgemm_int8(),
    reason="fbgemm's int8 x int8 kernel is missing or never exact here: the engine skips it",
)


@needs_exact_fbgemm
def test_screened_head_bounds_every_logit_and_picks_the_exact_argmax() -> None:
    """The int8 screen of a float32 output layer: every exact logit lies within its stated
    bound, few tokens need an exact score, and the choice is the float32 argmax, also between
    two rows too close for int8 to tell apart and for hidden states of any size."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 5000)  # with a bias, as BERT's head has
    with torch.no_grad():
        linear.weight.normal_(0, 0.05)
        # a near-tie int8 cannot see (same codes), which the later row wins in float32
        linear.weight[4001] = linear.weight[17] * (1 + 1e-4)
        linear.bias[4001] = linear.bias[17]
    head = kernels.ScreenedHead(linear)
    tie = linear.weight[17]  # a state aimed at both rows
    for size in (0.1, 1.0, 30.0):
        x = torch.cat([torch.randn(2, 64), tie[None] * 20]) * size
        with torch.inference_mode():
            exact = F.linear(x, linear.weight, linear.bias)
            screened = head(x[None])
        assert ((screened.approx - exact).abs() <= screened.bound).all()
        floor = (screened.approx - screened.bound).max(dim=1, keepdim=True).values
        assert ((screened.approx + screened.bound >= floor).sum(dim=1) < 50).all()
        assert [screened.best(row) for row in range(3)] == exact.argmax(dim=1).tolist()
        assert exact[2].argmax().item() == 4001


@needs_exact_fbgemm
def test_screened_head_bounds_the_activations_split_where_codes_are_exact() -> None:
    """Weights int8 holds exactly leave only the activations' split into parts and rounding
    in the bound, which must still cover every logit (an outlier channel included)."""
    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 3000, bias=False)
    with torch.no_grad():
        codes = torch.randint(-127, 128, (3000, 64)).float()
        codes[:, 0] = 127  # each row's largest code: its scale is the row's step exactly
        step = (torch.rand(3000, 1) * 0.01 + 1e-3).bfloat16().float()
        linear.weight.copy_(codes * step)
    head = kernels.ScreenedHead(linear)
    assert head.code_error.max() == 0
    x = torch.randn(3, 64)
    x[:, 5] *= 30
    with torch.inference_mode():
        screened = head(x[None])
    exact = F.linear(x, linear.weight)
    assert ((screened.approx - exact).abs() <= screened.bound).all()
    assert [screened.best(row) for row in range(3)] == exact.argmax(dim=1).tolist()


@pytest.mark.parametrize("rows", [1, 4, 12, 30])
def test_int8_linear_computes_the_dequantized_product(rows) -> None:
    """Few rows go through the int8 kernel, many through weights widened once: both give
    x · (q · scale)ᵀ + bias to bfloat16 rounding."""
    torch.manual_seed(rows)
    linear = torch.nn.Linear(64, 48)
    layer = kernels.Int8Linear(linear)
    x = torch.randn(2, rows, 64)
    exact = F.linear(x, layer.weight.float() * layer.scale.float()[:, None], linear.bias)
    got = layer(x)
    assert got.shape == (2, rows, 48) and got.dtype == torch.float32
    assert ((got - exact).norm() / exact.norm()).item() < 0.01
    assert F.cosine_similarity(got.flatten(), linear(x).flatten(), dim=0) > 0.999


@pytest.mark.parametrize("rows", [1, 3, 4, 5, 48, 49])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decoder_row_kernels_compute_the_linear_layer(rows, dtype) -> None:
    """Decoder steps pick a kernel by row count (matrix-vector, weight · xᵀ in slices of
    weight rows, plain linear); every one gives x · weightᵀ + bias, beams [B, 1, D] and
    prefixes [1, T, D] alike, for a matrix whose rows end in a partial slice."""
    torch.manual_seed(rows)
    linear = torch.nn.Linear(64, 2 * kernels._SLICE + 300).to(dtype)
    layer = kernels.RowLinear(linear)
    for shape in ((rows, 1, 64), (1, rows, 64)):
        x = torch.randn(shape, dtype=dtype)
        with torch.inference_mode():  # as the engine decodes
            got = layer(x)
        exact = F.linear(x.float(), linear.weight.float(), linear.bias.float())
        assert got.shape == exact.shape and got.dtype == dtype
        tolerance = 1e-5 if dtype == torch.float32 else 2e-2
        assert ((got.float() - exact).abs().max() / exact.abs().max()).item() < tolerance


@needs_exact_fbgemm
@pytest.mark.parametrize("rows", [1, 5, 12])
def test_packed_int8_output_layer_computes_the_dequantized_product(rows) -> None:
    """fbgemm's int8 × int8 kernel with each activation row split in two integer parts gives
    x · (q · scale)ᵀ + bias many times closer than bfloat16 activations would, an outlier
    channel included (one int8 part alone is ~1% off)."""
    torch.manual_seed(rows)
    linear = torch.nn.Linear(96, 3000)
    with torch.inference_mode():
        layer = kernels.PackedInt8Linear.from_linear(linear)
        x = torch.randn(rows, 1, 96)
        x[..., 7] *= 20
        got = layer(x)
    _, codes, scale = next(kernels.int8_blocks(linear.weight))  # as the layer quantized
    restored = codes.float() * scale.float()[:, None]
    exact = F.linear(x, restored, linear.bias.detach())
    bfloat16 = F.linear(x.bfloat16().float(), restored, linear.bias.detach())
    assert got.shape == (rows, 1, 3000) and got.dtype == torch.float32
    error = (got - exact).norm() / exact.norm()
    assert error < 2e-4 and error < (bfloat16 - exact).norm() / exact.norm() / 5


def _saturating_pairs(zero_point: int):
    """fbgemm's AVX2 int8 kernel without VNNI: activations as u8 (`zero_point` added) times
    s8 codes, adjacent products added in saturating int16 (vpmaddubsw), then summed in int32
    with the zero point's share taken off."""

    def product(activations: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        unsigned = (activations + zero_point).long()
        products = unsigned[:, None, :] * codes.long()[None]  # [T, V, D]
        pairs = (products[..., 0::2] + products[..., 1::2]).clamp(-32768, 32767)
        return (pairs.sum(-1) - zero_point * codes.long().sum(-1)[None]).float()

    return product


def test_int8_probe_rejects_a_kernel_whose_pair_sums_saturate() -> None:
    """The probe that decides whether fbgemm's kernel may be used tells an exact integer
    product from one that saturates on full-range codes, as AVX2 without VNNI does, and finds
    7-bit activations exact on that kernel."""
    assert kernels.int8_products_exact(lambda x, q: x @ q.float().T)
    assert not kernels.int8_products_exact(_saturating_pairs(128))
    assert kernels.int8_products_exact(_saturating_pairs(64), levels=63)
    assert kernels.fbgemm_levels() in (127, 63, None)


def _decoder(width: int = 32) -> nn.Module:
    torch.manual_seed(0)
    values = {
        "vocab_size": 300, "d_model": width, "decoder_layers": 2, "decoder_attention_heads": 4,
        "decoder_ffn_dim": 64, "max_position_embeddings": 64,
    }  # fmt: skip
    decoder = bart.build_decoder(values, memory_width=width)
    for parameter in decoder.parameters():
        nn.init.normal_(parameter, std=0.1)
    return decoder.eval()


def _forms(decoder: nn.Module) -> set[type]:
    return {type(m) for m in decoder.modules() if isinstance(m, kernels.RowLinear | nn.Linear)}


@pytest.mark.parametrize("exact_fbgemm", [False, True])
def test_each_precision_gets_its_decoder_forms(monkeypatch, exact_fbgemm) -> None:
    """float32: step matrices on RowLinear (packed for the beams), the memory projection
    plain, the output layer screened only where fbgemm is exact; int8: int8 step weights (the
    memory projection plain), the output layer on fbgemm only where exact; bfloat16:
    RowLinear, no packs. Ties survive."""
    if exact_fbgemm and not kernels.fbgemm_int8():
        pytest.skip("fbgemm's int8 x int8 sums are not exact on this CPU")
    monkeypatch.setattr(kernels, "fbgemm_int8", lambda: exact_fbgemm)
    float32 = _decoder()
    kernel_choice.prepare_decoder(float32, "float32", beams=3)
    assert _forms(float32) == {kernels.RowLinear, bart.MemoryLinear}
    head = float32.lm_head.linear if exact_fbgemm else float32.lm_head
    assert isinstance(float32.lm_head, kernels.ScreenedHead if exact_fbgemm else kernels.RowLinear)
    assert head.weight is float32.embed_tokens.weight
    if kernels.BeamRowsWeight.available(head.weight):
        assert head.beam_rows is not None and head.beam_rows.rows == 3
    int8 = _decoder()
    kernel_choice.prepare_decoder(int8, "int8", beams=1)
    # every step matrix is int8 (the widths fit the kernel's blocks)
    assert _forms(int8) == {bart.MemoryLinear}
    assert isinstance(
        int8.lm_head, kernels.PackedInt8Linear if exact_fbgemm else kernels.Int8Linear
    )
    half = _decoder().to(torch.bfloat16)
    kernel_choice.prepare_decoder(half, "bfloat16", beams=3)
    assert _forms(half) == {kernels.RowLinear, bart.MemoryLinear}
    assert half.lm_head.beam_rows is None


@pytest.mark.skipif(not panels.available(), reason="the panels kernel does not build here")
def test_int8_step_matrices_go_to_the_panels_where_they_measure_fastest(monkeypatch) -> None:
    """Where the panels read fastest (as kernel_choice measured them), every int8 step matrix
    and the output layer run on them, the memory projection (many rows) stays float32, and a
    step's logits stay those of the float32 decoder within int8's rounding."""
    monkeypatch.setattr(kernel_choice, "kernel_for", lambda form, shape, device, rows=1: "panels")
    plain, int8 = _decoder(), _decoder()
    kernel_choice.prepare_decoder(int8, "int8", beams=1)
    forms = {type(m) for m in int8.modules()}
    assert kernels.PanelsLinear in forms and isinstance(int8.lm_head, kernels.PanelsLinear)
    memory_forms = {type(layer.cross_attn.kv) for layer in int8.layers}
    assert memory_forms == {bart.MemoryLinear}
    assert not forms & {nn.Linear, kernels.Int8Linear, kernels.PackedInt8Linear}
    memory, ids = torch.randn(1, 7, 32), torch.tensor([[2, 17, 40, 5]])
    with torch.inference_mode():
        logits = [
            bart.CachedDecoderState(d, d.cross_kv(memory), 1).step(ids, outputs=4)
            for d in (plain, int8)
        ]
    error = (logits[1] - logits[0]).norm() / logits[0].norm()
    assert 0 < error < 0.02


def test_decoder_forms_keep_the_decoder_s_logits() -> None:
    """The forms change how a step is computed, not what: a float32 step through them gives
    the plain layers' logits (exactly the same argmax, within float32 rounding)."""
    plain, fast = _decoder(), _decoder()
    kernel_choice.prepare_decoder(fast, "float32", beams=1)
    memory = torch.randn(1, 7, 32)
    ids = torch.tensor([[2, 17, 40, 5]])
    with torch.inference_mode():
        results = []
        for decoder in (plain, fast):
            state = bart.CachedDecoderState(decoder, decoder.cross_kv(memory), 1)
            logits = state.step(ids, outputs=4)
            if isinstance(logits, Screened):
                logits = torch.stack([logits.exact(row, torch.arange(300)) for row in range(4)])[
                    None
                ]
            results.append(logits)
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(results[1].argmax(-1), results[0].argmax(-1))


# ---- kernels measured on the machine (engine/models/kernel_choice.py) ---------------


@pytest.fixture
def small_timing(monkeypatch, tmp_path):
    """Measure on small matrices into a fresh cache folder, so the tests stay quick."""
    monkeypatch.setattr(kernel_choice, "_MIN_TIMED_BYTES", 2**16)
    monkeypatch.setattr(kernel_choice, "_last_level_cache_bytes", lambda: 0)
    monkeypatch.setattr(kernel_choice, "_MEASURED_FROM_BYTES", 2**10)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("kernel", ["linear", "mv", "matmul", "int8pack", "panels", "int4"])
@pytest.mark.parametrize("rows", [1, 3])
def test_every_row_kernel_gives_the_product_of_its_weights(kernel, rows) -> None:
    if kernel == "panels" and not panels.available():
        pytest.skip("the panels kernel does not build here")
    torch.manual_seed(0)
    weight = torch.randn(96, 64) * 0.02
    if kernel == "int4":
        stored, dtype = kernels.quantize_int4_groups(weight), torch.bfloat16
        groups = weight.reshape(96, -1, kernels.INT4_GROUP)
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        step = (high - low) / 15
        restored = (torch.round((groups - low) / step) * step + low).reshape(96, 64)
    elif kernel == "panels":
        stored = (panels.quantize(weight), None)
        restored, dtype = stored[0].dequantized(), torch.bfloat16
    elif kernel == "int8pack":
        codes, scales = kernels.quantize_rows(weight)
        stored, restored = (codes, scales.to(torch.bfloat16)), codes * scales.bfloat16()[:, None]
        dtype = torch.bfloat16
    else:
        stored, restored, dtype = (weight.bfloat16(), None), weight.bfloat16(), torch.bfloat16
    x = torch.randn(1, rows, 64).to(dtype)
    weight, scales = stored
    with torch.inference_mode():
        got = kernel_choice.product(kernel, kernel_choice.held(kernel, weight), scales)(x)
    exact = x.double() @ restored.double().T
    assert got.shape == (1, rows, 96)
    assert (got.double() - exact).norm() <= 1e-2 * exact.norm()


def test_measured_choice_keeps_only_correct_kernels(small_timing, monkeypatch) -> None:
    """A candidate whose products are wrong (as fbgemm's int8 kernel's are where its int16
    sums saturate) is never timed nor chosen, however fast."""
    correct = kernel_choice.product

    def product(kernel, weight, scales):
        if kernel == "mv":
            return lambda x: torch.zeros(*x.shape[:-1], weight.shape[0], dtype=x.dtype)
        return correct(kernel, weight, scales)

    monkeypatch.setattr(kernel_choice, "product", product)
    rates = kernel_choice.measured_rates("bfloat16", (256, 64))
    expected = {"linear", "matmul"} | ({"panels"} if panels.available() else set())
    assert set(rates) == expected and min(rates.values()) > 0
    assert kernel_choice.kernel_for("bfloat16", (256, 64), torch.device("cpu")) != "mv"


def test_kernel_rates_are_measured_once_per_machine(small_timing, monkeypatch) -> None:
    timed = []

    def time_candidates(form, shape, rows=1):
        timed.append((form, shape))
        return {"linear": 5.0, "mv": 7.0}  # matmul unusable here

    monkeypatch.setattr(kernel_choice, "_time_candidates", time_candidates)
    for _ in range(2):
        assert kernel_choice.kernel_for("float32", (512, 64), torch.device("cpu")) == "mv"
    assert timed == [("float32", (512, 64))]
    cached = json.loads((small_timing / "livecap" / "kernel_rates.json").read_text())
    (machine,) = cached
    assert machine_cache.cpu_description()["model"] in machine
    assert cached[machine] == {"float32 512x64": {"linear": 5.0, "mv": 7.0}}
    monkeypatch.setattr(torch, "__version__", "0.0-other")  # another torch measures anew
    kernel_choice.kernel_for("float32", (512, 64), torch.device("cpu"))
    assert len(timed) == 2


def test_a_new_candidate_has_every_form_measured_again(small_timing, monkeypatch) -> None:
    """`auto` compares forms by their figures, so when any form gains a candidate all are
    timed anew (together), not the new one alone beside figures from another day."""
    timed = []
    monkeypatch.setattr(
        kernel_choice, "_time_candidates", lambda form, shape, rows=1: timed.append(form) or {}
    )
    for form in ("int8", "float32"):
        kernel_choice.measured_rates(form, (512, 64))
    candidates = {**kernel_choice._CANDIDATES, "float32": ("linear",)}
    monkeypatch.setattr(kernel_choice, "_CANDIDATES", candidates)
    for form in ("int8", "float32"):
        kernel_choice.measured_rates(form, (512, 64))
    assert timed == ["int8", "float32", "int8", "float32"]


def test_auto_dtype_is_the_shortest_measured_step(small_timing, monkeypatch) -> None:
    """Where int8's kernels read 8x slower than float32's, a float32 step (4x the bytes) is
    the shorter one and `auto` takes it; at equal rates int8's is."""
    from engine.streaming import kyutai_stream

    shapes = [(512, 64)] * 3
    monkeypatch.setattr(
        kyutai_stream, "step_matrices", lambda config, dtype: [(dtype, s) for s in shapes]
    )
    monkeypatch.setattr(kyutai_stream, "load_config", lambda folder: None)
    for int8_rate, expected in ((1.0, "float32"), (8.0, "int8")):
        rates = {"float32": 8.0, "bfloat16": 2.0, "int8": int8_rate}
        monkeypatch.setattr(
            kernel_choice,
            "_time_candidates",
            lambda form, shape, rows=1, r=rates: {kernel_choice.DEFAULTS[form]: r[form]},
        )
        monkeypatch.setenv("XDG_CACHE_HOME", str(small_timing / expected))
        assert kyutai_stream.resolve_dtype("auto", "cpu", small_timing) == expected
    assert kyutai_stream.resolve_dtype("auto", "cuda", small_timing) == "bfloat16"
