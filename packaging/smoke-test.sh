#!/usr/bin/env bash
# Try a built bundle as a new user would (a few minutes; not part of the test suite).
#   bash packaging/build-bundle.sh && bash packaging/smoke-test.sh [dist/cpu/livecap]
# Builds tiny models of the three families with the test fixtures (in .venv, which
# `bash packaging/dev.sh test` sets up; transformers is the test-only builder), then checks
# that the bundle holds no torch tests or tools, that --help, devices and models work, that
# `transcribe` gives the same transcript as the source tree does in .venv, and that the app
# starts under Xvfb; its screenshot is left in $SMOKE_OUT (default: build/smoke).
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE="$(realpath "${1:-dist/cpu/livecap}")"
PROGRAM="$BUNDLE/livecap"
OUT="$(realpath -m "${SMOKE_OUT:-build/smoke}")"
[ -x "$PROGRAM" ] || {
    echo "smoke-test: no bundle at $BUNDLE; build it with: bash packaging/build-bundle.sh" >&2
    exit 2
}
[ -x .venv/bin/python ] || {
    echo "smoke-test: needs .venv for the model fixtures: bash packaging/dev.sh test" >&2
    exit 2
}
rm -rf "$OUT"
mkdir -p "$OUT/home"
# A new user: empty data, settings and model cache; nothing reaches the network.
export HOME="$OUT/home" XDG_DATA_HOME="$OUT/home/data" XDG_CONFIG_HOME="$OUT/home/config"
export HF_HOME="$OUT/home/hf" HF_HUB_OFFLINE=1
export PYTHONDONTWRITEBYTECODE=1 # the fixtures are imported read-only

fail() {
    echo "smoke-test: FAILED: $*" >&2
    exit 1
}
step() { echo "smoke-test: $*"; }

step "contents"
for folder in torch/test torch/include; do
    [ ! -e "$BUNDLE/_internal/$folder" ] || fail "$folder is in the bundle"
done
# torch/bin holds only what `import torch` checks for.
[ "$(ls "$BUNDLE/_internal/torch/bin")" = torch_shm_manager ] || fail "torch/bin holds more than torch_shm_manager"
for library in libportaudio.so.2 libasound.so.2 libjack.so.0 libstdc++.so.6 libexpat.so.1 libmvec.so.1; do
    [ ! -e "$BUNDLE/_internal/$library" ] || fail "$library is bundled; it must come from the system"
done

step "--help, devices, models"
"$PROGRAM" --help | grep -q "transcribe" || fail "--help does not list the subcommands"
"$PROGRAM" devices >"$OUT/devices.txt" || fail "devices exited $?"
# The system's PortAudio (libportaudio2, which this build host has) must be found.
! grep -q "PortAudio is not installed" "$OUT/devices.txt" || fail "the bundle finds no PortAudio"
"$PROGRAM" models | grep -q "Known models:" || fail "models lists no catalogue"

step "tiny models and a clip (test fixtures, in .venv)"
.venv/bin/python - "$OUT" <<'EOF'
import sys
from pathlib import Path

import soundfile

from tests import kyutai_fixtures, s2t_fixtures, sed_fixtures

out = Path(sys.argv[1])
kyutai_fixtures.build_tiny_model(out / "kyutai", kyutai_fixtures.SHAPES["gqa"])
s2t_fixtures.build("asr", out / "s2t")
sed_fixtures.build("bart", out / "sed")
clip = kyutai_fixtures.speechlike_audio(4.0, seed=3, pauses=((1.5, 2.0),))
soundfile.write(out / "clip.wav", clip, kyutai_fixtures.SAMPLE_RATE, subtype="FLOAT")
EOF

for family in kyutai s2t sed; do
    step "transcribe with the tiny $family model"
    args=(transcribe "$OUT/clip.wav" --model "$OUT/$family" --device cpu --format json)
    "$PROGRAM" "${args[@]}" -o "$OUT/$family-bundle.json" || fail "bundle transcribe ($family) exited $?"
    .venv/bin/python main.py "${args[@]}" -o "$OUT/$family-venv.json"
    cmp -s "$OUT/$family-bundle.json" "$OUT/$family-venv.json" ||
        fail "the bundle's $family transcript differs from the source tree's ($OUT/$family-*.json)"
done

step "the app under Xvfb"
xvfb-run -a -s "-screen 0 1600x1000x24" bash -c '
    "$1" >"$2/app.log" 2>&1 &
    app=$!
    sleep 25
    kill -0 "$app" || { echo "the app exited early:"; cat "$2/app.log"; exit 1; }
    QT_QPA_PLATFORM=xcb .venv/bin/python -c "
import sys
from PySide6.QtGui import QGuiApplication
app = QGuiApplication([])
sys.exit(0 if app.primaryScreen().grabWindow(0).save(sys.argv[1]) else 1)
" "$2/app.png"
    status=$?
    kill "$app"
    wait "$app" || true
    exit "$status"
' smoke "$PROGRAM" "$OUT" || fail "the app did not start under Xvfb (log: $OUT/app.log)"
step "passed; the app's screenshot: $OUT/app.png"
