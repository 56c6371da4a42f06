"""Typed access to the user's settings, persisted with QSettings.

Defaults live in resources/default_settings.json so that a packager can change them without
touching code. Every key has one home here; widgets never spell QSettings keys themselves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from engine import local_folders

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
DEFAULTS: dict[str, object] = json.loads(
    (RESOURCES / "default_settings.json").read_text(encoding="utf-8")
)

THEMES = ("system", "light", "dark", "high-contrast")
COMPUTE_DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "float32", "bfloat16", "int8")
OVERLAY_CONTENT = ("captions", "translation", "both")
LAYOUTS = ("beside", "below")


@dataclass
class OverlayLook:
    """How the floating caption window looks and where it sits."""

    lines: int = 2  # 1..5
    font_family: str = ""  # "" = the application font
    font_size: int = 24
    text_color: str = "#ffffff"
    background_color: str = "#000000"
    opacity: float = 0.7  # of the background, 0..1
    content: str = "captions"  # one of OVERLAY_CONTENT
    click_through: bool = False
    x: int = -1  # -1: centred near the bottom of the screen on first show
    y: int = -1
    width: int = 900
    height: int = 0  # 0: fit the number of lines

    def clamped(self) -> OverlayLook:
        look = OverlayLook(**asdict(self))
        look.lines = min(5, max(1, int(look.lines)))
        look.font_size = min(96, max(8, int(look.font_size)))
        look.opacity = min(1.0, max(0.0, float(look.opacity)))
        if look.content not in OVERLAY_CONTENT:
            look.content = "captions"
        return look


class AppSettings:
    """One QSettings store; tests pass their own (an INI file in a temporary folder).

    The local model folders are the exception: they live in engine.local_folders' JSON
    file (`folders_file`, else its default), which the CLI reads too.
    """

    def __init__(
        self, qsettings: QSettings | None = None, folders_file: Path | None = None
    ) -> None:
        self.q = qsettings if qsettings is not None else QSettings("Livecap", "Livecap")
        self.folders_file = folders_file or local_folders.default_path()
        self._migrate_local_folders()

    # -- plain values ---------------------------------------------------------------------
    def get(self, key: str):
        default = DEFAULTS.get(key)
        value = self.q.value(key, default)
        return _coerce(value, default)

    def set(self, key: str, value: object) -> None:
        self.q.setValue(key, value)

    def sync(self) -> None:
        self.q.sync()

    # -- grouped values -------------------------------------------------------------------
    def overlay(self) -> OverlayLook:
        look = OverlayLook()
        for f in fields(OverlayLook):
            default = getattr(look, f.name)
            setattr(look, f.name, _coerce(self.q.value(f"overlay/{f.name}", default), default))
        return look.clamped()

    def set_overlay(self, look: OverlayLook) -> None:
        for name, value in asdict(look.clamped()).items():
            self.q.setValue(f"overlay/{name}", value)

    def local_model_folders(self) -> list[str]:
        return local_folders.load(self.folders_file)

    def set_local_model_folders(self, folders: list[str]) -> None:
        """Raises OSError when the list cannot be written (the old list is then kept)."""
        local_folders.save(folders, self.folders_file)

    def _migrate_local_folders(self) -> None:
        """Earlier versions kept the folders in QSettings: move them, once, to the file."""
        old = [str(p) for p in _as_list(self.q.value("models/local_folders"))]
        if not old:
            return
        try:
            self.set_local_model_folders([*self.local_model_folders(), *old])
        except OSError:
            return  # kept in QSettings; moved on a later start
        self.q.remove("models/local_folders")

    def servers(self) -> dict[str, str]:
        """The caption servers the user added: address → API key ("" for none), in the
        order added. Kept as JSON text in QSettings, in plain text like every other setting
        (Livecap has no keyring)."""
        try:
            data = json.loads(str(self.q.value("servers/list", "") or "{}"))
        except ValueError:
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(address): str(key) for address, key in data.items()}

    def set_servers(self, servers: dict[str, str]) -> None:
        self.q.setValue("servers/list", json.dumps(servers))

    def server_key(self, address: str) -> str | None:
        """The key saved for a server, None when it has none (or is not a server)."""
        return self.servers().get(address) or None

    def window_state(self, name: str) -> QByteArray | None:
        value = self.q.value(f"window/{name}")
        return value if isinstance(value, QByteArray) else None

    def set_window_state(self, name: str, value: QByteArray) -> None:
        self.q.setValue(f"window/{name}", value)


def _as_list(value: object) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _coerce(value: object, default: object):
    """QSettings' INI backend returns strings; bring them back to the default's type."""
    if value is None:
        return default
    if isinstance(default, bool):
        return value if isinstance(value, bool) else str(value).lower() in ("true", "1", "yes")
    if isinstance(default, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            return default
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            return default
    if isinstance(default, str):
        return str(value)
    return value
