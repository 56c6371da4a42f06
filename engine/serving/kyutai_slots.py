"""Kyutai STT for many live streams at once (the `SlotEngine` contract of slots.py).

Each slot is one row of batched Mimi and LM states (conv tails and KV rings of `slots` rows,
each row at its own positions) and a `StreamFront` of its own, as a single-stream recognizer
has (silence prefix, pause flush, timeline, words). A tick steps every slot that holds a
whole frame of model audio in one Mimi pass and one LM pass over just those rows: free and
idle slots are neither read nor written. A row's computation never mixes with another's, so
a stream's words are what `KyutaiRecognizer` gives for its audio, whatever the other slots do
(int8 weights: as it gives them with int8 keys and values, which a batch holds where one
stream holds bfloat16 ones; see weights.ring_dtype).

One frame per slot per tick (the server ticks at the frame rate, or faster when behind): no
speculative multi-frame passes, so every step is one row of the batch. A joining stream
starts from a copy of the LM state after the start step (start markers in, first token out),
which is the same for every stream, so joining steps nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.events import Event
from engine.models.contract import LoadOptions
from engine.models.kyutai.config import SAMPLE_RATE
from engine.serving.slots import SlotOutput
from engine.streaming.kyutai_front import StreamFront, skipped_ids
from engine.streaming.kyutai_stream import KyutaiParts, load_parts


@dataclass
class _Stream:
    front: StreamFront
    frames: deque[np.ndarray] = field(default_factory=deque)  # whole frames not yet stepped
    token: int | None = None  # the last text token; None before the stream's first step
    due: list[Event] = field(default_factory=list)  # events owed without a step (a turn end)


class KyutaiSlots:
    """`slots` Kyutai streams stepped together on one loaded model."""

    sample_rate = SAMPLE_RATE

    def __init__(self, parts: KyutaiParts, slots: int, pause_flush: bool = True) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots}")
        model = parts.model
        self.model, self.info, self.slots = model, parts.info, slots
        self.frame_size = model.config.mimi.frame_size
        self.pause_flush = pause_flush
        self._tokenizer = parts.tokenizer
        self._skip_ids = skipped_ids(model.config, parts.tokenizer)
        self._mimi = model.mimi.new_state(rows=slots)
        self._lm = model.lm.new_state(rows=slots, batch=True)
        self._started = model.lm.new_state(batch=True)
        text, codes = model.lm.start_inputs()
        with torch.inference_mode():
            self._start_token = int(model.lm.step(text, codes, self._started).argmax())
        self._streams: list[_Stream | None] = [None] * slots

    def join(self) -> int | None:
        """Claim a free slot with a fresh stream state; None when every slot is busy."""
        slot = next((i for i, stream in enumerate(self._streams) if stream is None), None)
        if slot is None:
            return None
        self.model.mimi.restart_row(self._mimi, slot)
        self.model.lm.restart_row(self._lm, slot, self._started)
        front = StreamFront(self.model.config, self._tokenizer, self._skip_ids, self.pause_flush)
        self._streams[slot] = _Stream(front)
        return slot

    def leave(self, slot: int) -> None:
        """Free the slot; its stream is dropped and it costs nothing until joined again."""
        self._stream(slot)
        self._streams[slot] = None

    def push(self, slot: int, samples: np.ndarray) -> None:
        """Queue stream audio (mono float32 at sample_rate, any length)."""
        stream = self._stream(slot)
        for audio, _ in stream.front.push(samples):
            stream.frames.extend(audio.reshape(-1, self.frame_size))
        stream.due += stream.front.due()

    def buffered(self, slot: int) -> int:
        """Model-audio samples queued and not yet stepped (the stream's own, and the silence
        its pause flushes inserted)."""
        stream = self._stream(slot)
        return len(stream.frames) * self.frame_size + len(stream.front.pending)

    def ready(self) -> bool:
        """Whether a tick would step anything (some joined slot holds a whole frame)."""
        return any(s is not None and (s.frames or s.due) for s in self._streams)

    def tick(self) -> dict[int, SlotOutput]:
        """Step, in one batched pass, every joined slot that holds a whole frame."""
        rows = [i for i, stream in enumerate(self._streams) if stream is not None and stream.frames]
        tokens = self._step(rows) if rows else []
        outputs: dict[int, SlotOutput] = {}
        for slot, stream in enumerate(self._streams):
            if stream is None or not (stream.due or slot in rows):
                continue
            events, stream.due = stream.due, []
            steps = 0
            if slot in rows:
                if stream.token is None:  # its start step's token, as a single stream gives it
                    events += stream.front.words.push(self._start_token, 0.0)
                stream.token = tokens[rows.index(slot)]
                events += stream.front.token(stream.token)
                steps = 1
            outputs[slot] = SlotOutput(events, stream.front.transcribed_seconds(), steps)
        return outputs

    def _step(self, rows: list[int]) -> list[int]:
        """One Mimi pass and one LM pass over the next frame of each of `rows` → their text
        tokens."""
        streams = [self._streams[row] for row in rows]
        audio = np.stack([stream.frames.popleft() for stream in streams])
        previous = [self._start_token if s.token is None else s.token for s in streams]
        model = self.model
        with torch.inference_mode():
            frames = torch.from_numpy(audio).to(model.device)
            codes = model.mimi.encode_rows(frames, self._mimi, rows)[:, 0]  # [rows, codebooks]
            logits = model.lm.step_rows(previous, codes, self._lm, rows)
        return logits.argmax(dim=-1).tolist()

    def _stream(self, slot: int) -> _Stream:
        stream = self._streams[slot] if 0 <= slot < self.slots else None
        if stream is None:
            raise ValueError(f"slot {slot} is not joined")
        return stream


def load_slots(folder: Path, name: str, options: LoadOptions, slots: int) -> KyutaiSlots:
    """A Kyutai STT folder loaded for `slots` streams (device and dtype as for one stream)."""
    return KyutaiSlots(load_parts(folder, name, options), slots, options.pause_flush)
