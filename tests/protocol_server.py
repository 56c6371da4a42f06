"""A scripted server speaking Kyutai's streaming ASR protocol, on loopback, for client tests.

It implements the protocol as specified (issue #16), not any server's code: a websocket at
/api/asr-streaming carrying msgpack maps. It sends Ready, then, as the stream's audio arrives
frame by frame, a Step per 1920-sample frame, each scripted word's Word once the audio has
passed its start plus `delay`, and its EndWord once past its end plus `delay`; it echoes a
Marker once `delay` seconds of audio followed it. It can refuse keys (HTTP 401 as Kyutai's
server does, or an Error message), be busy ("no free channels"), drop the connection after
some audio, never echo markers, or stop stepping. It records what it received.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field

import msgpack
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

RATE = 24000
FRAME = 1920


@dataclass
class Script:
    words: list[tuple[str, float, float]] = field(default_factory=list)  # text, start, end
    delay: float = 0.5  # seconds of audio after a word (or a marker) before it is sent
    keys: set[str] | None = None  # None: any client is let in
    refuse_with: str = "status"  # a wrong key gets an HTTP 401 ("status") or an Error ("error")
    busy: bool = False  # every stream slot taken: Error "no free channels", then close
    ready: bool = True  # send Ready (Kyutai's single-stream server does not)
    drop_after: float | None = None  # cut the TCP connection after this much audio (s)
    echo_markers: bool = True
    step_until: float | None = None  # stop stepping (and answering) past this much audio (s)
    modules_info: object = None  # the JSON GET /api/modules_info answers (None: 404)


@dataclass
class Received:
    """What one stream sent."""

    key: str | None  # the kyutai-api-key header
    path: str
    samples: int = 0
    markers: list[tuple[int, int]] = field(default_factory=list)  # id, samples before it
    echoed: list[int] = field(default_factory=list)  # marker ids sent back
    audio_messages: list[int] = field(default_factory=list)  # samples in each
    closed: threading.Event = field(default_factory=threading.Event)


class ProtocolServer:
    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.streams: list[Received] = []
        self._server = serve(self._handle, "127.0.0.1", 0, process_request=self._check)
        self.port = self._server.socket.getsockname()[1]
        self.address = f"ws://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ProtocolServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._thread.join(5)

    def _check(self, connection: ServerConnection, request):
        if request.path == "/api/modules_info":
            if self.script.modules_info is None:
                return connection.respond(404, "no modules info\n")
            return connection.respond(200, json.dumps(self.script.modules_info))
        keys = self.script.keys
        key = request.headers.get("kyutai-api-key")
        if keys is not None and key not in keys and self.script.refuse_with == "status":
            return connection.respond(401, "unauthorized\n")
        return None

    def _handle(self, connection: ServerConnection) -> None:
        script = self.script
        request = connection.request
        received = Received(request.headers.get("kyutai-api-key"), request.path)
        self.streams.append(received)
        try:
            if script.busy:
                return self._send(connection, {"type": "Error", "message": "no free channels"})
            if script.keys is not None and received.key not in script.keys:
                return self._send(connection, {"type": "Error", "message": "invalid api key"})
            if script.ready:
                self._send(connection, {"type": "Ready"})
            self._stream(connection, received)
        except ConnectionClosed:
            pass
        finally:
            received.closed.set()

    def _stream(self, connection: ServerConnection, received: Received) -> None:
        script = self.script
        stepped = 0  # frames
        said = ended = 0  # words whose Word / EndWord were sent
        for raw in connection:
            message = msgpack.unpackb(raw, raw=False)
            if message["type"] == "Marker":
                received.markers.append((message["id"], received.samples))
                continue
            received.audio_messages.append(len(message["pcm"]))
            received.samples += len(message["pcm"])
            if script.drop_after is not None and received.samples >= script.drop_after * RATE:
                connection.socket.shutdown(socket.SHUT_RDWR)  # no close frame: a lost link
                return
            while (stepped + 1) * FRAME <= received.samples:
                if script.step_until is not None and stepped * FRAME >= script.step_until * RATE:
                    break
                stepped += 1
                now = stepped * FRAME / RATE - script.delay  # stream time fully transcribed
                self._send(
                    connection, {"type": "Step", "step_idx": stepped, "prs": [], "buffered_pcm": 0}
                )
                while said < len(script.words) and script.words[said][1] <= now:
                    text, start, _ = script.words[said]
                    self._send(connection, {"type": "Word", "text": text, "start_time": start})
                    said += 1
                while ended < said and script.words[ended][2] <= now:
                    self._send(connection, {"type": "EndWord", "stop_time": script.words[ended][2]})
                    ended += 1
                for marker, before in received.markers:
                    due = script.echo_markers and before / RATE <= now
                    if due and marker not in received.echoed:
                        self._send(connection, {"type": "Marker", "id": marker})
                        received.echoed.append(marker)

    @staticmethod
    def _send(connection: ServerConnection, message: dict) -> None:
        connection.send(msgpack.packb(message))  # times as doubles, as Kyutai's server sends
