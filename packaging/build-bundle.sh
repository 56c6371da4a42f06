#!/usr/bin/env bash
# Build the one-folder Livecap bundle, check it and pack it.
#   bash packaging/build-bundle.sh              CPU variant: torch's CPU-only build
#   bash packaging/build-bundle.sh --cuda       CUDA variant: torch's CUDA build (NVIDIA GPUs)
# Result: dist/<variant>/livecap/ (start dist/<variant>/livecap/livecap) and
# dist/livecap-<version>-linux-x86_64-<variant>.tar.gz.
#
# Sets up its own build venv, .bundle-venv-<variant>, with torch and PyInstaller pinned
# (the project's .venv is not touched), and skips pip when nothing changed since the last
# build. Needs a python3 with its shared libpython (Debian's has it; pyenv's needs
# --enable-shared), and installs python3-venv and binutils (objdump, readelf) with apt when
# run as root. The CUDA variant downloads about 3 GB of wheels (torch's CUDA 13 build).
# Where the bundle runs it needs glibc 2.35 or newer (the Python built here needs it),
# libstdc++ from GCC 11 or newer, and the system's PortAudio (bundle_contents.py says which
# libraries come from the system, and why). Then: bash packaging/smoke-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
PYINSTALLER_VERSION=6.22.3
# The oldest glibc the bundle must start on (Ubuntu 22.04 has 2.35). A build on a newer
# system fails the check below when a copied library needs more.
GLIBC_BASELINE="${GLIBC_BASELINE:-2.35}"
PYTHON="${PYTHON:-python3}"

usage() {
    echo "usage: bash packaging/build-bundle.sh [--cpu | --cuda | --variant cpu|cuda]"
}

variant=cpu
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) variant=cpu ;;
        --cuda) variant=cuda ;;
        --variant)
            variant="${2:-}"
            shift || true
            ;;
        --variant=*) variant="${1#--variant=}" ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            exit 64
            ;;
    esac
    shift
done

case "$variant" in
    # The local version label names PyTorch's CPU-only build: without it pip may take
    # PyPI's default Linux build, which is the CUDA one (3 GB of NVIDIA libraries).
    cpu) torch_requirement="torch==${TORCH_VERSION}+cpu" ;;
    # "===" matches the version string exactly: PyPI's CUDA build, never a "+cpu" build
    # that a configured find-links folder or extra index also offers as 2.13.0.
    cuda) torch_requirement="torch===${TORCH_VERSION}" ;;
    *)
        usage >&2
        exit 64
        ;;
esac

venv=".bundle-venv-$variant"
dist="dist/$variant"

project_dependencies() {
    "$PYTHON" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))'
}

# PyInstaller and the glibc check read ELF files with binutils (objdump, readelf).
install_build_tools() {
    command -v objdump >/dev/null && command -v readelf >/dev/null && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "build-bundle: needs objdump and readelf; install binutils (Debian: sudo apt-get install binutils)" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null
}

install_build_venv() {
    if [ ! -x "$venv/bin/python" ]; then
        if ! "$PYTHON" -m venv "$venv" 2>/dev/null; then
            [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            rm -rf "$venv"
            "$PYTHON" -m venv "$venv"
        fi
    fi
    local stamp="$venv/.livecap-installed"
    local digest
    digest="$({
        project_dependencies
        echo "$torch_requirement pyinstaller==$PYINSTALLER_VERSION"
    } | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
        return 0
    fi
    echo "build-bundle: installing $torch_requirement, PyInstaller and the app's dependencies into $venv (log: $venv/pip-install.log)"
    local requirements="$venv/requirements.txt"
    project_dependencies >"$requirements"
    # torch first and pinned, so that the project's unpinned "torch" is already satisfied.
    if ! "$venv/bin/python" -m pip install "$torch_requirement" >"$venv/pip-install.log" 2>&1; then
        tail -n 20 "$venv/pip-install.log" >&2
        echo "build-bundle: cannot install $torch_requirement (whole log: $venv/pip-install.log)." >&2
        if [ "$variant" = cpu ]; then
            echo "build-bundle: PyTorch's CPU-only build is not on PyPI; point pip at PyTorch's CPU wheel index, e.g." >&2
            echo "  PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash packaging/build-bundle.sh" >&2
            echo "or at a folder holding the wheel with PIP_FIND_LINKS=FOLDER." >&2
        else
            echo "build-bundle: the CUDA build comes from PyPI; check that pip can reach it (or set PIP_INDEX_URL to a mirror)." >&2
        fi
        exit 1
    fi
    if ! "$venv/bin/python" -m pip install "pyinstaller==$PYINSTALLER_VERSION" -r "$requirements" \
        >>"$venv/pip-install.log" 2>&1; then
        tail -n 20 "$venv/pip-install.log" >&2
        echo "build-bundle: pip install failed; the whole log is in $venv/pip-install.log" >&2
        exit 1
    fi
    echo "$digest" >"$stamp"
}

check_torch_variant() {
    "$venv/bin/python" - "$variant" <<'EOF'
import sys

import torch

variant, cuda = sys.argv[1], torch.version.cuda
if (variant == "cuda") != (cuda is not None):
    sys.exit(f"build-bundle: the {variant} variant got torch {torch.__version__} (CUDA: {cuda})")
print(f"build-bundle: torch {torch.__version__}, CUDA {cuda or 'none'}")
EOF
}

install_build_tools
install_build_venv
check_torch_variant

rm -rf "$dist"
"$venv/bin/pyinstaller" --noconfirm --log-level WARN \
    --distpath "$dist" --workpath "build/bundle-$variant" packaging/livecap.spec

echo "build-bundle: glibc versions the bundle needs (baseline $GLIBC_BASELINE):"
"$venv/bin/python" packaging/glibc_needs.py "$dist/livecap" --baseline "$GLIBC_BASELINE"

"$dist/livecap/livecap" --help >/dev/null
"$dist/livecap/livecap" devices # exits 0 and says so plainly when there is no audio system
"$dist/livecap/livecap" models >/dev/null

version="$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
archive="dist/livecap-$version-linux-x86_64-$variant.tar.gz"
tar -C "$dist" -czf "$archive" livecap

files="$(find "$dist/livecap" -type f | wc -l)"
unpacked_mb="$(du -s --apparent-size -B 1000000 "$dist/livecap" | cut -f1)"
archive_mb="$(du --apparent-size -B 1000000 "$archive" | cut -f1)"
echo "build-bundle: $dist/livecap: $unpacked_mb MB in $files files; $archive: $archive_mb MB"
echo "Start it: $dist/livecap/livecap (add it to the menu: bash packaging/install-desktop-entry.sh \"$PWD/$dist/livecap/livecap\")"
