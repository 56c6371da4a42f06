"""The CLI at its edges, each probe in a subprocess as a user would meet it: bad input, no
network, damaged or unwritable stores. Each ends with exit status 2, one message saying what
was wrong and a hint saying what to do, and no traceback anywhere in the output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[1]
CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens there: the Hub cannot be reached


# `live` with a file standing in for the microphone (a test machine has no input device).
LIVE_FROM_FILE = """
import sys
import main
from engine.audio import sources

sources.MicrophoneSource = lambda device: sources.FileSource(sys.argv[1], realtime=False)
sys.exit(main.main(sys.argv[2:]))
"""


def run_cli(*args: str, env: dict | None = None, script: str | None = None):
    """`main.py ARGS`, or the Python `script` with ARGS as its arguments."""
    command = [sys.executable, "-c", script] if script else [sys.executable, "main.py"]
    return subprocess.run(
        command + list(args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def assert_clear_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    """Exit 2, a message and its hint on stderr, no traceback in stdout or stderr."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) >= 2, output  # what went wrong, then what to do
    for phrase in phrases:
        assert phrase in result.stderr, output


@pytest.fixture
def wav(tmp_path) -> Path:
    path = tmp_path / "tone.wav"
    t = np.arange(16000) / 16000
    soundfile.write(path, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    return path


def offline_env(tmp_path: Path) -> dict:
    """No network (the Hub's address refuses connections), an empty model cache."""
    return {"HF_ENDPOINT": CLOSED_PORT, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": ""}


# -- no network -------------------------------------------------------------------------------


def test_transcribe_with_a_hub_id_and_no_network(wav, tmp_path):
    env = offline_env(tmp_path)
    result = run_cli("transcribe", str(wav), "--model", "kyutai/stt-1b-en_fr-trfs", env=env)
    assert_clear_error(result, "cannot be reached", "No model is downloaded yet", "local model")


def test_bench_with_an_unknown_hub_id_and_no_network(tmp_path):
    result = run_cli("bench", "--model", "nobody/no-such-model", env=offline_env(tmp_path))
    assert_clear_error(result, "cannot be reached", "nobody/no-such-model", "HF_HUB_OFFLINE=1")


def test_live_with_a_hub_id_and_no_network(wav, tmp_path):
    env = {**offline_env(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    args = (str(wav), "live", "--model", "kyutai/stt-1b-en_fr-trfs")
    result = run_cli(*args, env=env, script=LIVE_FROM_FILE)
    assert_clear_error(result, "cannot be reached", "local model folder")


def test_no_network_names_the_models_already_downloaded(wav, tmp_path):
    from tests.test_hub import put_in_cache

    put_in_cache(tmp_path / "hf" / "hub", "someone/cached-model")
    result = run_cli("transcribe", str(wav), "--model", "nobody/x", env=offline_env(tmp_path))
    assert_clear_error(result, "cannot be reached", "already downloaded: someone/cached-model")


# -- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", ["-5", "0", "nan", "soon"])
def test_bench_needs_a_positive_duration(seconds):
    result = run_cli("bench", "--model", "m", "--seconds", seconds)
    assert_clear_error(result, "--seconds", "more than 0", "for example --seconds 30")


def test_output_into_a_missing_folder_is_refused_before_any_work(wav, tmp_path):
    out = tmp_path / "no" / "such" / "out.srt"
    # The model does not exist either: the -o check must come first.
    result = run_cli("transcribe", str(wav), "--model", str(tmp_path / "nomodel"), "-o", str(out))
    assert_clear_error(result, "does not exist", str(out.parent), "-o")


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("livecap ")
    assert result.stdout.split()[1][0].isdigit() or "unknown" in result.stdout


# -- the session store, checked before any model is loaded ------------------------------------


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody can write to, root included (a read-only mount) where possible."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"root cannot be kept from writing here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def test_live_with_a_read_only_data_folder(read_only_folder, tmp_path):
    env = {"XDG_DATA_HOME": str(read_only_folder)}
    # Neither the model nor (on a test machine) an input exists: the store comes first.
    result = run_cli("live", "--model", str(tmp_path / "nomodel"), env=env)
    assert_clear_error(result, str(read_only_folder / "livecap"), "XDG_DATA_HOME")
    assert "Read-only file system" in result.stderr or "ermission" in result.stderr
    assert result.stderr.count("livecap:") == 1  # nothing else was tried


def damaged_store(data_home: Path, damage: str) -> Path:
    from tests.test_store import corrupt_page_holding, filled_store

    path = data_home / "livecap" / "sessions.db"
    path.parent.mkdir(parents=True)
    filled_store(path, sessions=2, segments=100)
    if damage == "page":
        corrupt_page_holding(path, b"needle-1-50 ")
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return path


@pytest.mark.parametrize("damage", ["page", "truncated"])
def test_live_with_a_damaged_store_recovers_it_before_loading_the_model(tmp_path, damage):
    path = damaged_store(tmp_path / "data", damage)
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    result = run_cli("live", "--model", str(tmp_path / "nomodel"), env=env)
    assert_clear_error(result, f"The session history {path} was damaged", "moved aside")
    err = result.stderr
    assert err.startswith("livecap: The session history")  # checked before anything else
    [kept] = path.parent.glob("sessions.db.damaged-*[0-9]")
    assert str(kept) in err and "Nothing was deleted" in err
