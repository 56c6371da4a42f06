"""How PyTorch's OpenMP threads wait between parallel regions. Read once, when torch loads its
OpenMP runtime, so `configure()` runs before anything imports torch.

Idle threads sleep (OMP_WAIT_POLICY=PASSIVE): a pool that spins for milliseconds steals the
other core from the audio, GUI and second-engine threads. But waking a sleeping thread costs
tens of microseconds, several times what a small operation takes, and a streaming step runs
about a hundred small operations that PyTorch splits over the threads. So GNU OpenMP's threads
first spin briefly, about a tenth of a millisecond (GOMP_SPINCOUNT, which takes precedence over
the wait policy there), then sleep. The figures are in the README.
"""

from __future__ import annotations

import os

_SPIN_COUNT = "10000"  # libgomp counts about 100 000 spins a millisecond


def configure() -> None:
    """Set the wait policy unless the user set their own."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("GOMP_SPINCOUNT", _SPIN_COUNT)
