#!/usr/bin/env bash
# Put Livecap in the desktop's application menu for this user: the .desktop entry and icons.
#   bash packaging/install-desktop-entry.sh [path/to/livecap]
# The optional argument is the program to start (default: `livecap` on PATH, as installed
# by `pip install .`; give dist/livecap/livecap for a PyInstaller bundle).
set -euo pipefail
cd "$(dirname "$0")/.."

PROGRAM="${1:-livecap}"
DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
mkdir -p "$DATA/applications" "$DATA/icons/hicolor/scalable/apps"
for size in 48 128 256; do
    mkdir -p "$DATA/icons/hicolor/${size}x${size}/apps"
    install -m 0644 "resources/icons/livecap-$size.png" \
        "$DATA/icons/hicolor/${size}x${size}/apps/livecap.png"
done
install -m 0644 resources/icons/livecap.svg "$DATA/icons/hicolor/scalable/apps/livecap.svg"
sed -e "s|^Exec=.*|Exec=$PROGRAM|" -e "s|^TryExec=.*|TryExec=$PROGRAM|" \
    resources/livecap.desktop >"$DATA/applications/livecap.desktop"
command -v update-desktop-database >/dev/null && update-desktop-database "$DATA/applications" || true
echo "Installed $DATA/applications/livecap.desktop"
