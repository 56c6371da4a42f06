"""The batch loop: one thread owns the SlotEngine and makes every call to it.

Connections (on the asyncio side) hand it commands through a thread-safe queue; it ticks
while the engine is ready and otherwise sleeps on that queue (no busy spin). Live clients send
out of phase, so a tick may find some of the streams it stepped last time a few milliseconds
short of their next frame: it waits for them up to half a frame, rather than step the others
now and them in a tick of their own (a busy loop stepping part-filled batches falls behind
at fewer streams than full ones would carry). What a tick gives
a stream goes back as protocol messages to the stream's `Outbox`, through
`call_soon_threadsafe`: the loop never waits for a client, so a slow reader or a dead
connection cannot hold up the other streams. An exception in one stream's command or output
ends that stream with an Error; one in a batched tick ends every joined stream (their states
went through the failed pass together), and the loop goes on for the streams that come next.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.events import Commit
from engine.serving import protocol
from engine.serving.metrics import ServerMetrics
from engine.serving.slots import SlotEngine, SlotOutput

log = logging.getLogger(__name__)

CLOSE = object()  # in an Outbox: the loop ended this stream; close after what came before


class Outbox:
    """A connection's outgoing messages, filled from the loop's thread and drained by the
    connection. Bounded: a client that stops reading overflows it, and then `overflowed` is
    set and nothing more is kept (its stream is dropped: a reader that has fallen this far
    behind gets captions too late to be live, and coalescing its Steps would only put off
    the same end while its Words pile up)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop = loop
        self._limit = limit
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.overflowed = asyncio.Event()

    def post(self, messages: list[Any]) -> None:
        """Any thread."""
        if not messages:
            return
        try:
            self._loop.call_soon_threadsafe(self._put, messages)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            pass

    def _put(self, messages: list[Any]) -> None:
        if self.overflowed.is_set():
            return
        if self._queue.qsize() + len(messages) > self._limit:
            self.overflowed.set()
            while not self._queue.empty():  # what the client did not read is dropped now
                self._queue.get_nowait()
            return
        for message in messages:
            self._queue.put_nowait(message)

    async def get(self) -> Any:
        return await self._queue.get()


class Stream:
    """One connection's stream. The connection side writes `sent_samples` and
    `markers_sent`; the loop thread writes the rest."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.slot: int | None = None
        self.sent_samples = 0
        self.stepped_samples = 0
        self.markers_sent = 0
        self.markers_echoed = 0
        self.markers: deque[tuple[float, int]] = deque()  # (stream time, id), loop thread only
        self.transcribed_seconds = 0.0
        self.step_idx = 0

    @property
    def pending_samples(self) -> int:
        """Audio sent and not yet stepped: in the command queue or in the engine's slot."""
        return self.sent_samples - self.stepped_samples


@dataclass(frozen=True)
class _Join:
    stream: Stream
    joined: asyncio.Future
    loop: asyncio.AbstractEventLoop


@dataclass(frozen=True)
class _Push:
    stream: Stream
    samples: np.ndarray


@dataclass(frozen=True)
class _Mark:
    stream: Stream
    seconds: float  # the stream time at which the marker came
    marker_id: int


@dataclass(frozen=True)
class _Leave:
    stream: Stream


_STOP = object()


class BatchLoop:
    def __init__(self, engine: SlotEngine, metrics: ServerMetrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self._commands: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._streams: dict[int, Stream] = {}  # slot → stream, loop thread only
        self._stepped: set[int] = set()  # the slots the last tick stepped, loop thread only
        self._ready_since: float | None = None  # when the loop found a tick to do
        self._gather_seconds = 0.5 * engine.frame_size / engine.sample_rate
        self._thread = threading.Thread(target=self._run, name="livecap-batch-loop", daemon=True)

    @property
    def used_slots(self) -> int:
        return len(self._streams)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._commands.put(_STOP)
        self._thread.join(timeout=10)

    # -- the connections' side (asyncio thread) --------------------------------------------

    async def join(self, stream: Stream) -> bool:
        """Give the stream a slot; False when every slot is busy; what the engine raised
        when it failed to."""
        loop = asyncio.get_running_loop()
        joined = loop.create_future()
        self._commands.put(_Join(stream, joined, loop))
        try:
            return await joined
        except asyncio.CancelledError:  # the connection went while it waited: free the slot
            self.leave(stream)
            raise

    def push(self, stream: Stream, samples: np.ndarray) -> None:
        stream.sent_samples += len(samples)
        self.metrics.audio_received(len(samples))
        self._commands.put(_Push(stream, samples))

    def mark(self, stream: Stream, marker_id: int) -> None:
        stream.markers_sent += 1
        seconds = stream.sent_samples / self.engine.sample_rate
        self._commands.put(_Mark(stream, seconds, marker_id))

    def leave(self, stream: Stream) -> None:
        self._commands.put(_Leave(stream))

    # -- the loop thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if self._ready():
                command = self._next_command(self._straggler_wait())
                if command is None:  # nothing came, or nothing more is worth waiting for
                    self._tick()
                    continue
            else:
                command = self._commands.get()
            if command is _STOP:
                return
            self._apply(command)

    def _ready(self) -> bool:
        try:
            return self.engine.ready()
        except Exception as exc:
            log.exception("the engine's ready() failed")
            self._fail_all(f"the engine failed: {exc}")
            return False

    def _next_command(self, timeout: float) -> Any:
        try:
            if timeout > 0:
                return self._commands.get(timeout=timeout)
            return self._commands.get_nowait()
        except queue.Empty:
            return None

    def _straggler_wait(self) -> float:
        """How long the due tick may wait for commands: while a stream the last tick stepped
        is still short of a whole frame, what is left of half a frame since the tick became
        due; otherwise nothing."""
        now = time.monotonic()
        if self._ready_since is None:
            self._ready_since = now
        try:
            short = any(
                slot in self._streams and self.engine.buffered(slot) < self.engine.frame_size
                for slot in self._stepped
            )
        except Exception:  # the tick will meet the engine's failure and report it
            return 0.0
        return max(0.0, self._ready_since + self._gather_seconds - now) if short else 0.0

    def _apply(self, command: Any) -> None:
        if isinstance(command, _Join):
            self._join(command)
            return
        stream = command.stream
        try:
            if isinstance(command, _Leave):
                self._leave(stream)
            elif stream.slot is None:  # left already: what it still sent is moot
                return
            elif isinstance(command, _Push):
                self.engine.push(stream.slot, command.samples)
            else:
                stream.markers.append((command.seconds, command.marker_id))
                stream.outbox.post(self._echo_markers(stream))
        except Exception as exc:  # one stream's failure must not stop the loop
            log.exception("stream on slot %s failed", stream.slot)
            self._drop(stream, f"the server failed on this stream: {exc}")

    def _join(self, command: _Join) -> None:
        try:
            slot = self.engine.join()
        except Exception as exc:  # the connection tells its client; the loop goes on
            log.exception("joining a slot failed")
            command.loop.call_soon_threadsafe(_resolve, command.joined, exc)
            return
        if slot is not None:
            command.stream.slot = slot
            self._streams[slot] = command.stream
            self.metrics.stream_opened()
        command.loop.call_soon_threadsafe(_resolve, command.joined, slot is not None)

    def _leave(self, stream: Stream) -> None:
        slot = stream.slot
        if slot is None:
            return
        stream.slot = None
        try:
            dropped = self.engine.buffered(slot)
            self.engine.leave(slot)
            self.metrics.stream_closed(dropped)
        finally:  # last: a slot seen free has its stream's figures counted
            del self._streams[slot]

    def _drop(self, stream: Stream, message: str) -> None:
        self.metrics.error("engine")
        stream.outbox.post([protocol.error(message), CLOSE])
        try:
            self._leave(stream)
        except Exception:
            log.exception("freeing slot %s failed", stream.slot)

    def _fail_all(self, message: str) -> None:
        """The engine itself failed: every joined stream's state is unknown now."""
        for stream in list(self._streams.values()):
            self._drop(stream, message)

    def _tick(self) -> None:
        started = time.perf_counter()
        self._stepped, self._ready_since = set(), None
        try:
            outputs = self.engine.tick()
        except Exception as exc:
            log.exception("a batched tick failed")
            self._fail_all(f"the engine failed: {exc}")
            return
        self._stepped = {slot for slot, output in outputs.items() if output.steps}
        frames = sum(output.steps for output in outputs.values())
        self.metrics.tick(time.perf_counter() - started, len(outputs), frames)
        for slot, output in outputs.items():
            stream = self._streams.get(slot)
            if stream is None:
                continue
            try:
                stream.outbox.post(self._messages(stream, output))
            except Exception as exc:
                log.exception("the output of slot %s failed", slot)
                self._drop(stream, f"the server failed on this stream: {exc}")

    def _messages(self, stream: Stream, output: SlotOutput) -> list[Any]:
        """Word + EndWord per Commit (Partials and EndOfTurn have no message in Kyutai's
        protocol), one Step per frame stepped, then the markers that are due."""
        messages: list[Any] = []
        for event in output.events:
            if isinstance(event, Commit):
                messages += [protocol.word(event.text, event.start), protocol.end_word(event.end)]
        frame_size = self.engine.frame_size
        stream.stepped_samples += output.steps * frame_size
        buffered = self.engine.buffered(stream.slot)
        for remaining in range(output.steps - 1, -1, -1):
            messages.append(protocol.step(stream.step_idx, buffered + remaining * frame_size))
            stream.step_idx += 1
        stream.transcribed_seconds = output.transcribed_seconds
        return messages + self._echo_markers(stream)

    def _echo_markers(self, stream: Stream) -> list[Any]:
        due = []
        while stream.markers and stream.markers[0][0] <= stream.transcribed_seconds:
            due.append(protocol.marker(stream.markers.popleft()[1]))
        stream.markers_echoed += len(due)
        return due


def _resolve(joined: asyncio.Future, outcome: bool | Exception) -> None:
    if joined.cancelled():
        return
    if isinstance(outcome, Exception):
        joined.set_exception(outcome)
    else:
        joined.set_result(outcome)
