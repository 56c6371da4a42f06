"""The command line: every subcommand's --help, clear errors, and the transcribe/live flows."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile
import srt

import main
from engine.audio.devices import InputDevice
from engine.errors import AudioError
from tests.recognizer_doubles import RecordingRecognizer

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("devices", "transcribe", "live", "models", "bench", "translate", "serve")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "main.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    rate = 22050
    t = np.arange(rate * 2) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    path = tmp_path_factory.mktemp("audio") / "stereo.wav"
    soundfile.write(path, np.stack([tone, tone], axis=1).astype(np.float32), rate)
    return path


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"livecap {command}" in capsys.readouterr().out


def test_subcommands_do_not_import_qt():
    probe = "import sys, main; main.main(['models']); print('PySide6' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("False")


def assert_clear_failure(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr


def test_missing_audio_file_is_a_clear_error(tmp_path):
    result = run_cli("transcribe", str(tmp_path / "gone.wav"), "--model", str(tmp_path))
    assert_clear_failure(result, "No such audio file", "gone.wav")


def test_folder_without_config_is_a_clear_error(wav, tmp_path):
    result = run_cli("transcribe", str(wav), "--model", str(tmp_path))
    assert_clear_failure(result, "no config.json", "--model")


def test_uncached_repo_offline_says_which_and_what_to_do(wav, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf")}
    result = run_cli("transcribe", str(wav), "--model", "someone/some-model", env=env)
    assert_clear_failure(result, "someone/some-model", "not in the local model cache")
    assert "HF_HUB_OFFLINE" in result.stderr and "network access" in result.stderr


def test_cached_repo_resolves_offline_through_hf_home(wav, tmp_path):
    from tests.test_hub import put_in_cache

    snapshot = put_in_cache(tmp_path / "hf" / "hub", "someone/odd-model")
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").write_text(json.dumps({"model_type": "bert"}))
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = run_cli("transcribe", str(wav), "--model", "someone/odd-model", env=env)
    # It was found in the cache; the failure is now about what the model is.
    assert_clear_failure(result, "model type 'bert' is not supported")


def test_unreadable_audio_is_a_clear_error(tmp_path):
    bogus = tmp_path / "notes.wav"
    bogus.write_text("not audio")
    result = run_cli("transcribe", str(bogus), "--model", str(tmp_path))
    assert_clear_failure(result, "Cannot read", "notes.wav")


@pytest.fixture
def doubles(monkeypatch):
    """Replace model loading with recognizer doubles; returns the (caption, translation)."""
    made: dict[str, RecordingRecognizer] = {}

    def load_engines(args, offline=False):
        made["caption"] = RecordingRecognizer(sample_rate=16000, word_seconds=0.5)
        made["options"] = (args.device, args.dtype, args.beams, args.target_lang, offline)
        if args.translate_model:
            made["translation"] = RecordingRecognizer(sample_rate=24000, word_seconds=1.0)
        return made["caption"], made.get("translation")

    monkeypatch.setattr(main, "load_engines", load_engines)
    return made


def test_transcribe_mixes_down_resamples_and_writes_srt(wav, tmp_path, doubles):
    out = tmp_path / "out.srt"
    code = main.main(["transcribe", str(wav), "--model", "m", "--format", "srt", "-o", str(out)])
    assert code == 0
    fed = doubles["caption"].audio
    assert fed.size == 32000  # 2 s at 16 kHz, mono
    t = np.arange(fed.size) / 16000
    expected = 0.3 * np.sin(2 * np.pi * 220 * t)
    assert np.max(np.abs(fed[100:-100] - expected[100:-100])) < 1e-3
    [cue] = list(srt.parse(out.read_text(encoding="utf-8")))
    assert cue.content == "w0 w1 w2 w3"
    assert cue.end.total_seconds() == 2.0


def test_transcribe_json_with_translation_to_stdout(wav, doubles, capsys):
    code = main.main(
        ["transcribe", str(wav), "--model", "m", "--translate-model", "t", "--target-lang", "de"]
        + ["--format", "json", "--offline", "--beams", "3", "--device", "cpu"]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["segments"][0]["text"] == "w0 w1 w2 w3"
    assert data["translation"]["segments"][0]["text"] == "w0 w1"
    assert doubles["translation"].fed == 48000
    assert doubles["options"] == ("cpu", "auto", 3, "de", True)


def test_transcribe_txt_is_one_line_per_segment(wav, doubles, capsys):
    assert main.main(["transcribe", str(wav), "--model", "m"]) == 0
    assert capsys.readouterr().out == "w0 w1 w2 w3\n"


def test_devices_without_an_audio_system_says_so_and_succeeds(monkeypatch, capsys):
    def no_audio():
        raise AudioError("No audio system: PortAudio is not installed.", "Install libportaudio2.")

    monkeypatch.setattr("engine.audio.devices.list_input_devices", no_audio)
    assert main.main(["devices"]) == 0
    assert "No audio system" in capsys.readouterr().out


def test_devices_marks_system_audio(monkeypatch, capsys):
    listing = [
        InputDevice(0, "USB Mic", "ALSA", 1, 48000.0, False),
        InputDevice("out.monitor", "out.monitor", "PulseAudio", 2, 44100.0, True),
    ]
    monkeypatch.setattr("engine.audio.devices.list_input_devices", lambda: listing)
    assert main.main(["devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "USB Mic" in lines[0] and "[system audio]" not in lines[0]
    assert "out.monitor" in lines[1] and lines[1].endswith("[system audio]")


def test_models_lists_the_catalogue_with_download_state(monkeypatch, tmp_path, capsys):
    from huggingface_hub import constants

    from tests.test_hub import put_in_cache

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    put_in_cache(tmp_path, "facebook/s2t-small-librispeech-asr")
    put_in_cache(tmp_path, "someone/extra")
    assert main.main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert " downloaded " in rows["facebook/s2t-small-librispeech-asr"]
    assert "not downloaded" in rows["kyutai/stt-1b-en_fr-trfs"]
    assert "someone/extra" in rows


def test_models_lists_the_folders_added_in_the_app(tmp_path, capsys):
    from engine import local_folders

    ready, gone = tmp_path / "my-model", tmp_path / "moved-away"
    ready.mkdir()
    (ready / "config.json").write_text("{}")
    local_folders.save([str(ready), str(gone)])  # as the app's model manager keeps them
    assert main.main(["models"]) == 0
    rows = {
        line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line[:2] == "  "
    }
    assert rows[str(ready)].endswith("ready") and rows[str(gone)].endswith("missing")


def test_bench_prints_one_json_object(monkeypatch, capsys):
    calls = []

    def run_bench(model, device, dtype, seconds, target_lang):
        calls.append((model, device, dtype, seconds, target_lang))
        return {"frame_ms_median": 12.5, "realtime_factor": 0.16, "device": "cpu"}

    monkeypatch.setitem(sys.modules, "engine.bench", types.SimpleNamespace(run_bench=run_bench))
    argv = ["bench", "--model", "m", "--dtype", "float32", "--seconds", "3", "--json"]
    assert main.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["frame_ms_median"] == 12.5
    assert calls == [("m", "auto", "float32", 3.0, None)]
    assert main.main(["bench", "--model", "m"]) == 0
    assert "frame ms median: 12.500" in capsys.readouterr().out
    assert main.main(["bench", "--model", "m", "--target-lang", "de"]) == 0
    assert calls[-1] == ("m", "auto", "auto", 30.0, "de")  # translation models need a language


def test_live_prints_lines_and_saves_the_session(wav, doubles, monkeypatch, capsys):
    from engine.audio.sources import FileSource
    from engine.store import SessionStore

    monkeypatch.setattr(
        "engine.audio.sources.MicrophoneSource", lambda device: FileSource(wav, realtime=False)
    )
    assert main.main(["live", "--model", "m"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "w0 w1 w2 w3\n"
    assert "saved" in captured.err
    [summary] = SessionStore().sessions()
    assert summary.preview == "w0 w1 w2 w3" and summary.duration == 2.0


LIVE_WITH_DOUBLES = """
import sys
import time
import main
from engine.audio import sources
from tests.recognizer_doubles import RecordingRecognizer

sources.MicrophoneSource = lambda device: sources.FileSource(sys.argv[1], realtime=True)
main.load_engines = lambda args, offline=False: (RecordingRecognizer(word_seconds=0.25), None)
sys.exit(main.main(["live", "--model", "double"]))
"""


@pytest.mark.parametrize("ending", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_ends_live_cleanly_and_saves(tmp_path, ending):
    from engine.store import SessionStore

    long_file = tmp_path / "long.wav"
    soundfile.write(long_file, np.zeros(16000 * 60, np.float32), 16000)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_DATA_HOME": str(tmp_path / "data")}
    live = subprocess.Popen(
        [sys.executable, "-c", LIVE_WITH_DOUBLES, str(long_file)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "Listening to long.wav" in live.stderr.readline()
    time.sleep(1.5)
    live.send_signal(ending)
    out, err = live.communicate(timeout=30)
    assert live.returncode == 0, err
    assert "Traceback" not in err and "saved" in err
    words = out.split()
    assert words[:4] == ["w0", "w1", "w2", "w3"]  # committed lines reached the terminal
    store = SessionStore(tmp_path / "data" / "livecap" / "sessions.db")
    [summary] = store.sessions()
    assert 1.0 <= summary.duration < 10.0
    saved = " ".join(s.text for s in store.transcript(summary.id).segments).split()
    assert saved == words


def test_no_subcommand_opens_the_app(monkeypatch):
    opened = []
    fake_app = types.SimpleNamespace(run=lambda: opened.append(True) or 0)
    monkeypatch.setitem(sys.modules, "app.main", fake_app)
    assert main.main([]) == 0
    assert opened == [True]


class SlowRecognizer(RecordingRecognizer):
    """A model made slow on purpose: each feed() takes 1.5 times the audio it was given."""

    def feed(self, samples):
        time.sleep(1.5 * samples.size / self.sample_rate)
        return super().feed(samples)


def live_on_file(monkeypatch, audio: np.ndarray, path: Path, recognizer, realtime: bool):
    from engine.audio.sources import FileSource

    soundfile.write(path, audio, 16000, subtype="FLOAT")
    monkeypatch.setattr(
        "engine.audio.sources.MicrophoneSource", lambda device: FileSource(path, realtime)
    )
    monkeypatch.setattr(main, "load_engines", lambda args, offline=False: (recognizer, None))
    return main.main(["live", "--model", "m"])


def test_live_says_when_the_model_falls_behind_and_skips_audio(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("engine.session.RING_SECONDS", 0.5)
    monkeypatch.setattr("engine.worker.STATS_INTERVAL", 0.2)
    audio = np.full(16000 * 3, 0.1, np.float32)
    recognizer = SlowRecognizer(word_seconds=0.5)
    assert live_on_file(monkeypatch, audio, tmp_path / "a.wav", recognizer, realtime=True) == 0
    err = capsys.readouterr().err
    assert "The model is running slower than speech; captions are" in err
    assert "s of audio was skipped because the model fell behind." in err
    assert "Try a smaller model, int8 precision (--dtype int8) or the GPU" in err
    assert err.count("running slower than speech") <= 2  # a status line, not a flood


def test_live_silences_nonfinite_input_and_warns_once(monkeypatch, tmp_path, capsys):
    audio = np.full(16000 * 2, 0.1, np.float32)
    audio[1000:1100] = np.nan
    audio[20000] = np.inf
    recognizer = RecordingRecognizer()
    assert live_on_file(monkeypatch, audio, tmp_path / "nan.wav", recognizer, realtime=False) == 0
    assert np.isfinite(recognizer.audio).all()
    err = capsys.readouterr().err
    assert err.count("NaN or infinite") == 1 and "replaced with silence" in err


def test_live_on_a_full_disk_ends_and_writes_the_transcript_elsewhere(
    monkeypatch, tmp_path, capsys
):
    from engine.store import SessionStore
    from tests.test_store import FullDisk

    store = SessionStore(tmp_path / "s.db")
    store._db = FullDisk(store._db)
    store._db.full = True
    monkeypatch.setattr("engine.cli.live.open_store", lambda: store)
    monkeypatch.chdir(tmp_path)
    audio = np.full(16000 * 2, 0.1, np.float32)
    recognizer = RecordingRecognizer()
    assert live_on_file(monkeypatch, audio, tmp_path / "a.wav", recognizer, realtime=False) == 2
    captured = capsys.readouterr()
    assert captured.err.count("Saving the session failed") == 1
    [fallback] = tmp_path.glob("livecap-session-*.txt")
    assert str(fallback) in captured.err
    assert fallback.read_text().split() == captured.out.split() == ["w0", "w1", "w2", "w3"]


def test_transcribe_memory_does_not_grow_with_the_files_length():
    from tests.benchmarks.long_file_memory import measure

    short, long = measure(2 * 60), measure(20 * 60)
    assert (short["words"], long["words"]) == (120, 1200)
    # Reading the whole file would hold 20 minutes at both rates: over 130 MB more.
    assert long["peak_rss_mb"] < short["peak_rss_mb"] + 40


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_transcribe_shows_its_progress_on_a_terminal(wav, doubles, monkeypatch, capsys):
    monkeypatch.setattr("engine.cli.transcribe.PROGRESS_EVERY_SECONDS", 0.0)
    monkeypatch.setattr("engine.cli.transcribe.BLOCK_SECONDS", 0.5)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main.main(["transcribe", str(wav), "--model", "m"]) == 0
    shown = terminal.getvalue()
    assert "\r\x1b[K0:01 / 0:02 · " in shown and "× real time · 0:0" in shown
    assert shown.endswith("\r\x1b[K")  # cleared before the transcript is printed
    assert capsys.readouterr().out == "w0 w1 w2 w3\n"


def test_transcribe_silences_nonfinite_samples_and_warns_once(tmp_path, doubles, capsys):
    audio = np.full(16000 * 2, 0.1, np.float32)
    audio[500:600] = np.nan
    audio[9000] = -np.inf
    path = tmp_path / "nan.wav"
    soundfile.write(path, audio, 16000, subtype="FLOAT")
    assert main.main(["transcribe", str(path), "--model", "m"]) == 0
    fed = doubles["caption"].audio
    assert np.isfinite(fed).all() and (fed[500:600] == 0).all() and fed.size == 32000
    err = capsys.readouterr().err
    assert err.count("101 NaN or infinite samples") == 1 and "replaced with silence" in err


def test_transcribe_gives_the_models_own_output_unless_asked_for_the_pause_flush(tmp_path):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer

    from tests.kyutai_fixtures import (
        SAMPLE_RATE,
        SHAPES,
        build_tiny_model,
        reference_generate,
        speechlike_audio,
    )

    folder = build_tiny_model(tmp_path / "tiny", SHAPES["gqa"])
    clip = speechlike_audio(10.0, seed=11, pauses=((4.0, 6.0),))
    path = tmp_path / "pauses.wav"
    soundfile.write(path, clip, SAMPLE_RATE, subtype="FLOAT")
    tokens, _ = reference_generate(folder, clip)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    reference = tokenizer.decode(tokens[1:], skip_special_tokens=True)  # [0]: the start token

    def transcribed(*flags: str) -> str:
        argv = ["transcribe", str(path), "--model", str(folder), "--device", "cpu"]
        result = run_cli(*argv, "--dtype", "float32", *flags)
        assert result.returncode == 0, result.stderr
        return result.stdout.replace(" ", "").replace("\n", "")

    assert transcribed() == reference.replace(" ", "")
    assert transcribed("--pause-flush") != reference.replace(" ", "")  # live behaviour


def test_main_sets_openmps_waiting_before_torch_loads() -> None:
    """Idle OpenMP threads spin about a tenth of a millisecond, then sleep; a user's own
    settings are kept. Both must be in the environment before torch is imported."""
    probe = (
        "import os; import main; print(os.environ['OMP_WAIT_POLICY'], os.environ['GOMP_SPINCOUNT'])"
    )
    root = Path(__file__).resolve().parents[1]
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    ours = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, env=clean, capture_output=True, text=True
    )
    assert ours.stdout.split() == ["PASSIVE", "10000"]
    theirs = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True,
        env=clean | {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "5"},
    )  # fmt: skip
    assert theirs.stdout.split() == ["ACTIVE", "5"]
    alone = "import sys; from engine import openmp; print('torch' in sys.modules)"
    order = subprocess.run(
        [sys.executable, "-c", alone], cwd=root, env=clean, capture_output=True, text=True
    )
    assert order.stdout.strip() == "False"
