"""Damaged and mismatched model folders fail the same way for every family: one ModelError
naming the file or tensor, with a hint that fits where the folder came from, and in the CLI
exit status 2 with that message and hint and no traceback. Weights never come from a pickle.

Each family's tiny checkpoint is built once (tests/*_fixtures.py); every fault edits a copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file, save_file

from engine.errors import ModelError
from engine.models.loading import read_config
from engine.recognizer import LoadOptions, load_recognizer, read_model_type

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Family:
    build: Callable[[Path], Path]
    options: LoadOptions
    tensor: str  # a layer matrix in the checkpoint, named as the checkpoint names it
    layers: Callable[[dict], dict]  # the section of config.json holding the encoder's layers
    layer_count: str
    vocab: Callable[[dict], dict]  # the section holding the text vocabulary's size


def _kyutai(folder: Path) -> Path:
    from tests.kyutai_fixtures import SHAPES, build_tiny_model

    return build_tiny_model(folder, SHAPES["gqa"])


def _speech2text(folder: Path) -> Path:
    from tests.s2t_fixtures import build

    return build("asr", folder)


def _speech_encoder_decoder(folder: Path) -> Path:
    from tests.sed_fixtures import build

    return build("bart", folder)


FAMILIES = {
    "kyutai": Family(
        _kyutai,
        LoadOptions(dtype="float32"),
        "model.layers.0.mlp.fc1.weight",
        lambda config: config,
        "num_hidden_layers",
        lambda config: config,
    ),
    "speech2text": Family(
        _speech2text,
        LoadOptions(),
        "model.encoder.layers.0.fc1.weight",
        lambda config: config,
        "encoder_layers",
        lambda config: config,
    ),
    "speech-encoder-decoder": Family(
        _speech_encoder_decoder,
        LoadOptions(dtype="float32"),
        "decoder.model.decoder.layers.0.fc1.weight",
        lambda config: config["encoder"],
        "num_hidden_layers",
        lambda config: config["decoder"],
    ),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("families")
    return {name: family.build(base / name) for name, family in FAMILIES.items()}


# ---- faults: (edit of a copied folder, words the message must hold) ----------------------------


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _save(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "model.safetensors")


def _edit_config(folder: Path, change: Callable[[dict], None]) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def truncated(folder: Path, family: Family) -> list[str]:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    return ["model.safetensors", "not a readable safetensors file"]


def empty(folder: Path, family: Family) -> list[str]:
    (folder / "model.safetensors").write_bytes(b"")
    return ["model.safetensors", "not a readable safetensors file"]


def wrong_shape(folder: Path, family: Family) -> list[str]:
    tensors = _weights(folder)
    tensors[family.tensor] = tensors[family.tensor][1:]
    _save(folder, tensors)
    return [family.tensor, "has shape"]


def missing_tensor(folder: Path, family: Family) -> list[str]:
    tensors = _weights(folder)
    del tensors[family.tensor]
    _save(folder, tensors)
    return ["layers.0", "fc1.weight", "missing"]


def unused_tensor(folder: Path, family: Family) -> list[str]:
    tensors = _weights(folder)
    tensors["model.surprise.weight"] = torch.zeros(3, 3)
    _save(folder, tensors)
    return ["model.surprise.weight", "unexpected"]


def config_mismatch(folder: Path, family: Family) -> list[str]:
    def grow(config: dict) -> None:
        family.vocab(config)["vocab_size"] += 1

    _edit_config(folder, grow)
    return ["config.json implies"]


def no_layers(folder: Path, family: Family) -> list[str]:
    def remove(config: dict) -> None:
        family.layers(config)[family.layer_count] = -1

    _edit_config(folder, remove)
    return [family.layer_count]


def config_list(folder: Path, family: Family) -> list[str]:
    (folder / "config.json").write_text("[1, 2]")
    return ["config.json", "JSON list"]


def config_not_json(folder: Path, family: Family) -> list[str]:
    (folder / "config.json").write_text('{"model_type": ')
    return ["config.json", "not valid JSON"]


def generation_not_json(folder: Path, family: Family) -> list[str]:
    (folder / "generation_config.json").write_text("{")
    return ["generation_config.json", "not valid JSON"]


def pickle_only(folder: Path, family: Family) -> list[str]:
    torch.save(_weights(folder), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return ["pytorch_model.bin", "never loads"]


def corrupt_tokenizer(folder: Path, family: Family) -> list[str]:
    name = "vocab.json" if (folder / "vocab.json").exists() else "tokenizer.json"
    (folder / name).write_text('{"broken": ')
    return [name]


WEIGHT_FAULTS = [truncated, empty, wrong_shape, missing_tensor, unused_tensor, pickle_only]
CONFIG_FAULTS = [config_mismatch, no_layers, config_list, config_not_json, generation_not_json]
# Kyutai's tokenizer is read by engine/streaming/kyutai_stream.py, outside this suite
TOKENIZER_CASES = [
    ("speech2text", corrupt_tokenizer),
    ("speech-encoder-decoder", corrupt_tokenizer),
]
CASES = [
    (family, fault) for family in FAMILIES for fault in WEIGHT_FAULTS + CONFIG_FAULTS
] + TOKENIZER_CASES


def _damaged_copy(built: dict[str, Path], family: str, fault, where: Path) -> tuple[Path, list]:
    folder = where / family
    shutil.copytree(built[family], folder)
    return folder, fault(folder, FAMILIES[family])


def _refuse_pickles(*args, **kwargs):
    raise AssertionError("torch.load was called: weights must never be unpickled")


@pytest.mark.parametrize(("family", "fault"), CASES, ids=lambda v: getattr(v, "__name__", v))
def test_a_damaged_folder_is_one_model_error_naming_what_is_wrong(
    built, tmp_path, monkeypatch, family, fault
) -> None:
    folder, words = _damaged_copy(built, family, fault, tmp_path)
    monkeypatch.setattr(torch, "load", _refuse_pickles)
    with pytest.raises(ModelError) as error:
        load_recognizer(str(folder), FAMILIES[family].options)
    message, hint = error.value.message, error.value.hint
    for word in words:
        assert word in message, (word, message)
    assert hint
    # a folder the user made is theirs to re-copy; re-downloading it would not help
    assert "livecap models" not in hint and "Download the model again" not in hint
    if fault is pickle_only:  # how to get or make safetensors, never how to unpickle
        assert "safetensors" in hint and "weights_only" not in f"{message} {hint}"
    elif fault not in (config_list, config_not_json):
        assert str(folder) in f"{message} {hint}"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_damaged_hub_download_is_downloaded_again(built, tmp_path, family) -> None:
    snapshot = tmp_path / "models--org--tiny" / "snapshots" / "0123abc"
    folder, _ = _damaged_copy(built, family, truncated, snapshot)
    with pytest.raises(ModelError) as error:
        load_recognizer(str(folder), FAMILIES[family].options)
    assert "Download the model again (`livecap models`)" in error.value.hint


def test_read_model_type_refuses_what_is_not_a_config_object(tmp_path) -> None:
    for text, words in (("[]", "JSON list"), ('"kyutai"', "JSON str"), ("{}", "model_type")):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ModelError, match=words):
            read_model_type(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "speech_to_text"}')
    assert read_model_type(tmp_path) == "speech_to_text"
    assert read_config(tmp_path) == {"model_type": "speech_to_text"}


CLI_FAULTS = [truncated, unused_tensor, no_layers, config_list, pickle_only]


@pytest.mark.parametrize("fault", CLI_FAULTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("family", FAMILIES)
def test_cli_exits_2_with_one_message_and_a_hint(built, tmp_path, family, fault) -> None:
    folder, words = _damaged_copy(built, family, fault, tmp_path)
    audio = tmp_path / "clip.wav"
    soundfile.write(audio, np.zeros(16000, np.float32), 16000)
    command = [sys.executable, "main.py", "transcribe", str(audio), "--model", str(folder)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    message, hint = done.stderr.strip().split("\n")  # one message, one hint
    assert message.startswith("livecap: ") and all(word in message for word in words)
    assert hint and "Download the model again" not in hint


@pytest.mark.parametrize("family", ["speech2text", "speech-encoder-decoder"])
def test_int4_is_refused_where_only_kyutai_has_it(built, tmp_path, family) -> None:
    audio = tmp_path / "clip.wav"
    soundfile.write(audio, np.zeros(16000, np.float32), 16000)
    command = [sys.executable, "main.py", "transcribe", str(audio), "--model", str(built[family])]
    done = subprocess.run(
        [*command, "--dtype", "int4"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr
    message, hint = done.stderr.strip().split("\n")
    assert "int4" in message and "--dtype" in hint
