"""The batched Kyutai engine (engine/serving/kyutai_slots.py) against the single-stream
recognizer on tiny random models: each stream's events are what `KyutaiRecognizer.feed()`
gives for the same audio, whatever the other slots do."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.events import Commit, EndOfTurn, Event, Partial
from engine.models import ring_attention
from engine.models.kyutai import weights
from engine.models.kyutai.layers import KVRing, Rows
from engine.models.kyutai.weights import load_model
from engine.recognizer import LoadOptions
from engine.serving.kyutai_slots import KyutaiSlots, load_slots
from engine.streaming.kyutai_stream import load_recognizer
from tests.kyutai_fixtures import FRAME, SHAPES, build_tiny_model, speechlike_audio

pytest.importorskip("transformers")

OPTIONS = LoadOptions(device="cpu", dtype="float32")
PIECES = [0, 1, 700, 1919, 1920, 1921, 2500, 4000]  # samples pushed per tick, at random


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return {
        name: build_tiny_model(tmp_path_factory.mktemp(f"slots-{name}"), SHAPES[name])
        for name in ("gqa", "prefix")
    }


def _single(folder: Path, audio: np.ndarray) -> list[Event]:
    """What one KyutaiRecognizer gives for the audio (its whole frames stepped)."""
    return load_recognizer(folder, str(folder), OPTIONS).feed(audio)


@dataclass
class _Plan:
    audio: np.ndarray
    join_at: int = 0  # the tick before which the stream joins
    leave_at: int | None = None  # the tick before which it leaves; None: once all is stepped
    slot: int | None = None
    pushed: int = 0
    events: list[Event] = field(default_factory=list)
    done: bool = False


def _run(engine: KyutaiSlots, plans: dict[str, _Plan], seed: int = 0) -> list[dict]:
    """Tick until every plan is done: streams join and leave on schedule and push audio in
    random-sized pieces. Returns, per tick, the slots holding a whole frame before it and
    what the tick reported."""
    rng = random.Random(seed)
    log: list[dict] = []
    for tick in range(10_000):
        for plan in plans.values():
            if plan.done or tick < plan.join_at:
                continue
            if plan.slot is None:
                plan.slot = engine.join()
                assert plan.slot is not None
            if plan.leave_at == tick or (
                plan.pushed == len(plan.audio) and engine.buffered(plan.slot) < FRAME
            ):
                engine.leave(plan.slot)
                plan.done = True
                continue
            piece = plan.audio[plan.pushed : plan.pushed + rng.choice(PIECES)]
            engine.push(plan.slot, piece)
            plan.pushed += len(piece)
        if all(plan.done for plan in plans.values()):
            return log
        joined = {p.slot: p for p in plans.values() if p.slot is not None and not p.done}
        holding = {slot for slot in joined if engine.buffered(slot) >= FRAME}
        outputs = engine.tick() if engine.ready() else {}
        for slot, output in outputs.items():
            joined[slot].events += output.events
        log.append({"holding": holding, "outputs": outputs, "streams": dict(joined)})
    raise AssertionError("the streams never finished")


def _words(events: list[Event]) -> list[tuple[str, float, float]]:
    return [(e.text, e.start, e.end) for e in events if isinstance(e, Commit)]


def _assert_same(ours: list[Event], expected: list[Event]) -> None:
    """Every event, not only the commits: partials and turn ends too, with their times."""
    assert _words(ours) == _words(expected)
    assert ours == expected
    assert len(_words(expected)) > 5


def test_streams_of_different_lengths_each_equal_a_single_stream(tiny):
    audios = {
        f"s{i}": speechlike_audio(seconds, seed=20 + i) for i, seconds in enumerate([4, 9, 6])
    }
    plans = {name: _Plan(audio) for name, audio in audios.items()}
    _run(load_slots(tiny["gqa"], "gqa", OPTIONS, slots=3), plans)
    for name, plan in plans.items():
        _assert_same(plan.events, _single(tiny["gqa"], audios[name]))


@pytest.mark.skipif(not ring_attention.available(64), reason="no int8 ring without the kernel")
def test_int8_streams_hold_int8_rings_in_a_batch_and_equal_such_a_single_stream(tiny, monkeypatch):
    """A batch of int8 streams holds its keys and values as int8 codes (one int8 stream holds
    bfloat16 ones), and each of its streams gives what one stream with int8 rings gives."""
    folder, options = tiny["gqa"], LoadOptions(device="cpu", dtype="int8")
    audios = [speechlike_audio(seconds, seed=60 + seconds) for seconds in (5, 7)]
    engine = load_slots(folder, "gqa", options, slots=2)
    assert {ring.keys.dtype for ring in engine._lm.rings} == {torch.int8}
    assert engine.model.lm.new_state().rings[0].keys.dtype != torch.int8
    plans = {f"s{i}": _Plan(audio) for i, audio in enumerate(audios)}
    _run(engine, plans)
    monkeypatch.setattr(weights, "ring_dtype", lambda *args: torch.int8)
    for plan, audio in zip(plans.values(), audios, strict=True):
        _assert_same(plan.events, load_recognizer(folder, "gqa", options).feed(audio))


def test_a_stream_joining_midway_equals_a_fresh_single_stream(tiny):
    folder = tiny["prefix"]  # a silence prefix: each stream's model audio starts with its own
    first, late = speechlike_audio(10, seed=31), speechlike_audio(6, seed=32)
    plans = {"first": _Plan(first), "late": _Plan(late, join_at=40)}
    log = _run(load_slots(folder, "prefix", OPTIONS, slots=2), plans)
    assert any(len(entry["holding"]) == 2 for entry in log)  # they did step together
    _assert_same(plans["first"].events, _single(folder, first))
    _assert_same(plans["late"].events, _single(folder, late))


def test_a_freed_slot_reused_by_a_new_stream_starts_fresh(tiny):
    folder = tiny["gqa"]
    leaving, staying, reusing = (speechlike_audio(8, seed=s) for s in (41, 42, 43))
    plans = {
        "leaving": _Plan(leaving, leave_at=30),
        "staying": _Plan(staying),
        "reusing": _Plan(reusing, join_at=31),
    }
    _run(load_slots(folder, "gqa", OPTIONS, slots=2), plans)
    assert plans["reusing"].slot == plans["leaving"].slot
    _assert_same(plans["reusing"].events, _single(folder, reusing))
    _assert_same(plans["staying"].events, _single(folder, staying))


def test_idle_joined_slots_are_not_stepped_and_change_nothing(tiny):
    """Talking streams in slots 0 and 2, joined idle ones in 1 and 3: passes over rows that
    are not side by side."""
    folder = tiny["gqa"]
    audios = [speechlike_audio(6, seed=51), speechlike_audio(5, seed=52)]
    engine = load_slots(folder, "gqa", OPTIONS, slots=4)
    assert [engine.join() for _ in range(4)] == [0, 1, 2, 3]
    plans = {"a": _Plan(audios[0], slot=0), "b": _Plan(audios[1], slot=2)}
    log = _run(engine, plans)
    assert all(set(entry["outputs"]) <= {0, 2} for entry in log)
    assert any(set(entry["outputs"]) == {0, 2} for entry in log)
    assert [engine.buffered(slot) for slot in (1, 3)] == [0, 0]
    assert not engine.ready()
    for plan, audio in zip(plans.values(), audios, strict=True):
        _assert_same(plan.events, _single(folder, audio))


def test_join_returns_none_when_every_slot_is_busy(tiny):
    engine = load_slots(tiny["gqa"], "gqa", OPTIONS, slots=2)
    assert [engine.join(), engine.join(), engine.join()] == [0, 1, None]
    engine.leave(1)
    assert engine.join() == 1
    assert engine.join() is None
    with pytest.raises(ValueError, match="not joined"):
        engine.push(5, np.zeros(10, np.float32))


def test_pause_flush_on_audio_with_pauses_equals_a_single_stream(tiny):
    folder = tiny["gqa"]
    paused = speechlike_audio(12, seed=61, pauses=((3.0, 4.5), (7.0, 9.0)))
    other = speechlike_audio(10, seed=62)
    plans = {"paused": _Plan(paused), "other": _Plan(other, join_at=15)}
    _run(load_slots(folder, "gqa", OPTIONS, slots=2), plans, seed=3)
    expected = _single(folder, paused)
    assert sum(isinstance(e, EndOfTurn) for e in expected) == 2
    _assert_same(plans["paused"].events, expected)
    _assert_same(plans["other"].events, _single(folder, other))


def test_a_tick_steps_exactly_the_slots_holding_a_frame_in_one_pass(tiny):
    engine = load_slots(tiny["gqa"], "gqa", OPTIONS, slots=3)
    passes: list[tuple[int, int]] = []  # rows of each Mimi pass, each LM pass
    encode, step = engine.model.mimi.encode_rows, engine.model.lm.step_rows

    def spy_encode(audio, state, rows):
        passes.append(("mimi", len(rows), audio.shape[0]))
        return encode(audio, state, rows)

    def spy_step(tokens, codes, state, rows):
        passes.append(("lm", len(rows), codes.shape[0]))
        return step(tokens, codes, state, rows)

    engine.model.mimi.encode_rows, engine.model.lm.step_rows = spy_encode, spy_step
    plans = {
        "a": _Plan(speechlike_audio(5, seed=71)),
        "b": _Plan(speechlike_audio(3, seed=72), join_at=10),
        "c": _Plan(speechlike_audio(4, seed=73), join_at=5),
    }
    log = _run(engine, plans, seed=9)
    stepping = [entry for entry in log if entry["holding"]]
    for entry in stepping:
        steps = {slot: out.steps for slot, out in entry["outputs"].items() if out.steps}
        assert steps == dict.fromkeys(entry["holding"], 1)
    sizes = [len(entry["holding"]) for entry in stepping]
    assert passes[0::2] == [("mimi", n, n) for n in sizes]
    assert passes[1::2] == [("lm", n, n) for n in sizes]
    assert {1, 2, 3} <= set(sizes)  # passes of every size were taken
    for plan in plans.values():
        _assert_same(plan.events, _single(tiny["gqa"], plan.audio))


def test_transcribed_seconds_never_runs_ahead_of_the_words(tiny):
    """Once a tick reports t, every word starting before t has been emitted."""
    engine = load_slots(tiny["gqa"], "gqa", OPTIONS, slots=2)
    plans = {"a": _Plan(speechlike_audio(8, seed=81)), "b": _Plan(speechlike_audio(5, seed=82))}
    log = _run(engine, plans)
    for name in plans:
        reported, first_seen = [], {}
        for tick, entry in enumerate(log):
            output = entry["outputs"].get(plans[name].slot)
            if output is None or entry["streams"].get(plans[name].slot) is not plans[name]:
                continue
            reported.append((tick, output.transcribed_seconds))
            for event in output.events:
                if isinstance(event, Partial | Commit):
                    first_seen.setdefault(event.start, tick)
        times = [t for _, t in reported]
        assert times == sorted(times) and times[-1] > 4.0
        for start, seen in first_seen.items():
            assert all(t <= start + 1e-9 for tick, t in reported if tick < seen)
        _assert_same(plans[name].events, _single(tiny["gqa"], plans[name].audio))


def test_mimi_rows_encode_what_each_stream_alone_does(tiny):
    """Mimi over rows that join at different frames, each pass over some of them, gives each
    stream's codes frame by frame. The random model's transformer layer scales (0.01) are
    raised to 100 (then the transformer changes about half the codes), so a row attending at
    another row's positions changes them."""
    model = load_model(tiny["gqa"], "cpu")
    for layer in model.mimi.layers:
        layer.attn_scale = layer.mlp_scale = torch.full_like(layer.attn_scale, 100.0)
    audios = [speechlike_audio(3, seed=90 + i) for i in range(3)]
    alone = [model.mimi.new_state() for _ in audios]
    batched = model.mimi.new_state(rows=3)
    joins, stepped = [0, 4, 9], [0, 0, 0]
    rng = random.Random(2)
    with torch.inference_mode():
        for tick in range(40):
            rows = [r for r in range(3) if joins[r] <= tick and rng.random() < 0.7]
            for row in (r for r in range(3) if joins[r] == tick):
                model.mimi.restart_row(batched, row)
            rows = [r for r in rows if stepped[r] < len(audios[r]) // FRAME]
            if not rows:
                continue
            frames = [audios[r][stepped[r] * FRAME : (stepped[r] + 1) * FRAME] for r in rows]
            ours = model.mimi.encode_rows(torch.from_numpy(np.stack(frames)), batched, rows)
            for i, row in enumerate(rows):
                expected = model.mimi.encode(torch.from_numpy(frames[i]), alone[row])
                assert torch.equal(ours[i], expected)
                stepped[row] += 1
    assert min(stepped) > 15


@pytest.mark.parametrize("step_dtype", [torch.float32, torch.bfloat16])
def test_kv_ring_rows_each_at_their_own_position_equal_one_stream_rings(step_dtype):
    """Rows 0 and 2 of a 3-row ring, written and read at their own positions, hold and
    attend exactly what two one-row rings do; row 1 is never touched. bfloat16 steps: the
    float32 ring of a CPU that only emulates bfloat16 (KVRing._attend_wide)."""
    torch.manual_seed(0)
    heads, size, dim, window = 2, 5, 4, 4
    batched = KVRing(heads, size, dim, torch.float32, torch.device("cpu"), rows=3)
    alone = [KVRing(heads, size, dim, torch.float32, torch.device("cpu")) for _ in range(2)]
    position = [0, 7]  # row 0 from position 0, row 2 from 7 (its ring wraps sooner)
    for step in range(9):
        length = 2 if step % 3 == 0 else 1
        keys, values, queries = (
            torch.randn(2, heads, length, dim, dtype=step_dtype) for _ in range(3)
        )
        rows = Rows([0, 2], position, torch.device("cpu"))
        batched.write(keys, values, rows)
        ours = batched.attend(queries, rows, window)
        for i, ring in enumerate(alone):
            ring.write(keys[i : i + 1], values[i : i + 1], position[i])
            expected = ring.attend(queries[i : i + 1], position[i], window)
            torch.testing.assert_close(ours[i : i + 1], expected, rtol=1e-6, atol=1e-6)
            assert torch.equal(batched.positions[2 * i], ring.positions[0])
        position = [p + length for p in position]
    assert (batched.positions[1] == -1).all() and not batched.keys[1].any()
