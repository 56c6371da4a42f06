"""A scripted SlotEngine for the server's tests: outputs fixed by the test, not by a model.

Each joined slot steps one frame a tick. Every `frames_per_word` frames it commits the word
`w{k}` (k counting from 0 per stream) spanning those frames, with a Partial before and an
EndOfTurn after it (the server must send neither). `transcribed_seconds` lags the stepped
audio by `delay_frames`; a tick takes `tick_seconds`. Samples starting with POISON make
`push` raise, as a broken stream would; `paused` makes every slot look empty;
`fail_next_join`, `fail_next_tick` and `fail_next_ready` make the next call raise.
"""

from __future__ import annotations

import time

import numpy as np

from engine.events import Commit, EndOfTurn, Partial
from engine.models.contract import ModelInfo
from engine.serving.slots import SlotOutput

POISON = 0.25


class ScriptedSlots:
    def __init__(
        self,
        slots: int = 2,
        sample_rate: int = 1000,
        frame_size: int = 100,
        frames_per_word: int = 2,
        delay_frames: int = 3,
        word_padding: int = 0,
        tick_seconds: float = 0.0,
    ) -> None:
        self.info = ModelInfo(
            name="scripted-slots",
            family="kyutai",
            languages=("en",),
            language=None,
            delay_seconds=delay_frames * frame_size / sample_rate,
            device="cpu",
            dtype="float32",
        )
        self.sample_rate = sample_rate
        self.frame_size = frame_size
        self.slots = slots
        self.frames_per_word = frames_per_word
        self.delay_frames = delay_frames
        self.word_padding = word_padding  # characters added to each word: big messages
        self.tick_seconds = tick_seconds  # compute time of a tick: a pace a reader can follow
        self.paused = False
        self.fail_next_tick = False
        self.fail_next_ready = False
        self.fail_next_join = False
        self.batch_sizes: list[int] = []  # slots stepped, per tick
        self._buffers: dict[int, np.ndarray] = {}
        self._frames: dict[int, int] = {}

    def join(self) -> int | None:
        if self.fail_next_join:
            self.fail_next_join = False
            raise RuntimeError("scripted join failure")
        free = [slot for slot in range(self.slots) if slot not in self._buffers]
        if not free:
            return None
        self._buffers[free[0]] = np.zeros(0, np.float32)
        self._frames[free[0]] = 0
        return free[0]

    def leave(self, slot: int) -> None:
        del self._buffers[slot], self._frames[slot]

    def push(self, slot: int, samples: np.ndarray) -> None:
        if len(samples) and samples[0] == POISON:
            raise ValueError("poisoned samples")
        self._buffers[slot] = np.concatenate([self._buffers[slot], samples])

    def buffered(self, slot: int) -> int:
        return len(self._buffers[slot])

    def ready(self) -> bool:
        if self.fail_next_ready:
            self.fail_next_ready = False
            raise RuntimeError("scripted ready failure")
        return not self.paused and any(len(b) >= self.frame_size for b in self._buffers.values())

    def tick(self) -> dict[int, SlotOutput]:
        if self.fail_next_tick:
            self.fail_next_tick = False
            raise RuntimeError("scripted tick failure")
        time.sleep(self.tick_seconds)
        outputs = {}
        for slot, buffer in self._buffers.items():
            if len(buffer) >= self.frame_size:
                self._buffers[slot] = buffer[self.frame_size :]
                outputs[slot] = self._step(slot)
        self.batch_sizes.append(len(outputs))
        return outputs

    def _step(self, slot: int) -> SlotOutput:
        self._frames[slot] += 1
        frames = self._frames[slot]
        seconds = self.frame_size / self.sample_rate
        events: list = []
        if frames % self.frames_per_word == 0:
            k = frames // self.frames_per_word - 1
            start, end = (frames - self.frames_per_word) * seconds, frames * seconds
            text = f"w{k}" + "x" * self.word_padding
            events = [Partial(text, start), Commit(text, start, end), EndOfTurn(end)]
        transcribed = max(0, frames - self.delay_frames) * seconds
        return SlotOutput(events=events, transcribed_seconds=transcribed, steps=1)
