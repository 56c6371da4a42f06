"""How PyTorch's OpenMP threads wait between parallel regions. Read once, when torch loads its
OpenMP runtime, so `configure()` runs before anything imports torch.

Idle threads sleep (OMP_WAIT_POLICY=PASSIVE): a pool that spins for milliseconds steals the
other core from the audio, GUI and second-engine threads (on a busy 2-core machine a tiny
model's step went from 29 ms to 4 ms once they slept). But waking a sleeping thread costs tens
of microseconds, and a streaming step runs a hundred small operations that PyTorch splits over
the threads (a [2, 512] layer norm: 56 µs with threads woken, 4 µs with threads still
spinning). So GNU OpenMP's threads first spin briefly, about a tenth of a millisecond
(GOMP_SPINCOUNT, which takes precedence over the wait policy there), then sleep.
"""

from __future__ import annotations

import os

SPIN_COUNT = "10000"  # libgomp counts about 100 000 spins a millisecond


def configure() -> None:
    """Set the wait policy unless the user set their own."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
