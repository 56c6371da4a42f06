"""`livecap serve`: what a user can get wrong fails with a clear message and exit status 2
(no traceback) before any model loads, and the options reach the engine and the app."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest

import main
from engine.models.contract import LoadOptions
from tests.serving_doubles import ScriptedSlots

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]


def serve(*args: str) -> int:
    return main.main(["serve", *args])


def model_folder(tmp_path: Path, model_type: str) -> Path:
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a model would load: the errors under test must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the argument error")

    monkeypatch.setattr("engine.cli.serve.load_slot_engine", refuse)


def test_help():
    with pytest.raises(SystemExit) as exit_info:
        main.main(["serve", "--help"])
    assert exit_info.value.code == 0


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org"])
def test_a_non_loopback_host_without_a_key_is_refused(host, capsys, no_model_load):
    assert serve("--model", "m", "--host", host) == 2
    err = capsys.readouterr().err
    assert f"Serving on {host} without an API key" in err
    assert "--api-key" in err and "Traceback" not in err


def test_the_refusal_from_a_real_process_has_no_traceback():
    result = subprocess.run(
        [sys.executable, "main.py", "serve", "--model", "m", "--host", "0.0.0.0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "without an API key" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("package", ["fastapi", "uvicorn"])
def test_an_installation_without_the_server_packages_says_what_to_install(
    package, capsys, monkeypatch, no_model_load
):
    for module in ("engine.cli.serve", "engine.serving.app"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, package, None)  # import fails
    assert serve("--model", "m") == 2
    err = capsys.readouterr().err
    assert "Serving is not available" in err and "livecap[serve]" in err


def test_key_file_errors(tmp_path, capsys, no_model_load):
    assert serve("--model", "m", "--api-key-file", str(tmp_path / "missing")) == 2
    assert "No such key file" in capsys.readouterr().err
    empty = tmp_path / "keys"
    empty.write_text("# no key yet\n\n")
    assert serve("--model", "m", "--api-key-file", str(empty)) == 2
    assert "holds no API key" in capsys.readouterr().err
    assert serve("--model", "m", "--api-key", " ") == 2
    assert "empty API key" in capsys.readouterr().err


def test_a_port_in_use_is_refused_before_the_model_loads(capsys, no_model_load):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert serve("--model", "m", "--port", port) == 2
    err = capsys.readouterr().err
    assert f"Cannot listen on 127.0.0.1:{port}" in err and "--port" in err


@pytest.mark.parametrize("batch", ["0", "-1", "x"])
def test_batch_must_be_a_positive_whole_number(batch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        serve("--model", "m", "--batch", batch)
    assert exit_info.value.code == 2
    assert "must be a whole number more than 0" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["65536", "-1", "http"])
def test_port_must_be_a_port_number(port, capsys):
    with pytest.raises(SystemExit) as exit_info:
        serve("--model", "m", "--port", port)
    assert exit_info.value.code == 2
    assert "must be a port number from 0 to 65535" in capsys.readouterr().err


def test_a_model_that_is_not_kyutai_is_refused(tmp_path, capsys):
    folder = model_folder(tmp_path, "speech_to_text")
    assert serve("--model", str(folder), "--port", "0") == 2
    err = capsys.readouterr().err
    assert "serving needs a Kyutai STT model" in err and "Traceback" not in err


def test_a_build_without_the_batched_engine_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "engine.serving.kyutai_slots", None)  # import fails
    folder = model_folder(tmp_path, "kyutai_speech_to_text")
    assert serve("--model", str(folder), "--port", "0") == 2
    assert "batched Kyutai engine is not available" in capsys.readouterr().err


def test_the_options_reach_the_engine_and_the_app(tmp_path, monkeypatch):
    folder = model_folder(tmp_path, "kyutai_speech_to_text")
    loaded, served = [], []
    engine = ScriptedSlots()

    def load_slots(folder, name, options, slots):
        loaded.append((folder, name, options, slots))
        return engine

    fake = types.ModuleType("engine.serving.kyutai_slots")
    fake.load_slots = load_slots
    monkeypatch.setitem(sys.modules, "engine.serving.kyutai_slots", fake)
    monkeypatch.setattr(
        "engine.cli.serve.serve",
        lambda engine, settings, sock: served.append((engine, settings, sock.getsockname())) or 0,
    )
    keys = tmp_path / "keys"
    keys.write_text("from-file\n")
    args = ["--model", str(folder), "--batch", "4", "--device", "cpu", "--dtype", "float32"]
    args += ["--host", "0.0.0.0", "--port", "0", "--api-key", "k1", "--api-key-file", str(keys)]
    assert serve(*args) == 0
    [(loaded_folder, name, options, slots)] = loaded
    assert (loaded_folder, name, slots) == (folder, str(folder), 4)
    assert (options.device, options.dtype) == ("cpu", "float32")
    assert isinstance(options, LoadOptions)
    [(served_engine, settings, address)] = served
    assert served_engine is engine
    assert settings.api_keys == {"k1", "from-file"}
    assert address[0] == "0.0.0.0"
