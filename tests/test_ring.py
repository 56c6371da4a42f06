"""AudioRing properties: every reader gets the stream in order, losing only the oldest audio
when it falls more than the capacity behind, and the loss is counted per reader."""

from __future__ import annotations

import threading

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.audio.ring import AudioRing

# An action is ("write", n) or ("read", reader index).
actions = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 50)),
        st.tuples(st.just("read"), st.integers(0, 3)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(1, 37), readers=st.integers(1, 4), steps=actions)
def test_readers_get_the_stream_minus_counted_oldest_loss(capacity, readers, steps):
    # Sample values are their stream index, so order, gaps and losses are visible.
    ring = AudioRing(sample_rate=1000, seconds=capacity / 1000)
    assert ring.capacity == capacity
    cursors = [ring.reader() for _ in range(readers)]
    got: list[list[float]] = [[] for _ in range(readers)]
    written = 0
    for action, value in steps:
        if action == "write":
            ring.write(np.arange(written, written + value, dtype=np.float32))
            written += value
        else:
            index = value % readers
            reader = cursors[index]
            dropped_before = reader.dropped_samples
            chunk = reader.read(timeout=0)
            expected_start = max(len(got[index]) + dropped_before, written - capacity)
            assert chunk.tolist() == list(range(expected_start, written))
            assert reader.dropped_samples - dropped_before == expected_start - (
                len(got[index]) + dropped_before
            )
            got[index].extend(chunk.tolist())
    ring.close()
    for index, reader in enumerate(cursors):
        rest = reader.read(timeout=0)
        tail = [] if rest is None else rest.tolist()
        seen = got[index] + tail
        # Whatever a reader saw is increasing; seen + dropped accounts for everything.
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        assert len(seen) + reader.dropped_samples == written
        assert set(seen) <= set(range(written))
        assert reader.read(timeout=0) is None  # closed and drained


@settings(max_examples=100, deadline=None)
@given(
    capacity=st.integers(2, 64),
    blocks=st.lists(st.integers(1, 200), min_size=1, max_size=20),
    channels=st.integers(1, 3),
)
def test_multichannel_writes_are_mixed_down_across_the_wrap(capacity, blocks, channels):
    ring = AudioRing(sample_rate=1000, seconds=capacity / 1000)
    reader = ring.reader()
    written = 0
    for size in blocks:
        mono = np.arange(written, written + size, dtype=np.float32)
        # Channel c holds mono + c - mean, so the mix is exactly `mono`.
        offsets = np.arange(channels, dtype=np.float32) - (channels - 1) / 2
        ring.write(mono[:, None] + offsets[None, :])
        written += size
        out = reader.read(timeout=0)
        np.testing.assert_allclose(out, mono[-min(size, capacity) :])
    assert reader.dropped_samples == written - sum(min(s, capacity) for s in blocks)


def test_writer_that_waits_never_loses_audio_for_a_slow_reader():
    ring = AudioRing(sample_rate=1000, seconds=0.01)  # 10 samples
    reader = ring.reader()
    stream = np.arange(1000, dtype=np.float32)

    def write() -> None:
        for start in range(0, 1000, 7):
            ring.write(stream[start : start + 7], wait=True)
        ring.close()

    writer = threading.Thread(target=write)
    writer.start()
    got = []
    while (chunk := reader.read(3, timeout=1)) is not None:
        got.extend(chunk.tolist())
    writer.join()
    assert got == stream.tolist() and reader.dropped_samples == 0


def test_reader_resamples_to_its_own_rate_and_flushes_the_tail():
    ring = AudioRing(sample_rate=48000, seconds=2)
    slow, fast = ring.reader(16000), ring.reader(24000)
    for _ in range(10):
        ring.write(np.zeros(4801, np.float32))
    ring.close()
    lengths = {}
    for name, reader in {"slow": slow, "fast": fast}.items():
        total = 0
        while (chunk := reader.read(timeout=0)) is not None:
            total += chunk.size
        lengths[name] = total
    assert lengths == {"slow": round(48010 / 3), "fast": 24005}


def test_read_waits_for_enough_audio_until_the_timeout():
    ring = AudioRing(sample_rate=1000, seconds=1)
    reader = ring.reader()
    ring.write(np.ones(5, np.float32))
    threading.Timer(0.2, ring.write, [np.ones(5, np.float32)]).start()
    assert reader.read(10, timeout=5).size == 10  # waited for the second write
    ring.write(np.ones(3, np.float32))
    assert reader.read(10, timeout=0.05).size == 3  # timed out: what there is
