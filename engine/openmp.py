"""How PyTorch's OpenMP threads wait between parallel regions. Read once, when torch loads its
OpenMP runtime, so `configure()` runs before anything imports torch.

Idle threads sleep (OMP_WAIT_POLICY=PASSIVE): a pool that spins for milliseconds steals the
other core from the audio, GUI and second-engine threads. But waking a sleeping thread costs
tens of microseconds, several times what a small operation takes, and a streaming step runs
about a hundred small operations that PyTorch splits over the threads. So GNU OpenMP's threads
first spin briefly, about a tenth of a millisecond (GOMP_SPINCOUNT, which takes precedence over
the wait policy there), then sleep. The figures are in the README.

GNU OpenMP keeps a pool of workers for every thread that has run a parallel region, and once
its threads outnumber the CPUs it cuts that spinning to a hundred turns: every small operation
then pays for waking its workers. A model loaded on one thread and stepped on another (the
server's batch loop, a session's engine workers) would leave two pools, so the loading thread
lets its workers go (`release_workers`).
"""

from __future__ import annotations

import ctypes
import os

_SPIN_COUNT = "10000"  # libgomp counts about 100 000 spins a millisecond


def configure() -> None:
    """Set the wait policy unless the user set their own."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("GOMP_SPINCOUNT", _SPIN_COUNT)


_PAUSE_SOFT = 1  # omp_pause_soft: the pool's threads end; a later parallel region makes new ones


def release_workers() -> None:
    """End the calling thread's OpenMP workers, where the runtime is GNU OpenMP: for a thread
    that has loaded a model (measuring kernels on it) and leaves the stepping to another."""
    try:  # the runtime PyTorch loaded, found by its name; none loaded, nothing to release
        runtime = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except (OSError, AttributeError):  # AttributeError: no RTLD_NOLOAD on this platform
        return
    pause = getattr(runtime, "omp_pause_resource_all", None)
    if pause is not None:
        pause(_PAUSE_SOFT)
