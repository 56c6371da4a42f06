"""Which dtype the quantized Kyutai LM computes in, and how `livecap bench` counts memory."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import engine.bench as bench
from engine.models import kernel_choice, kernels, panels, ring_attention
from engine.models.kyutai import weights
from tests.kyutai_fixtures import SHAPES, build_tiny_model

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("kyutai-precision"), SHAPES["gqa"])


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_quantized_lm_computes_in_float32_unless_its_ring_is_bfloat16(
    tiny, monkeypatch, native, dtype
) -> None:
    """int8 and int4 weights with float32 activations (residual stream, norms, logits), except
    where bfloat16 is native and ring_attention.c cannot run (a bfloat16 ring); a step runs
    either way and gives finite logits. Where ring_attention.c runs, keys and values are int4's
    int8 codes and int8's bfloat16; else bfloat16, or float32 where bfloat16 is emulated."""
    monkeypatch.setattr(kernels, "native_bfloat16", lambda: native)
    model = weights.load_model(tiny, "cpu", dtype)
    compiled = ring_attention.available(model.config.head_dim)
    expected = torch.bfloat16 if native and not compiled else torch.float32
    assert model.lm.dtype == expected
    state = model.lm.new_state()
    with torch.inference_mode():
        logits = model.lm.step(*model.lm.start_inputs(), state)
    assert logits.dtype == expected and torch.isfinite(logits).all()
    if compiled:  # int4 holds the fewest bytes; int8 the least deviation
        ring = torch.int8 if dtype == "int4" else torch.bfloat16
    else:
        ring = torch.bfloat16 if native else torch.float32
    assert state.rings[0].keys.dtype == ring
    head_dim, cpu = model.config.head_dim, torch.device("cpu")
    assert weights.compute_dtype("float32", cpu, head_dim) == torch.float32
    assert weights.compute_dtype("bfloat16", cpu, head_dim) == torch.bfloat16


def test_quantized_lm_without_ring_kernel_computes_in_bfloat16_where_native(
    tiny, monkeypatch
) -> None:
    """Where bfloat16 is native and ring_attention.c cannot run, the ring is bfloat16, and so
    are the activations."""
    monkeypatch.setattr(kernels, "native_bfloat16", lambda: True)
    monkeypatch.setattr(ring_attention, "available", lambda head_dim: False)
    model = weights.load_model(tiny, "cpu", "int8")
    assert model.lm.dtype == torch.bfloat16
    state = model.lm.new_state()
    assert state.rings[0].keys.dtype == torch.bfloat16


def test_bfloat16_panels_take_rows_rounded_to_bfloat16() -> None:
    """As every other kernel for bfloat16 weights, the panels multiply x rounded to
    bfloat16, and return float32 sums for float32 rows."""
    if not panels.available():
        pytest.skip("the panels kernel cannot be built here")
    weight = (torch.randn(24, 40) * 0.02).bfloat16()
    product = kernel_choice.product("panels", panels.arrange(weight), None)
    x = torch.randn(3, 40)
    got = product(x)
    rounded = x.bfloat16().double() @ weight.double().T
    assert got.dtype == torch.float32
    assert (got.double() - rounded).norm() <= 1e-6 * rounded.norm()
    assert (got.double() - x.double() @ weight.double().T).norm() > 1e-5 * rounded.norm()


def test_int8_product_takes_float32_activations() -> None:
    """The int8-weight kernel gets float32 rows rounded to bfloat16 (it reads float32 ones
    several times slower, with bfloat16 scales not at all) and returns float32."""
    torch.manual_seed(0)
    codes, scales = kernels.quantize_rows(torch.randn(96, 64) * 0.02)
    scales = scales.to(torch.bfloat16)
    x = torch.randn(1, 2, 64)
    with torch.inference_mode():
        got = kernel_choice.product("int8pack", codes, scales)(x)
    exact = x.double() @ (codes.double() * scales.double()[:, None]).T
    assert got.dtype == torch.float32 and got.shape == (1, 2, 96)
    assert (got.double() - exact).norm() <= 1e-2 * exact.norm()


def test_bench_peak_memory_is_the_process_own() -> None:
    """A bench started from a process holding a large model reports its own peak, not the
    parent's (Linux carries a forked parent's pages into ru_maxrss across exec)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is Linux's")
    held = np.ones(2**27)  # 1 GiB, touched, in this (the parent) process
    child = "import engine.bench as b; print(b.peak_resident_bytes())"
    peak = int(
        subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, check=True
        ).stdout
    )
    assert 0 < peak < held.nbytes / 2
    assert bench.peak_resident_bytes() > held.nbytes


@pytest.mark.parametrize("native", [False, True])
def test_int8_holds_the_table_and_where_native_attention_inputs_in_bfloat16(
    tiny, monkeypatch, native
) -> None:
    """int8 keeps the embedding table in bfloat16 and, where bfloat16 is native, each layer's
    fused query/key/value projection too; the other matrices are int8 and its step stays
    close to float32's either way."""
    monkeypatch.setattr(kernels, "native_bfloat16", lambda: native)
    model = weights.load_model(tiny, "cpu", "int8")
    reference = weights.load_model(tiny, "cpu", "float32")
    layer = model.lm.layers[0]
    assert layer.qkv.weight.dtype == (torch.bfloat16 if native else torch.int8)
    assert {layer.out.weight.dtype, layer.fc1.weight.dtype, layer.fc2.weight.dtype} == {torch.int8}
    assert model.lm.head.weight.dtype == torch.int8
    assert model.lm.embedding.table.dtype == torch.bfloat16 and model.lm.embedding.scales is None
    outputs = []
    for lm in (model.lm, reference.lm):
        state = lm.new_state()
        with torch.inference_mode():
            lm.step(*lm.start_inputs(), state)
            outputs.append(lm.step(5, torch.arange(lm.config.num_codebooks), state).double())
    assert torch.nn.functional.cosine_similarity(*outputs, dim=0) > 0.99


def test_step_matrices_name_each_form_int8_holds(tiny, monkeypatch) -> None:
    """What `--dtype auto` times for int8 where bfloat16 is native: per layer a bfloat16
    query/key/value projection and three int8 matrices, then the int8 text head; the other
    dtypes hold one form."""
    monkeypatch.setattr(kernels, "native_bfloat16", lambda: True)
    config = weights.load_config(tiny)
    forms = [form for form, _ in weights.step_matrices(config, "int8")]
    assert forms == ["bfloat16", "int8", "int8", "int8"] * config.num_layers + ["int8"]
    assert {form for form, _ in weights.step_matrices(config, "float32")} == {"float32"}


def test_the_lms_kernels_are_measured_before_any_weight_is_read(tiny, monkeypatch) -> None:
    """The kernel probe's random matrices must not add to the loaded model's peak memory: every
    LM matrix's kernel is chosen before the first tensor is read."""
    events: list[str] = []
    choose, read = weights.kernel_for, weights.Checkpoint.read

    def chosen(*args, **kwargs):
        events.append("kernel")
        return choose(*args, **kwargs)

    def reading(self, *args, **kwargs):
        events.append("read")
        return read(self, *args, **kwargs)

    monkeypatch.setattr(weights, "kernel_for", chosen)
    monkeypatch.setattr(weights.Checkpoint, "read", reading)
    weights.load_model(tiny, "cpu", "int8")
    layers = weights.load_config(tiny).num_layers
    matrices = len(weights.step_matrices(weights.load_config(tiny), "int8"))
    assert matrices == 4 * layers + 1
    assert events[:matrices] == ["kernel"] * matrices and "read" in events
