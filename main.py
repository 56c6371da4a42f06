"""Livecap's entry point: no arguments open the app; subcommands work without a window.

    livecap                      the desktop app
    livecap devices              input devices, system-audio sources marked
    livecap models               the model catalogue and the local model cache
    livecap transcribe AUDIO     a sound file to a transcript (txt, srt, vtt, json)
    livecap translate [FILE]     lines of text to their translations, one line each
    livecap live                 live captions from an input device in the terminal
    livecap bench                per-frame speed of a model on this machine
    livecap serve                many live streams on one machine, over Kyutai's protocol

Subcommands never import Qt. Errors a user can act on print what was wrong and what to do,
and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from engine import openmp

openmp.configure()  # before anything imports torch

from engine.errors import AudioError, LivecapError  # noqa: E402
from engine.transcript import FORMATS  # noqa: E402

ERROR_EXIT = 2

# int4 is Kyutai only, and only when asked for: its accuracy on real speech is unverified.
DTYPES = ("auto", "float32", "bfloat16", "int8", "int4")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        from app.main import run

        return run()
    try:
        return args.handler(args)
    except LivecapError as exc:
        print(f"livecap: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(exc.hint, file=sys.stderr)
        return ERROR_EXIT
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livecap",
        description="Live captions and translation with local speech models. "
        "Without a subcommand, opens the app.",
    )
    parser.add_argument("--version", action="version", version=f"livecap {livecap_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    devices = commands.add_parser("devices", help="list audio inputs")
    devices.set_defaults(handler=cmd_devices)

    models = commands.add_parser("models", help="list known and downloaded models")
    models.set_defaults(handler=cmd_models)

    transcribe = commands.add_parser("transcribe", help="transcribe a sound file")
    transcribe.add_argument("audio", metavar="AUDIO", help="a WAV, FLAC or OGG file")
    add_engine_options(transcribe)
    transcribe.add_argument(
        "--offline",
        action="store_true",
        help="chunked models: decode whole windows (at most 20 s) instead of the live policy",
    )
    transcribe.add_argument(
        "--pause-flush",
        action="store_true",
        help="streaming models: push the words out at each pause as live captions do "
        "(inserts silence, so the words may differ from the model's own on this audio)",
    )
    transcribe.add_argument("--format", choices=FORMATS, default="txt", help="default: txt")
    transcribe.add_argument("-o", "--output", metavar="OUT", help="file to write (default: stdout)")
    transcribe.set_defaults(handler=cmd_transcribe)

    translate = commands.add_parser("translate", help="translate lines of text")
    translate.add_argument(
        "file", metavar="FILE", nargs="?", help="a UTF-8 text file (default: standard input)"
    )
    translate.add_argument(
        "--model", metavar="MODEL", required=True, help="a text translation model (folder or id)"
    )
    translate.add_argument(
        "--source-lang", metavar="LANG", help="the text's language (multilingual models)"
    )
    translate.add_argument(
        "--target-lang", metavar="LANG", help="language to translate into (multilingual models)"
    )
    translate.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    translate.add_argument("--dtype", choices=DTYPES, default="auto")
    translate.add_argument("--beams", metavar="N", type=int, help="beam width (default: model's)")
    translate.set_defaults(handler=cmd_translate)

    live = commands.add_parser("live", help="live captions from an input device")
    live.add_argument(
        "--input",
        metavar="DEVICE",
        help="device index or name from `livecap devices` (default: the default input)",
    )
    add_engine_options(live)
    live.set_defaults(handler=cmd_live)

    bench = commands.add_parser("bench", help="measure a model's speed on this machine")
    bench.add_argument("--model", metavar="MODEL", required=True, help="folder or Hub repo id")
    bench.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    bench.add_argument("--dtype", choices=DTYPES, default="auto")
    bench.add_argument(
        "--seconds", metavar="N", type=positive_seconds, default=30.0, help="audio to run"
    )
    bench.add_argument(
        "--target-lang", metavar="LANG", help="translation models: the language to produce"
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(handler=cmd_bench)

    serve = commands.add_parser(
        "serve", help="serve live streams over Kyutai's websocket protocol (/api/asr-streaming)"
    )
    serve.add_argument("--model", metavar="MODEL", required=True, help="a Kyutai STT model")
    serve.add_argument(
        "--batch", metavar="N", type=positive_int, default=8, help="streams at most (default: 8)"
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only)",
    )
    serve.add_argument("--port", type=port_number, default=8080, help="default: 8080")
    serve.add_argument(
        "--api-key",
        metavar="KEY",
        action="append",
        default=[],
        help="a key clients must send (kyutai-api-key header or ?auth_id=); repeatable; "
        "required on any address but loopback",
    )
    serve.add_argument(
        "--api-key-file",
        metavar="FILE",
        action="append",
        default=[],
        help="a file of keys, one a line; repeatable",
    )
    serve.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    serve.add_argument("--dtype", choices=DTYPES, default="auto")
    serve.add_argument(
        "--ray",
        action="store_true",
        help="deploy on a running Ray cluster (Ray Serve): --batch streams per replica",
    )
    serve.add_argument(
        "--replicas", metavar="N", type=positive_int, default=1, help="with --ray (default: 1)"
    )
    serve.add_argument(
        "--ray-address", metavar="ADDRESS", default="auto", help="with --ray (default: auto)"
    )
    serve.set_defaults(handler=cmd_serve)
    return parser


def livecap_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("livecap")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(version unknown: not installed)"


def positive_seconds(text: str) -> float:
    """A duration in seconds, more than zero (argparse turns the error into exit status 2)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds more than 0, not {text!r} (for example --seconds 30)"
        )
    return seconds


def positive_int(text: str) -> int:
    """A whole number more than zero (argparse turns the error into exit status 2)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number more than 0, not {text!r}")
    return int(text)


def port_number(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, not {text!r}")
    return int(text)


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="MODEL",
        required=True,
        help="a model folder, a Hugging Face repo id, or a caption server: ws://HOST:PORT "
        "(livecap serve, or Kyutai's moshi-server)",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        default=os.environ.get("LIVECAP_API_KEY"),
        help="the caption server's key (default: $LIVECAP_API_KEY, which keeps it out of "
        "the process list)",
    )
    parser.add_argument(
        "--translate-model",
        metavar="MODEL",
        help="a translation model: a text one (opus-mt, m2m100, nllb) translates the "
        "captions; a speech one runs alongside on the audio",
    )
    parser.add_argument(
        "--target-lang", metavar="LANG", help="language to translate into (e.g. de, fr, ja)"
    )
    parser.add_argument(
        "--source-lang",
        metavar="LANG",
        help="text translation: the captions' language (default: the caption model's, "
        "identified per sentence for a model that hears several)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=DTYPES, default="auto")
    parser.add_argument("--beams", metavar="N", type=int, help="beam width for chunked models")


# -- devices / models ----------------------------------------------------------------------


def cmd_devices(args: argparse.Namespace) -> int:
    from engine.audio.devices import list_input_devices

    try:
        devices = list_input_devices()
    except AudioError as exc:
        print(exc.message)
        print(exc.hint)
        return 0
    for device in devices:
        mark = "  [system audio]" if device.is_system_audio else ""
        print(
            f"{device.index!s:>4}  {device.name}  ({device.hostapi}, {device.channels} ch, "
            f"{device.default_rate:g} Hz){mark}"
        )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from engine import local_folders
    from engine.catalogue import CATALOGUE
    from engine.hub import cached_models

    cached = {model.repo_id: model for model in cached_models()}
    print("Known models:")
    for entry in CATALOGUE:
        model = cached.get(entry.repo_id)
        state = "downloaded" if model and model.complete else "not downloaded"
        size = model.size_bytes if model else entry.size_bytes
        print(f"  {entry.repo_id:45} {human_size(size):>9}  {state:15} {entry.title}")
    others = [m for repo_id, m in cached.items() if repo_id not in {e.repo_id for e in CATALOGUE}]
    if others:
        print("Other models in the cache:")
        for model in others:
            state = "downloaded" if model.complete else "incomplete"
            print(f"  {model.repo_id:45} {human_size(model.size_bytes):>9}  {state}")
    folders = local_folders.load()
    if folders:
        print("Local model folders (added in the app):")
        for folder in folders:
            state = "ready" if (Path(folder) / "config.json").is_file() else "missing"
            print(f"  {folder:45} {'':>9}  {state}")
    return 0


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


# -- transcribe ----------------------------------------------------------------------------


def cmd_transcribe(args: argparse.Namespace) -> int:
    from engine.cli.transcribe import (
        check_output,
        open_audio,
        transcribe_file,
        write_output,
    )
    from engine.transcript import export

    output = Path(args.output) if args.output else None
    if output is not None:
        check_output(output)  # before any work: a wrong -o must not cost a whole run
    with open_audio(Path(args.audio)) as sound:
        caption_model, translation_model = load_engines(args, offline=args.offline)
        transcript, nonfinite = transcribe_file(sound, caption_model, translation_model)
    if nonfinite:
        print(
            f"livecap: {args.audio} has {nonfinite} NaN or infinite samples; they were "
            "replaced with silence.\nThe rest of the transcript is unaffected; the file may "
            "be damaged.",
            file=sys.stderr,
        )
    write_output(output, export(transcript, args.format))
    return 0


def load_engines(args: argparse.Namespace, offline: bool = False):
    """The caption recognizer and, with --translate-model, the translation: a recognizer of
    its own, or a CaptionTranslator following the captions (provisional translations only
    live: a file needs the finals)."""
    from engine.models.translator import TextTranslator
    from engine.recognizer import LoadOptions, load_recognizer, load_translation
    from engine.streaming.text_translator import CaptionTranslator

    def options(target_lang: str | None) -> LoadOptions:
        return LoadOptions(
            device=args.device,
            dtype=args.dtype,
            beams=args.beams,
            target_lang=target_lang,
            offline=offline,
            # live always flushes at pauses; a file gets the model's own output unless asked
            pause_flush=args.command != "transcribe" or args.pause_flush,
            progress=show_progress,
            api_key=args.api_key,
        )

    translating = args.translate_model is not None
    caption = load_recognizer(args.model, options(None if translating else args.target_lang))
    translation = None
    if translating:
        translation = load_translation(args.translate_model, options(args.target_lang))
    if isinstance(translation, TextTranslator):
        live = args.command == "live"
        if live and args.beams is None:  # live, a translation must keep up: greedy
            translation.generation = replace(translation.generation, num_beams=1)
        translation = CaptionTranslator(translation, caption.info, args.source_lang, live)
    clear_progress()
    return caption, translation


def show_progress(stage: str, fraction: float) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K{stage}: {fraction:.0%}")
        sys.stderr.flush()


def clear_progress() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")


# -- translate -----------------------------------------------------------------------------


def cmd_translate(args: argparse.Namespace) -> int:
    from engine.models.translator import TextTranslator, choose_language
    from engine.recognizer import LoadOptions, load_translation

    lines = open_lines(args.file)  # a wrong FILE fails before the model loads
    options = LoadOptions(
        device=args.device,
        dtype=args.dtype,
        beams=args.beams,
        target_lang=args.target_lang,
        progress=show_progress,
    )
    translator = load_translation(args.model, options)
    clear_progress()
    if not isinstance(translator, TextTranslator):
        raise LivecapError(
            f"{args.model} translates speech, not text.",
            "Give it to `livecap transcribe --translate-model`, or choose a text translation "
            "model (opus-mt, m2m100, nllb; see `livecap models`).",
        )
    name = translator.info.name
    source = choose_language(name, translator.sources, args.source_lang, "--source-lang", "from")
    for line in lines:
        text = line.rstrip("\n")
        print(translator.translate(text, source).text if text.strip() else "", flush=True)
    return 0


def open_lines(path: str | None):
    """The lines of FILE (UTF-8), or of standard input without one."""
    if path is None:
        sys.stdin.reconfigure(encoding="utf-8", errors="replace")
        return sys.stdin
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LivecapError(f"No such file: {path}", "Check the path of FILE.") from None
    except UnicodeDecodeError:
        raise LivecapError(f"{path} is not UTF-8 text.", "Save it as UTF-8 and retry.") from None
    except OSError as exc:
        raise LivecapError(f"Cannot read {path}: {exc.strerror}", "Check FILE.") from None
    return text.splitlines()


# -- live ----------------------------------------------------------------------------------


def cmd_live(args: argparse.Namespace) -> int:
    from engine.audio.sources import MicrophoneSource
    from engine.cli.live import open_store, run_live

    store = open_store()  # a store that cannot be used fails before any model is loaded
    device = int(args.input) if args.input and args.input.isdigit() else args.input
    source = MicrophoneSource(device)
    caption, translation = load_engines(args)
    return run_live(source, caption, translation, store)


# -- bench ---------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.recognizer import is_server_address

    if is_server_address(args.model):
        raise LivecapError(
            f"{args.model} is a caption server: bench measures a model on this machine.",
            "Run `livecap bench --model MODEL` on the server's machine instead.",
        )
    try:
        from engine.bench import run_bench
    except ImportError as exc:
        raise LivecapError(
            f"Benchmarking is not available in this build ({exc}).", "Update Livecap."
        ) from None
    result = run_bench(args.model, args.device, args.dtype, args.seconds, args.target_lang)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.model} on {result.get('device', args.device)}, {result.get('dtype', args.dtype)}")
    for key, value in result.items():
        if key not in {"device", "dtype"}:
            shown = f"{value:.3f}" if isinstance(value, float) else value
            print(f"  {key.replace('_', ' ')}: {shown}")
    return 0


# -- serve ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from engine.cli.serve import (
            bind,
            check_exposure,
            load_slot_engine,
            read_api_keys,
            serve,
            serve_on_ray,
        )
        from engine.serving.app import ServeSettings
    except ImportError as exc:  # fastapi, uvicorn, msgpack: the serve extra
        raise LivecapError(
            f"Serving is not available in this installation ({exc}).",
            "Install the server's packages: pip install 'livecap[serve]'.",
        ) from None
    from engine.models.contract import LoadOptions

    keys = read_api_keys(args.api_key, args.api_key_file)
    check_exposure(args.host, keys)
    if args.ray:  # every replica loads the model; Ray's proxy listens
        return serve_on_ray(args, LoadOptions(device=args.device, dtype=args.dtype), keys)
    sock = bind(args.host, args.port)  # a port in use fails before the model loads
    try:
        options = LoadOptions(device=args.device, dtype=args.dtype, progress=show_progress)
        engine = load_slot_engine(args.model, options, args.batch)
        clear_progress()
        return serve(engine, ServeSettings(api_keys=keys), sock)
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
