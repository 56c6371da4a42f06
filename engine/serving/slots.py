"""The contract between a batched engine and the server that feeds it: B stream slots
stepped together, one model frame per slot per tick. Not thread-safe: one thread (the
server's batch loop) makes every call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.events import Event
from engine.models.contract import ModelInfo


@dataclass(frozen=True)
class SlotOutput:
    """What one tick did for one slot."""

    events: list[Event]  # Partial / Commit / EndOfTurn, as a single-stream recognizer gives
    transcribed_seconds: float  # stream time whose text is final (the model's delay included)
    steps: int  # model frames stepped for this slot in this tick


class SlotEngine(Protocol):
    info: ModelInfo
    sample_rate: int
    frame_size: int  # samples per model step
    slots: int  # how many streams at most

    def join(self) -> int | None:
        """Claim a free slot with a fresh stream state; None when every slot is busy."""

    def leave(self, slot: int) -> None:
        """Free the slot; its stream is dropped and it costs nothing until joined again."""

    def push(self, slot: int, samples: np.ndarray) -> None:
        """Queue stream audio (mono float32 at sample_rate, any length)."""

    def buffered(self, slot: int) -> int:
        """Stream samples queued and not yet stepped."""

    def ready(self) -> bool:
        """Whether a tick would step anything (some joined slot holds a whole frame)."""

    def tick(self) -> dict[int, SlotOutput]:
        """Step, in one batched pass, every joined slot that holds a whole frame."""
