"""The server's ASGI app: Kyutai's `/api/asr-streaming` websocket on a batched SlotEngine,
with `/api/modules_info` and `/metrics`.

`build_app` makes the whole app from an engine or a function that loads one (called at
startup, so that a Ray Serve replica loads its own engine in its own process). Every limit
here ends only the stream that broke it, with an Error that says which, then a close: the
protocol cannot tell a client that part of its audio was skipped, so a stream that went on
after a refused message would carry a silent hole and shifted times.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import PlainTextResponse
from starlette.websockets import WebSocketDisconnect

from engine import openmp
from engine.serving import protocol
from engine.serving.loop import CLOSE, BatchLoop, Outbox, Stream
from engine.serving.metrics import ServerMetrics
from engine.serving.slots import SlotEngine

log = logging.getLogger(__name__)

STREAMING_PATH = "/api/asr-streaming"
API_KEY_HEADER = "kyutai-api-key"
API_KEY_QUERY = "auth_id"
NO_FREE_CHANNELS = "no free channels"  # Kyutai's server's words: clients may match on them


@dataclass(frozen=True)
class ServeSettings:
    api_keys: frozenset[str] = frozenset()  # empty: no key asked (the CLI allows it on loopback)
    # Kyutai's file client sends 35 s of silence at once after its last marker
    max_buffer_seconds: float = 60.0
    max_frame_bytes: int = 4 * 1024 * 1024  # about 35 s of float32 pcm in one Audio message
    max_outbound_messages: int = 4096  # about 5 minutes of Steps for a client that stopped reading
    max_pending_markers: int = 1024
    idle_timeout_seconds: float = 120.0  # no message and nothing left to transcribe
    close_timeout_seconds: float = 5.0  # for the last Error to reach a client that reads slowly


@dataclass(frozen=True)
class Ending:
    """Why a stream ends: `message` for its last Error (None: just close) and the close code."""

    message: str | None
    code: int


class StreamServer:
    def __init__(self, engine: SlotEngine, settings: ServeSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = ServerMetrics(engine.slots, engine.sample_rate)
        self.batch = BatchLoop(engine, self.metrics)
        self._max_buffer_samples = int(settings.max_buffer_seconds * engine.sample_rate)

    def modules_info(self) -> list[dict[str, str]]:
        """Shaped as Kyutai's server gives it: one map per module, every value a string."""
        return [
            {
                "type": "batched_asr",
                "path": STREAMING_PATH,
                "lm": self.engine.info.name,
                "used_slots": str(self.batch.used_slots),
                "total_slots": str(self.engine.slots),
            }
        ]

    async def serve_stream(self, websocket: WebSocket) -> None:
        await websocket.accept()
        refusal = self._refusal(websocket)
        if refusal is not None:
            self.metrics.error("auth")
            await self._close(websocket, Ending(refusal, protocol.CLOSE_POLICY))
            return
        stream = Stream(Outbox(asyncio.get_running_loop(), self.settings.max_outbound_messages))
        try:
            joined = await self.batch.join(stream)
        except Exception as exc:
            self.metrics.error("engine")
            message = f"the server failed to open a stream: {exc}"
            await self._close(websocket, Ending(message, protocol.CLOSE_SERVER_ERROR))
            return
        if not joined:
            self.metrics.error("capacity")
            await self._close(websocket, Ending(NO_FREE_CHANNELS, protocol.CLOSE_TRY_AGAIN))
            return
        try:
            await websocket.send_bytes(protocol.encode(protocol.ready()))
            ending = await self._run(websocket, stream)
        except (WebSocketDisconnect, OSError):
            ending = None
        finally:
            self.batch.leave(stream)
        if ending is not None:
            await self._close(websocket, ending)

    def _refusal(self, websocket: WebSocket) -> str | None:
        keys = self.settings.api_keys
        if not keys:
            return None
        # the header wins over the query, as on Kyutai's server
        key = websocket.headers.get(API_KEY_HEADER) or websocket.query_params.get(API_KEY_QUERY)
        if key is None:
            return (
                f"no API key: send it in the '{API_KEY_HEADER}' header "
                f"or as ?{API_KEY_QUERY}=KEY in the URL"
            )
        if not any(hmac.compare_digest(key.encode(), known.encode()) for known in keys):
            return "wrong API key: ask the server's operator for a valid one"
        return None

    async def _run(self, websocket: WebSocket, stream: Stream) -> Ending | None:
        """Read the client and write its outbox until one of them ends the stream."""
        receiving = asyncio.create_task(self._receive(websocket, stream))
        sending = asyncio.create_task(self._send(websocket, stream.outbox))
        overflowing = asyncio.create_task(stream.outbox.overflowed.wait())
        tasks = (overflowing, receiving, sending)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if overflowing.done() and not overflowing.cancelled():
            self.metrics.error("slow_reader")
            limit = self.settings.max_outbound_messages
            return Ending(
                f"this client stopped reading: more than {limit} messages were waiting for "
                "it, so its stream was dropped (read the server's messages as they come)",
                protocol.CLOSE_POLICY,
            )
        for task in (receiving, sending):
            if task.done() and not task.cancelled():
                error = task.exception()
                if error is None:
                    return task.result()
                if isinstance(error, WebSocketDisconnect | OSError):
                    return None
                log.error("stream failed", exc_info=error)
                return Ending(
                    f"the server failed on this stream: {error}", protocol.CLOSE_SERVER_ERROR
                )
        return None

    async def _receive(self, websocket: WebSocket, stream: Stream) -> Ending | None:
        while True:
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                async with asyncio.timeout(self.settings.idle_timeout_seconds):
                    message = await websocket.receive()
            except TimeoutError:
                if stream.pending_samples or stream.markers_sent > stream.markers_echoed:
                    continue  # the client waits for us, not we for it
                self.metrics.error("idle")
                return Ending(
                    f"nothing came for {self.settings.idle_timeout_seconds:g} s: "
                    "the stream was closed to free its slot",
                    protocol.CLOSE_POLICY,
                )
            if message["type"] == "websocket.disconnect":
                return None
            ending = self._take(stream, message.get("bytes"))
            if ending is not None:
                return ending

    def _take(self, stream: Stream, frame: bytes | None) -> Ending | None:
        """Hand one client frame to the batch loop; an Ending when it breaks a rule."""
        if frame is None:
            self.metrics.error("protocol")
            return Ending("a text frame: send binary msgpack frames", protocol.CLOSE_UNSUPPORTED)
        try:
            incoming = protocol.decode(frame, self.settings.max_frame_bytes)
        except protocol.ProtocolError as exc:
            self.metrics.error("protocol")
            return Ending(exc.message, exc.code)
        if isinstance(incoming, protocol.AudioIn):
            samples = len(incoming.pcm)
            if stream.pending_samples + samples > self._max_buffer_samples:
                self.metrics.error("buffer", dropped_samples=samples)
                return Ending(
                    f"more than {self.settings.max_buffer_seconds:g} s of this stream's audio "
                    "would be waiting to be transcribed: send audio no faster than the "
                    "server transcribes it (watch Step's buffered_pcm)",
                    protocol.CLOSE_POLICY,
                )
            self.batch.push(stream, incoming.pcm)
        elif isinstance(incoming, protocol.MarkerIn):
            if stream.markers_sent - stream.markers_echoed >= self.settings.max_pending_markers:
                self.metrics.error("protocol")
                return Ending(
                    f"more than {self.settings.max_pending_markers} markers wait for their "
                    "echo: wait for the echoes before sending more",
                    protocol.CLOSE_POLICY,
                )
            self.batch.mark(stream, incoming.id)
        return None

    async def _send(self, websocket: WebSocket, outbox: Outbox) -> Ending:
        while True:
            message = await outbox.get()
            if message is CLOSE:  # the loop ended the stream; its Error went just before
                return Ending(None, protocol.CLOSE_SERVER_ERROR)
            await websocket.send_bytes(protocol.encode(message))

    async def _close(self, websocket: WebSocket, ending: Ending) -> None:
        """The last Error, then the close; given up after a while for a client that does not
        read (the connection is then dropped by the ASGI server)."""
        reason = (ending.message or "").encode()[:120].decode(errors="ignore")
        try:
            async with asyncio.timeout(self.settings.close_timeout_seconds):
                if ending.message is not None:
                    await websocket.send_bytes(protocol.encode(protocol.error(ending.message)))
                await websocket.close(ending.code, reason)
        except (TimeoutError, WebSocketDisconnect, OSError, RuntimeError):
            pass  # the client is gone or does not read: nothing more can reach it


def build_app(
    engine: SlotEngine | Callable[[], SlotEngine], settings: ServeSettings | None = None
) -> FastAPI:
    """The app over `engine`, or over what `engine()` returns at startup."""
    settings = settings or ServeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        slot_engine = engine if hasattr(engine, "tick") else engine()
        openmp.release_workers()  # this thread loaded the model; the batch loop steps it
        app.state.server = StreamServer(slot_engine, settings)
        app.state.server.batch.start()
        try:
            yield
        finally:
            app.state.server.batch.stop()

    app = FastAPI(title="Livecap server", lifespan=lifespan)

    @app.websocket(STREAMING_PATH)
    async def asr_streaming(websocket: WebSocket) -> None:
        await websocket.app.state.server.serve_stream(websocket)

    @app.get("/api/modules_info")
    async def modules_info(request: Request) -> list[dict[str, str]]:
        return request.app.state.server.modules_info()

    @app.get("/metrics")
    async def metrics(request: Request) -> PlainTextResponse:
        text = request.app.state.server.metrics.text()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    return app
