#!/usr/bin/env bash
# Build the one-folder PyInstaller bundle (dist/livecap/) and smoke-test it.
#   bash packaging/build-bundle.sh
# Takes a few minutes and about 1 GB of disk (torch is most of it); run it after
# `bash packaging/dev.sh test` has set up .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

.venv/bin/pyinstaller --noconfirm --distpath dist --workpath build packaging/livecap.spec
dist/livecap/livecap --help >/dev/null
dist/livecap/livecap devices  # exits 0 and says so plainly when there is no audio system
dist/livecap/livecap models >/dev/null
echo "Bundle ready: dist/livecap/livecap (add it to the menu: bash packaging/install-desktop-entry.sh \"$PWD/dist/livecap/livecap\")"
