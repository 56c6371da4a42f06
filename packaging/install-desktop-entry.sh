#!/usr/bin/env bash
# Put Livecap in the desktop's application menu for this user: the .desktop entry and icons.
#   bash packaging/install-desktop-entry.sh [path/to/livecap]
# The optional argument is the program to start (default: `livecap` on PATH, as installed
# by `pip install .`; give dist/cpu/livecap/livecap for a bundle). A path may hold spaces.
set -euo pipefail

PROGRAM="${1:-livecap}"
case "$PROGRAM" in
    */*) PROGRAM="$(realpath -m -- "$PROGRAM")" ;; # the menu starts it from another folder
esac
if [[ "$PROGRAM" == *$'\n'* ]]; then
    echo "install-desktop-entry: the program path holds a line break; move the program" >&2
    exit 2
fi
cd "$(dirname "$0")/.."

# A desktop entry's string values escape a backslash as \\ (applied first, when reading).
string_value() {
    local value="${1//\\/\\\\}"
    printf '%s' "$value"
}

# Exec= takes the program as one quoted argument (Desktop Entry spec, "The Exec key"):
# inside double quotes ", `, $ and \ get a backslash, which the string escape then doubles;
# a literal % is written %%.
exec_argument() {
    local value="$1"
    value="${value//\\/\\\\}"
    value="${value//\"/\\\"}"
    value="${value//\`/\\\`}"
    value="${value//\$/\\\$}"
    value="${value//%/%%}"
    printf '"%s"' "$(string_value "$value")"
}

DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
mkdir -p "$DATA/applications" "$DATA/icons/hicolor/scalable/apps"
for size in 48 128 256; do
    mkdir -p "$DATA/icons/hicolor/${size}x${size}/apps"
    install -m 0644 "resources/icons/livecap-$size.png" \
        "$DATA/icons/hicolor/${size}x${size}/apps/livecap.png"
done
install -m 0644 resources/icons/livecap.svg "$DATA/icons/hicolor/scalable/apps/livecap.svg"

exec_line="Exec=$(exec_argument "$PROGRAM")"
try_exec_line="TryExec=$(string_value "$PROGRAM")"
entry="$DATA/applications/livecap.desktop"
while IFS= read -r line; do
    case "$line" in
        Exec=*) printf '%s\n' "$exec_line" ;;
        TryExec=*) printf '%s\n' "$try_exec_line" ;;
        *) printf '%s\n' "$line" ;;
    esac
done <resources/livecap.desktop >"$entry"
command -v update-desktop-database >/dev/null && update-desktop-database "$DATA/applications" || true
echo "Installed $entry"
