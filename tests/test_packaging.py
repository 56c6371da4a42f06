"""The packaging scripts: the desktop entry, what the bundle leaves out, the glibc check and
dev.sh's display check (fast: nothing here builds a bundle or installs anything)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
MAIN_CATEGORIES = {
    "AudioVideo", "Audio", "Video", "Development", "Education", "Game", "Graphics",
    "Network", "Office", "Science", "Settings", "System", "Utility",
}  # fmt: skip
needs_validator = pytest.mark.skipif(
    shutil.which("desktop-file-validate") is None,
    reason="desktop-file-validate is not installed (Debian: apt install desktop-file-utils)",
)


def install_entry(program: Path | str, data_home: Path) -> Path:
    subprocess.run(
        ["bash", str(PACKAGING / "install-desktop-entry.sh"), str(program)],
        env={**os.environ, "XDG_DATA_HOME": str(data_home)},
        check=True,
        capture_output=True,
    )
    return data_home / "applications" / "livecap.desktop"


def entry_values(entry: Path) -> dict[str, str]:
    lines = entry.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def validate(entry: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["desktop-file-validate", str(entry)], capture_output=True, text=True, check=False
    )


@needs_validator
def test_the_shipped_entry_passes_the_validator() -> None:
    result = validate(ROOT / "resources" / "livecap.desktop")
    assert result.returncode == 0 and result.stdout == "", result.stdout


def test_the_entry_names_one_main_category() -> None:
    categories = entry_values(ROOT / "resources" / "livecap.desktop")["Categories"]
    assert len(set(categories.split(";")) & MAIN_CATEGORIES) == 1, categories


@needs_validator
def test_an_installed_entry_quotes_a_program_path_with_a_space(tmp_path: Path) -> None:
    program = tmp_path / "My Programs" / "livecap"
    entry = install_entry(program, tmp_path / "data")
    assert entry_values(entry)["Exec"] == f'"{program}"'
    assert entry_values(entry)["TryExec"] == str(program)
    result = validate(entry)
    assert result.returncode == 0 and result.stdout == "", result.stdout


def test_an_installed_entry_escapes_what_quoting_does_not_cover(tmp_path: Path) -> None:
    program = tmp_path / 'a "b" $c %d' / "livecap"
    entry = install_entry(program, tmp_path / "data")
    # Inside the quotes " and $ get a backslash, which the string escape doubles; % doubles.
    folder = str(program.parent.parent)
    expected = folder + '/a \\\\"b\\\\" \\\\$c %%d/livecap'
    assert entry_values(entry)["Exec"] == f'"{expected}"'


@pytest.mark.skipif(shutil.which("gio") is None, reason="gio (libglib2.0-bin) is not installed")
def test_the_menu_starts_a_program_whose_path_has_spaces_and_quotes(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    program = tmp_path / 'Live "captions" $HOME' / "livecap"
    program.parent.mkdir()
    program.write_text(f"#!/bin/sh\ntouch '{marker}'\n", encoding="utf-8")
    program.chmod(0o755)
    entry = install_entry(program, tmp_path / "data")
    # gio parses Exec= as GLib's launchers (GNOME, Xfce...) do, then starts the program.
    env = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
    subprocess.run(["gio", "launch", str(entry)], env=env, check=True, timeout=30)
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()


def load_bundle_contents():
    spec = importlib.util.spec_from_file_location(
        "bundle_contents", PACKAGING / "bundle_contents.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "dest",
    [
        "torch/test/TCPStoreTest",
        "torch/bin/protoc",
        "torch/include/ATen/ATen.h",
        "torch/lib/libprotobuf.a",
        "libasound.so.2",
        "libstdc++.so.6",
        "libexpat.so.1",
        "libmvec.so.1",
        "libportaudio.so.2",
        "libjack.so.0",
        "libcairo.so.2",
        "torch/lib/libtorchbind_test.so",
        "resources/screenshots/overlay.png",
    ],
)
def test_the_bundle_leaves_out(dest: str) -> None:
    assert not load_bundle_contents().keep(dest)


@pytest.mark.parametrize(
    "dest",
    [
        "torch/lib/libtorch_cpu.so",
        "torch/bin/torch_shm_manager",  # `import torch` checks that it is there
        "torch/_C.cpython-311-x86_64-linux-gnu.so",
        "PySide6/Qt/plugins/platforms/libqxcb.so",
        "PySide6/Qt/plugins/platformthemes/libqgtk3.so",
        "libxcb-cursor.so.0",
        "libglib-2.0.so.0",
        "resources/styles/dark.qss",
    ],
)
def test_the_bundle_keeps(dest: str) -> None:
    assert load_bundle_contents().keep(dest)


def test_the_spec_filters_binaries_and_data_through_bundle_contents() -> None:
    spec = (PACKAGING / "livecap.spec").read_text(encoding="utf-8")
    assert "a.binaries = [entry for entry in a.binaries if keep(entry[0])]" in spec
    assert "a.datas = [entry for entry in a.datas if keep(entry[0])]" in spec


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) is not installed")
def test_the_glibc_check_fails_above_the_baseline(tmp_path: Path) -> None:
    shutil.copy(sys.executable, tmp_path / "python")
    (tmp_path / "notes.txt").write_text("not a program", encoding="utf-8")
    check = [sys.executable, str(PACKAGING / "glibc_needs.py"), str(tmp_path)]

    within = subprocess.run([*check, "--baseline", "99.0"], capture_output=True, text=True)
    above = subprocess.run([*check, "--baseline", "2.0"], capture_output=True, text=True)

    assert within.returncode == 0, within.stderr
    assert "GLIBC_2." in within.stdout and "python" in within.stdout
    assert above.returncode == 1
    assert "newer than the baseline 2.0" in above.stderr


# -- dev.sh --------------------------------------------------------------------------------


def run_dev_sh(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """dev.sh from a scratch copy of the repository's layout, with stand-ins for apt, dpkg
    and python that only say they were called: if it went on to install, that shows."""
    (tmp_path / "packaging").mkdir(exist_ok=True)
    shutil.copy(PACKAGING / "dev.sh", tmp_path / "packaging" / "dev.sh")
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    scripts = {
        "dpkg-query": "echo 'install ok installed'",  # every system package present
        "apt-get": "echo 'apt-get called' >&2; exit 1",
        "python-stub": "echo 'python-stub called' >&2; exit 1",
    }
    for name, script in scripts.items():
        (stubs / name).write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
        (stubs / name).chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    clean.pop("QT_QPA_PLATFORM", None)
    clean.update(PATH=f"{stubs}:{os.environ['PATH']}", PYTHON=str(stubs / "python-stub"), **env)
    return subprocess.run(
        ["bash", str(tmp_path / "packaging" / "dev.sh"), *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_dev_sh_app_without_a_display_says_so_and_stops(tmp_path: Path) -> None:
    result = run_dev_sh(tmp_path, "app")
    assert result.returncode == 2
    assert "no display found" in result.stderr
    assert "--virtual-display" in result.stderr
    assert "called" not in result.stderr  # stopped before installing anything


def test_dev_sh_app_with_a_display_goes_on(tmp_path: Path) -> None:
    result = run_dev_sh(tmp_path, "app", DISPLAY=":99")
    assert "no display found" not in result.stderr
    assert "called" in result.stderr  # went on to set up .venv


def test_dev_sh_app_virtual_display_goes_on_without_one(tmp_path: Path) -> None:
    result = run_dev_sh(tmp_path, "app", "--virtual-display")
    assert "no display found" not in result.stderr
    assert "called" in result.stderr  # went on to set up .venv


def test_build_bundle_refuses_an_unknown_variant_before_doing_anything(tmp_path: Path) -> None:
    (tmp_path / "packaging").mkdir()
    shutil.copy(PACKAGING / "build-bundle.sh", tmp_path / "packaging" / "build-bundle.sh")
    result = subprocess.run(
        ["bash", str(tmp_path / "packaging" / "build-bundle.sh"), "--variant", "rocm"],
        env={**os.environ, "PYTHON": "/bin/false"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 64
    assert "usage: bash packaging/build-bundle.sh [--cpu | --cuda" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["packaging"]
