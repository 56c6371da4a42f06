"""The local model folders list: a JSON file the app writes and the Qt-free CLI reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import local_folders

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def config_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


def test_the_list_lives_in_the_user_config_folder_in_order_without_duplicates(config_home):
    assert local_folders.load() == []
    local_folders.save(["/models/b", "/models/a", "/models/b"])
    path = config_home / "livecap" / "local_folders.json"
    assert local_folders.default_path() == path
    assert json.loads(path.read_text(encoding="utf-8")) == ["/models/b", "/models/a"]
    assert local_folders.load() == ["/models/b", "/models/a"]


def test_home_config_is_used_without_xdg_config_home(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert local_folders.default_path() == tmp_path / ".config" / "livecap" / "local_folders.json"


def test_a_failed_write_keeps_the_old_list_and_leaves_no_temporary_file(config_home, monkeypatch):
    local_folders.save(["/models/kept"])

    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch, pytest.raises(OSError):
        patch.setattr(os, "replace", disk_full)
        local_folders.save(["/models/new"])
    assert local_folders.load() == ["/models/kept"]
    assert sorted(p.name for p in (config_home / "livecap").iterdir()) == ["local_folders.json"]


@pytest.mark.parametrize("damage", ['["/models/a", ', '{"a": 1}', "[1, 2]"])
def test_a_damaged_file_reads_as_empty_and_is_kept_aside_when_replaced(config_home, damage):
    path = local_folders.default_path()
    path.parent.mkdir(parents=True)
    path.write_text(damage, encoding="utf-8")
    assert local_folders.load() == []
    local_folders.save(["/models/new"])
    assert local_folders.load() == ["/models/new"]
    assert path.with_name("local_folders.json.damaged").read_text(encoding="utf-8") == damage


def test_the_module_needs_no_qt(config_home):
    """`livecap models` must be able to read the list without PySide6."""
    code = (
        "import sys; from engine import local_folders; local_folders.load(); "
        "print(sorted(m for m in sys.modules if m.startswith('PySide6')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_app_moves_the_old_qsettings_list_to_the_file_once(config_home, tmp_path):
    from PySide6.QtCore import QSettings

    from app.settings import AppSettings

    ini = str(tmp_path / "livecap.ini")
    old = QSettings(ini, QSettings.Format.IniFormat)
    old.setValue("models/local_folders", ["/models/old-1", "/models/old-2"])
    old.sync()
    local_folders.save(["/models/cli"])

    settings = AppSettings(QSettings(ini, QSettings.Format.IniFormat))
    moved = ["/models/cli", "/models/old-1", "/models/old-2"]
    assert settings.local_model_folders() == moved
    assert local_folders.load() == moved  # what `livecap models` reads
    settings.sync()
    assert QSettings(ini, QSettings.Format.IniFormat).value("models/local_folders") is None

    settings.set_local_model_folders(["/models/cli"])  # a folder removed in the app...
    again = AppSettings(QSettings(ini, QSettings.Format.IniFormat))
    assert again.local_model_folders() == ["/models/cli"]  # ...is not brought back
