"""The model folders a user added (in the app's model manager), kept where the CLI reads them.

A JSON list of paths in $XDG_CONFIG_HOME/livecap/local_folders.json (else
~/.config/livecap/local_folders.json): plain JSON, not QSettings, so that the Qt-free
`livecap models` lists the same folders as the app. It is replaced atomically, so a crash
or a full disk mid-write leaves the previous list; an unreadable file is kept aside, never
overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "livecap" / "local_folders.json"


def load(path: Path | None = None) -> list[str]:
    """The saved folders, in the order they were added; [] when none were saved (or the
    file cannot be read: the app and the CLI still work, without the list)."""
    folders = _read(path or default_path())
    return folders if folders is not None else []


def save(folders: list[str], path: Path | None = None) -> None:
    """Replace the list (duplicates dropped, order kept). Raises OSError when it cannot be
    written; the previous list is then unchanged."""
    path = path or default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and _read(path) is None:
        path.replace(path.with_name(path.name + ".damaged"))
    text = json.dumps(list(dict.fromkeys(str(f) for f in folders)), indent=1) + "\n"
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".local_folders-")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _read(path: Path) -> list[str] | None:
    """The list in `path`: [] when there is no file, None when it is not a list of paths."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        return None
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        return None
    return data
