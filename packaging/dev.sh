#!/usr/bin/env bash
# Set up what Livecap needs on this machine, then run it.
#   bash packaging/dev.sh app                     start the GUI (needs a display)
#   bash packaging/dev.sh app --virtual-display   start it on an invisible Xvfb display
#   bash packaging/dev.sh test                    run the test suite
# Installs missing system libraries with apt (when root), creates .venv, installs torch
# (pinned CPU-friendly version first, so pip pulls no CUDA wheels) and the project with its
# test extras; skips pip when pyproject.toml has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${1:-}"
shift || true
case "$MODE" in
    app | test) ;;
    *)
        echo "usage: bash packaging/dev.sh app [--virtual-display] | test [pytest args...]" >&2
        exit 64
        ;;
esac

# The app's own arguments, less --virtual-display (which asks for Xvfb).
VIRTUAL_DISPLAY=0
if [ "$MODE" = app ]; then
    app_args=()
    for arg in "$@"; do
        if [ "$arg" = --virtual-display ]; then VIRTUAL_DISPLAY=1; else app_args+=("$arg"); fi
    done
    set -- ${app_args[@]+"${app_args[@]}"}
fi

# Checked before installing anything: without a display nobody would see the window (and
# its first-run questions), so say so at once rather than run it where no one can answer.
require_display() {
    [ "$VIRTUAL_DISPLAY" -eq 1 ] && return 0
    [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && return 0
    case "${QT_QPA_PLATFORM:-}" in offscreen* | minimal* | vnc*) return 0 ;; esac
    echo "dev.sh: no display found (DISPLAY and WAYLAND_DISPLAY are unset): the app's window would not be seen." >&2
    echo "dev.sh: start it from a desktop session, or add --virtual-display to run it on an invisible virtual display (Xvfb), e.g. for screenshots:" >&2
    echo "  bash packaging/dev.sh app --virtual-display" >&2
    exit 2
}
if [ "$MODE" = app ]; then require_display; fi

APT_PACKAGES=(
    libportaudio2 libasound2-plugins pulseaudio pulseaudio-utils espeak-ng sox
    xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-image0
    libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-xkb1
    libxkbcommon-x11-0 libdbus-1-3 libfontconfig1 libegl1 libgl1
)
# the packaging tests check the desktop entry with desktop-file-validate
if [ "$MODE" = test ]; then APT_PACKAGES+=(desktop-file-utils); fi
TORCH_VERSION=2.13.0
PYTHON="${PYTHON:-python3}"

install_system_packages() {
    command -v dpkg-query >/dev/null || return 0
    local missing=()
    for package in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "dev.sh: missing system packages: ${missing[*]}" >&2
        echo "dev.sh: install them with: sudo apt-get install ${missing[*]}" >&2
        return 0
    fi
    echo "dev.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python_packages() {
    if [ ! -x .venv/bin/python ]; then
        if ! "$PYTHON" -m venv .venv 2>/dev/null; then
            [ "$(id -u)" -eq 0 ] && apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv .venv
        fi
    fi
    local stamp=.venv/.livecap-installed
    local digest
    digest="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
        return 0
    fi
    echo "dev.sh: installing Python packages into .venv (log: .venv/pip-install.log)"
    # torch first and pinned, so that the project's unpinned "torch" is already satisfied
    # and pip does not pull a different build (with CUDA libraries) along with it.
    if ! {
        .venv/bin/python -m pip install "torch==${TORCH_VERSION}" &&
            .venv/bin/python -m pip install -e '.[test]'
    } >.venv/pip-install.log 2>&1; then
        tail -n 30 .venv/pip-install.log >&2
        echo "dev.sh: pip install failed; the whole log is in .venv/pip-install.log" >&2
        exit 1
    fi
    echo "$digest" >"$stamp"
}

install_system_packages
install_python_packages
# Byte-compile our own modules now (quick when they are current): otherwise a fresh clone
# compiles each on first import, and one imported by a loading thread holds the GIL long
# enough to stall the window for a moment on the first start.
.venv/bin/python -m compileall -q app engine main.py >/dev/null

if [ "$MODE" = app ]; then
    if [ "$VIRTUAL_DISPLAY" -eq 1 ]; then
        command -v xvfb-run >/dev/null || {
            echo "dev.sh: --virtual-display needs xvfb-run (Debian: apt install xvfb xauth)" >&2
            exit 2
        }
        echo "dev.sh: starting the app on a virtual display (Xvfb)" >&2
        exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python main.py "$@"
    fi
    exec .venv/bin/python main.py "$@"
fi

export QT_QPA_PLATFORM=offscreen
status=0
.venv/bin/python -m pytest -q "$@" || status=$?
if [ "$status" -eq 5 ]; then
    # pytest's "no tests collected": an error for the whole suite, fine for a selection.
    echo "dev.sh: no tests were collected" >&2
    [ $# -eq 0 ] && exit 1
    exit 0
fi
exit "$status"
