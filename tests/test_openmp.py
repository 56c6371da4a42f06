"""OpenMP's worker pools: a thread that loaded a model lets its workers go, so the thread
that steps it holds the only pool (GNU OpenMP cuts every pool's spinning once their threads
outnumber the CPUs)."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from engine import openmp


def _threads() -> set[str]:
    return set(os.listdir("/proc/self/task"))


@pytest.mark.skipif(
    not os.path.isdir("/proc/self/task") or torch.get_num_threads() < 2,
    reason="counts the threads of a Linux process whose PyTorch runs several",
)
def test_a_thread_that_loaded_a_model_lets_its_openmp_workers_go() -> None:
    seen: list[set[str]] = []

    def load() -> None:
        before = _threads()
        torch.ones(1 << 22).mul_(2).sum()  # a parallel region: this thread's pool of workers
        seen.append(_threads() - before)
        openmp.release_workers()
        deadline = time.monotonic() + 5  # the workers are told to end, and end on their own
        while _threads() & seen[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(_threads())

    thread = threading.Thread(target=load)
    thread.start()
    thread.join()
    workers, left = seen
    assert workers  # the region made workers for this thread
    assert not workers & left  # and they are gone
