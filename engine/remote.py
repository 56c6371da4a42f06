"""RemoteRecognizer: captions from a server that speaks Kyutai's streaming ASR protocol (our
`livecap serve`, or Kyutai's own moshi-server) behind the engine contract, so sessions, the
store, exports, the overlay and translation work as with a model on this machine.

The protocol: a websocket at /api/asr-streaming carrying msgpack maps. The client sends
{"type": "Audio", "pcm": [...]} (24 kHz mono) and {"type": "Marker", "id": n}; the server sends
Ready, Word{text, start_time}, EndWord{stop_time}, Marker{id} (echoed once the audio before
it is transcribed, the model's delay included), Step per frame it stepped, and Error{message}.
A word is shown as a Partial when its Word arrives and committed at its EndWord (or at the
next Word, or at the end of the stream).

`feed()` sends and returns at once with what has arrived: a reader thread takes the server's
messages. It waits only while the server is more than MAX_AHEAD_SECONDS behind (a file fed
faster than the server steps), so neither side's memory grows without bound. `flush()` sends
a marker and then silence for the model's delay (the server echoes the marker only once that
much audio follows it), waits for the echo, and closes the stream; `reset()` opens a new one.
Failing to connect is a ModelError; a stream lost mid-way is a fatal Error event that comes
after the words already received, so the session keeps them.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import msgpack
import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from engine.errors import ModelError
from engine.events import Commit, Error, Event, Partial, Word
from engine.models.contract import LoadOptions, ModelInfo

ENDPOINT = "/api/asr-streaming"
API_KEY_HEADER = "kyutai-api-key"
SAMPLE_RATE = 24000
FRAME_SIZE = 1920
KYUTAI_DELAY_SECONDS = 0.5  # Kyutai STT 1B's; a server may state its own in modules_info
MESSAGE_SAMPLES = SAMPLE_RATE  # audio per message at most: one second, as Kyutai's client sends
MAX_AHEAD_SECONDS = 10.0  # audio sent and not yet stepped by the server before feed() waits
END_MARGIN_SECONDS = 1.0  # silence after the end marker beyond the model's delay
CONNECT_SECONDS = 10.0
READY_SECONDS = 3.0  # Kyutai's single-stream server never sends Ready: go on without it
MARKER_SECONDS = 10.0  # for the server to echo the end marker once its silence is sent
STALL_SECONDS = 30.0  # feed() waiting for a server that has fallen MAX_AHEAD_SECONDS behind
CLOSE_SECONDS = 2.0
INFO_SECONDS = 3.0
MAX_MESSAGE_BYTES = 1 << 20

RECONNECT_HINT = (
    "The text so far is kept. Start a new session to reconnect (Start in the app; in a "
    "terminal, run the command again)."
)
_KEY_HINT = (
    "Give the key the server was started with: --api-key KEY (in the app: Server… in Models)."
)


def stream_url(address: str) -> str:
    """The websocket URL for a server address (ws://HOST:PORT → …/api/asr-streaming);
    ModelError saying how to write it when it is not one."""
    parts = urlsplit(address.strip())
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        fixed = urlunsplit(("wss" if scheme == "https" else "ws", *parts[1:]))
        raise ModelError(
            f"{address}: a caption server's address starts with ws:// or wss://.",
            f"Use {fixed}",
        )
    if scheme not in ("ws", "wss") or not parts.hostname or not _port_is_valid(parts):
        raise ModelError(
            f"{address} is not a caption server's address.",
            "Write it as ws://HOST:PORT (or wss://HOST:PORT for a server behind TLS).",
        )
    path = parts.path.rstrip("/") or ENDPOINT
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _port_is_valid(parts) -> bool:
    try:
        parts.port  # noqa: B018 - it raises ValueError for a port that is not a number
    except ValueError:
        return False
    return True


def display_name(address: str) -> str:
    """The address as the user wrote it, without a query (it may hold ?auth_id=KEY) or a
    user:password part: what history, exports and the status bar show."""
    parts = urlsplit(address.strip())
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme.lower(), host, parts.path.rstrip("/"), "", ""))


def load_remote(address: str, options: LoadOptions) -> RemoteRecognizer:
    """Connect to the server at `address`; ModelError (what failed, what to do) when it
    cannot be used."""
    url = stream_url(address)
    if options.progress:
        options.progress("connecting", 0.0)
    facts = _module_facts(url)
    info = ModelInfo(
        name=display_name(address),
        family="remote",
        languages=facts.get("languages", ()),
        language=None,
        delay_seconds=facts.get("delay_seconds", KYUTAI_DELAY_SECONDS),
        device="server",
        dtype="",
    )
    recognizer = RemoteRecognizer(url, info, options.api_key)
    if options.progress:
        options.progress("connecting", 1.0)
    return recognizer


class RemoteRecognizer:
    sample_rate = SAMPLE_RATE
    frame_size = FRAME_SIZE

    def __init__(self, url: str, info: ModelInfo, api_key: str | None = None) -> None:
        self.url = url
        self.info = info
        self._api_key = api_key
        self._stream: _Stream | None = None
        self._fed = 0  # samples of this stream fed
        self._failed = False  # the stream's failure was reported: the rest of it is dropped
        self.reset()

    def feed(self, samples: np.ndarray) -> list[Event]:
        if self._failed:
            return []
        if self._stream is None:  # fed again after flush(): a new stream
            self.reset()
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._stream.send_audio(samples)
        self._fed += samples.size
        return self._collect()

    def flush(self) -> list[Event]:
        if self._failed or self._stream is None:
            return []
        stream, end = self._stream, self._fed / SAMPLE_RATE
        marker = stream.send_marker()
        silence = round((self.info.delay_seconds + END_MARGIN_SECONDS) * SAMPLE_RATE)
        stream.send_audio(np.zeros(silence, np.float32))
        echoed = stream.wait_for_marker(marker, MARKER_SECONDS)
        events = self._collect()
        if self._failed:
            return events
        events += stream.commit(end)
        stream.close()
        self._stream = None
        if not echoed:
            events.append(
                Error(
                    f"The caption server at {self.info.name} did not confirm the end of the "
                    f"stream within {MARKER_SECONDS:g} s: the last words may be missing.",
                    "The rest of the text is kept. If it keeps happening, the server is "
                    "overloaded: try again later or use another server.",
                    fatal=False,
                )
            )
        return events

    def reset(self) -> None:
        """End the current stream (if any) and open a new one: ModelError if the server
        cannot be reached, refuses the key, or has no free stream."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        stream = _Stream(self.url, self.info.name, self._api_key)
        failure = stream.wait_until_ready(READY_SECONDS)
        if failure is not None:
            stream.close()
            raise failure
        self._stream, self._fed, self._failed = stream, 0, False

    def _collect(self) -> list[Event]:
        """What arrived since the last call; on a failed stream, the word being shown
        committed and then a fatal Error."""
        stream = self._stream
        events, failure = stream.take()
        if failure is None:
            return events
        self._failed = True
        stream.close()
        self._stream = None
        minutes, seconds = divmod(int(self._fed / SAMPLE_RATE), 60)
        message = f"{failure.message.rstrip('.')} ({minutes}:{seconds:02} into the stream)."
        return events + stream.commit(self._fed / SAMPLE_RATE) + [Error(message, RECONNECT_HINT)]


class _Stream:
    """One websocket stream: the caller's thread sends, a reader thread turns the server's
    messages into events (under `lock`, which every shared field is read and written with)."""

    def __init__(self, url: str, name: str, api_key: str | None) -> None:
        self.name = name
        self.socket = _connect(url, name, api_key)
        self.lock = threading.Condition()
        self.events: list[Event] = []
        self.word: tuple[str, float] | None = None  # shown as a Partial, not yet ended
        self.steps = 0  # frames the server stepped
        self.sent = 0  # samples sent
        self.markers = 0  # markers sent (their ids count up from 1)
        self.echoed: set[int] = set()
        self.ready = False
        self.failure: ModelError | None = None
        self.ended = False  # the reader stopped: nothing more will arrive
        self.closing = False  # we closed it, so its end is no failure
        self.reader = threading.Thread(target=self._read, name=f"remote-{name}", daemon=True)
        self.reader.start()

    # -- the caller's side ------------------------------------------------------------------
    def wait_until_ready(self, timeout: float) -> ModelError | None:
        with self.lock:
            self.lock.wait_for(lambda: self.ready or self.failure or self.ended, timeout)
            if self.failure is None and self.ended:
                return self._lost()
            return self.failure

    def send_audio(self, samples: np.ndarray) -> None:
        for start in range(0, samples.size, MESSAGE_SAMPLES):
            chunk = samples[start : start + MESSAGE_SAMPLES]
            if not self._wait_for_room():
                return
            self._send({"type": "Audio", "pcm": chunk.tolist()})
            self.sent += chunk.size

    def send_marker(self) -> int:
        self.markers += 1
        self._send({"type": "Marker", "id": self.markers})
        return self.markers

    def wait_for_marker(self, marker: int, timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(
                lambda: marker in self.echoed or self.failure or self.ended, timeout
            ) and (marker in self.echoed)

    def take(self) -> tuple[list[Event], ModelError | None]:
        with self.lock:
            events, self.events = self.events, []
            return events, self.failure

    def commit(self, end: float) -> list[Event]:
        """The word being shown, committed (the stream ends at `end` seconds)."""
        with self.lock:
            return self._commit(end)

    def close(self) -> None:
        with self.lock:
            self.closing = True
        self.socket.close()
        self.reader.join(CLOSE_SECONDS)

    def _wait_for_room(self) -> bool:
        """Wait while the server is over MAX_AHEAD_SECONDS behind; False once the stream
        failed (a server that stops stepping for STALL_SECONDS fails it)."""
        ahead = round(MAX_AHEAD_SECONDS * SAMPLE_RATE)
        with self.lock:
            if not self.lock.wait_for(
                lambda: self.sent - self.steps * FRAME_SIZE <= ahead or self.failure or self.ended,
                STALL_SECONDS,
            ):
                self.failure = ModelError(
                    f"The caption server at {self.name} stopped transcribing: it is "
                    f"{MAX_AHEAD_SECONDS:g} s behind and stepped nothing for {STALL_SECONDS:g} s.",
                    "It may be overloaded; try again later or use another server.",
                )
            return self.failure is None and not self.ended

    def _send(self, message: dict) -> None:
        try:
            self.socket.send(msgpack.packb(message, use_single_float=True))
        except ConnectionClosed:
            self.reader.join(CLOSE_SECONDS)  # the server's Error, if it sent one, says why
            with self.lock:
                self.failure = self.failure or self._lost()

    # -- the reader thread ------------------------------------------------------------------
    def _read(self) -> None:
        failure = None
        try:
            for raw in self.socket:
                if isinstance(raw, bytes):  # Kyutai's protocol is binary; text is not for us
                    self._take_message(msgpack.unpackb(raw, raw=False))
        except ConnectionClosed:
            pass
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            failure = ModelError(
                f"The caption server at {self.name} sent a message that is not Kyutai's "
                f"streaming protocol ({type(exc).__name__}: {exc}).",
                "Check that the address is a Livecap or Kyutai speech-to-text server.",
            )
            self.socket.close()
        with self.lock:
            self.ended = True
            if self.failure is None and not self.closing:
                self.failure = failure or self._lost()
            self.lock.notify_all()

    def _take_message(self, message: object) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        with self.lock:
            if kind == "Word":
                self._word(str(message["text"]), float(message["start_time"]))
            elif kind == "EndWord":
                self.events += self._commit(float(message["stop_time"]))
            elif kind == "Step":
                self.steps += 1
            elif kind == "Marker":
                self.echoed.add(int(message["id"]))
            elif kind == "Ready":
                self.ready = True
            elif kind == "Error":
                self.failure = self.failure or _server_error(self.name, str(message.get("message")))
            self.lock.notify_all()

    def _word(self, text: str, start: float) -> None:
        self.events += self._commit(start)
        if text.strip():
            self.word = (text.strip(), start)
            self.events.append(Partial(text.strip(), start))

    def _commit(self, end: float) -> list[Event]:
        if self.word is None:
            return []
        (text, start), self.word = self.word, None
        end = max(end, start)
        return [Commit(text, start, end, (Word(text, start, end),))]

    def _lost(self) -> ModelError:
        return ModelError(
            f"The connection to the caption server at {self.name} was lost.",
            "Check that the server is still running and reachable.",
        )


def _connect(url: str, name: str, api_key: str | None) -> ClientConnection:
    headers = {API_KEY_HEADER: api_key} if api_key else None
    try:
        # Entered as a context manager, as websockets 17 asks (a bare connection is
        # deprecated); close() ends it.
        return connect(
            url,
            additional_headers=headers,
            open_timeout=CONNECT_SECONDS,
            close_timeout=CLOSE_SECONDS,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,  # float audio hardly compresses; deflate would cost CPU
        ).__enter__()
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            given = "refused the API key" if api_key else "needs an API key and none was given"
            raise ModelError(f"The caption server at {name} {given}.", _KEY_HINT) from None
        raise ModelError(
            f"The caption server at {name} refused the stream (HTTP {status}).",
            "Check the address: it should be a Livecap or Kyutai speech-to-text server.",
        ) from None
    except InvalidURI as exc:
        raise ModelError(
            f"{name} is not a caption server's address ({exc}).",
            "Write it as ws://HOST:PORT (or wss://HOST:PORT for a server behind TLS).",
        ) from None
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        reason = {
            ConnectionRefusedError: "the connection was refused",
            TimeoutError: f"no answer within {CONNECT_SECONDS:g} s",
        }.get(type(exc), str(exc) or type(exc).__name__)
        raise ModelError(
            f"Cannot connect to the caption server at {name}: {reason}.",
            "Check that the server is running (`livecap serve`) and its address and port.",
        ) from None


def _server_error(name: str, message: str) -> ModelError:
    if "no free channels" in message.lower():
        return ModelError(
            f"Every stream of the caption server at {name} is in use (no free channels).",
            "Try again when another stream ends, or use a server with more streams "
            "(`livecap serve --batch N`).",
        )
    return ModelError(
        f"The caption server at {name} ended the stream: {message}",
        f"If it is about the key: {_KEY_HINT}",
    )


def _module_facts(url: str) -> dict:
    """What the server says of its streaming module in GET /api/modules_info, where it says
    it: `delay_seconds` and `languages`. Kyutai's server lists only paths and slots, so
    nothing here is required: {} when the server says nothing usable."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    info_url = urlunsplit((scheme, parts.netloc, "/api/modules_info", "", ""))
    try:
        with urllib.request.urlopen(info_url, timeout=INFO_SECONDS) as response:
            modules = json.load(response)
    except (OSError, ValueError):
        return {}
    modules = modules if isinstance(modules, list) else [modules]
    mine = [m for m in modules if isinstance(m, dict) and m.get("path") == parts.path]
    module = mine[0] if mine else modules[0] if len(modules) == 1 else None
    return _facts(module) if isinstance(module, dict) else {}


def _facts(module: dict) -> dict:
    facts: dict = {}
    try:
        delay = float(module["delay_seconds"])  # Kyutai's server writes numbers as strings
        if 0 <= delay < 60:
            facts["delay_seconds"] = delay
    except (KeyError, TypeError, ValueError):
        pass
    languages = module.get("languages")
    if isinstance(languages, str):
        languages = [code.strip() for code in languages.split(",") if code.strip()]
    if isinstance(languages, list) and all(isinstance(code, str) for code in languages):
        facts["languages"] = tuple(languages)
    return facts
