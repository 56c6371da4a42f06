"""`livecap serve`: the batched Kyutai engine behind Kyutai's streaming websocket protocol,
on an embedded uvicorn, one process on one machine.

Everything a user can get wrong (keys, address, port, model) fails before the model loads,
or as the model loads, with a LivecapError: main.py prints it and exits with status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from functools import partial
from pathlib import Path

import uvicorn  # here, not at serve(): a missing package must fail before the model loads

from engine.errors import LivecapError, ModelError
from engine.models.contract import LoadOptions
from engine.serving.app import STREAMING_PATH, ServeSettings, build_app
from engine.serving.slots import SlotEngine

KYUTAI_MODEL_TYPE = "kyutai_speech_to_text"


def read_api_keys(keys: list[str], key_files: list[str]) -> frozenset[str]:
    """The keys given on the command line and those in the files, one a line (blank lines and
    lines starting with # skipped)."""
    found = {key.strip() for key in keys}
    for name in key_files:
        try:
            lines = Path(name).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise LivecapError(f"No such key file: {name}", "Check --api-key-file.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise LivecapError(f"Cannot read the key file {name}: {exc}", "Check it.") from None
        file_keys = {line.strip() for line in lines if line.strip() and line[:1] != "#"}
        if not file_keys:
            raise LivecapError(f"{name} holds no API key.", "Write one key a line in it.")
        found |= file_keys
    if "" in found:
        raise LivecapError("An empty API key was given.", "Give --api-key a non-empty key.")
    return frozenset(found)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: it may be reachable from outside
        return False


def check_exposure(host: str, keys: frozenset[str]) -> None:
    if not keys and not is_loopback(host):
        raise LivecapError(
            f"Serving on {host} without an API key would let anyone who reaches it use the server.",
            "Give --api-key KEY or --api-key-file FILE, or serve on 127.0.0.1 (the default).",
        )


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a port in use fails at once."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise LivecapError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
            "Choose another --port, or stop what uses it; check --host.",
        ) from None
    return sock


def load_slot_engine(model: str, options: LoadOptions, slots: int) -> SlotEngine:
    from engine.hub import resolve_model
    from engine.recognizer import read_model_type

    folder = resolve_model(model, progress=options.progress)
    model_type = read_model_type(folder)
    if model_type != KYUTAI_MODEL_TYPE:
        raise ModelError(
            f"{model} is a '{model_type}' model; serving needs a Kyutai STT model.",
            "Serve a Kyutai speech-to-text model, e.g. kyutai/stt-1b-en_fr.",
        )
    try:
        from engine.serving.kyutai_slots import load_slots
    except ImportError as exc:
        raise ModelError(
            f"The batched Kyutai engine is not available in this build ({exc}).",
            "Update Livecap.",
        ) from None
    return load_slots(folder, model, options, slots)


def serve(engine: SlotEngine, settings: ServeSettings, sock: socket.socket) -> int:
    host, port = sock.getsockname()[:2]
    where = f"[{host}]" if ":" in host else host
    print(
        f"livecap: serving {engine.info.name} ({engine.slots} streams at most) at "
        f"ws://{where}:{port}{STREAMING_PATH}",
        file=sys.stderr,
    )
    app = build_app(engine, settings)
    # uvicorn refuses frames past ws_max_size by closing (1009, no message); above our own
    # frame limit, so that a frame a little too big gets an Error that says what to do
    config = uvicorn.Config(app, ws_max_size=2 * settings.max_frame_bytes, log_level="info")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def serve_on_ray(args: argparse.Namespace, options: LoadOptions, keys: frozenset[str]) -> int:
    """`livecap serve --ray`: the same app on every replica of a running Ray cluster, each
    replica loading the model itself."""
    try:
        from engine.serving.ray_app import run_on_cluster
    except ImportError as exc:
        raise LivecapError(
            f"Ray Serve is not installed ({exc}).", "Install it: pip install 'livecap[cluster]'."
        ) from None
    factory = partial(load_slot_engine, args.model, options, args.batch)
    settings = ServeSettings(api_keys=keys)
    return run_on_cluster(
        factory, args.batch, settings, args.replicas, args.host, args.port, args.ray_address
    )


def ray_application(args: dict[str, str]):
    """For Ray Serve's own command line: `serve run engine.cli.serve:ray_application
    model=MODEL [batch=8] [replicas=1] [dtype=auto] [device=auto] [api_key=KEY]`."""
    from engine.serving.ray_app import application

    slots = int(args.get("batch", 8))
    options = LoadOptions(device=args.get("device", "auto"), dtype=args.get("dtype", "auto"))
    keys = frozenset(filter(None, [args.get("api_key", "")]))
    factory = partial(load_slot_engine, args["model"], options, slots)
    return application(factory, slots, ServeSettings(api_keys=keys), int(args.get("replicas", 1)))
