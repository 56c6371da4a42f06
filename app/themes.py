"""Light, dark and high-contrast palettes on the Fusion style; "system" follows the desktop."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from app.settings import RESOURCES

# Disabled text keeps a 4.5:1 contrast on its button: a control that cannot be used now
# (the target language while there is no translation model) must still be readable.
_COLORS = {
    #        window     base       text       button     highlight  hl-text    mid       disabled
    "light": (
        "#f4f5f7", "#ffffff", "#1c1e21", "#e9ebee", "#2f6fdb", "#ffffff", "#b8bcc4", "#666a72"
    ),
    "dark": (
        "#1f2226", "#16181b", "#e8eaed", "#2c3036", "#4f8ef7", "#0b0c0e", "#4a4f57", "#9aa0a6"
    ),
    "high-contrast": (
        "#000000", "#000000", "#ffffff", "#000000", "#ffff00", "#000000", "#ffffff", "#9a9a9a"
    ),
}  # fmt: skip


def resolve(theme: str) -> str:
    """The palette a theme name means now: "system" becomes light or dark."""
    if theme in _COLORS:
        return theme
    hints = QGuiApplication.styleHints()
    return "dark" if hints.colorScheme() == Qt.ColorScheme.Dark else "light"


def palette_for(name: str) -> QPalette:
    colors = (QColor(c) for c in _COLORS[name])
    window, base, text, button, highlight, hl_text, mid, disabled = colors
    palette = QPalette()
    role = QPalette.ColorRole
    for r, color in (
        (role.Window, window),
        (role.WindowText, text),
        (role.Base, base),
        (role.AlternateBase, button),
        (role.Text, text),
        (role.Button, button),
        (role.ButtonText, text),
        (role.ToolTipBase, base),
        (role.ToolTipText, text),
        (role.PlaceholderText, mid),
        (role.Highlight, highlight),
        (role.HighlightedText, hl_text),
        (role.Mid, mid),
        (role.Link, highlight),
        (role.BrightText, QColor("#ff5555")),
    ):
        palette.setColor(r, color)
    for r in (role.WindowText, role.Text, role.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, r, disabled)
    return palette


def apply_theme(app: QApplication, theme: str) -> str:
    """Restyle the whole application; returns the palette name used."""
    name = resolve(theme)
    app.setStyle("Fusion")
    app.setPalette(palette_for(name))
    sheet = (RESOURCES / "styles" / "base.qss").read_text(encoding="utf-8")
    extra = RESOURCES / "styles" / f"{name}.qss"
    if extra.exists():
        sheet += "\n" + extra.read_text(encoding="utf-8")
    app.setStyleSheet(sheet)
    app.setProperty("livecapTheme", name)
    return name
