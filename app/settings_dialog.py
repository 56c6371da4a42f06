"""The settings dialog: appearance, engine, overlay look and keyboard shortcuts."""

from __future__ import annotations

from PySide6.QtCore import QSize
from PySide6.QtGui import QColor, QFontDatabase, QFontInfo, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QColorDialog,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QKeySequenceEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.settings import (
    COMPUTE_DEVICES,
    LAYOUTS,
    OVERLAY_CONTENT,
    PRECISIONS,
    THEMES,
    AppSettings,
)

SHORTCUTS = {
    "start_stop": "Start / stop captions",
    "stop": "Stop captions",
    "overlay": "Show or hide the overlay",
    "click_through": "Overlay lets clicks through",
    "export": "Export this session",
    "history": "Open the history",
}


class ColorButton(QPushButton):
    """Shows the chosen colour as a swatch; its code is in the tooltip and for screen readers."""

    SWATCH = QSize(48, 18)

    def __init__(self, color: str, name: str, parent: QWidget | None = None) -> None:
        super().__init__("Choose…", parent)
        self.setAccessibleName(name)
        self.setIconSize(self.SWATCH)
        self.set_color(color)
        self.clicked.connect(self._choose)

    def set_color(self, color: str) -> None:
        self.color = QColor(color).name()
        self.setIcon(QIcon(swatch(QColor(self.color), self.SWATCH)))
        self.setToolTip(self.color)
        self.setAccessibleDescription(f"Colour {self.color}")

    def _choose(self) -> None:
        chosen = QColorDialog.getColor(QColor(self.color), self, self.accessibleName())
        if chosen.isValid():
            self.set_color(chosen.name())


def swatch(color: QColor, size: QSize) -> QPixmap:
    """A filled rectangle in a grey frame, so that black shows on black and white on white."""
    pixmap = QPixmap(size)
    pixmap.fill(QColor("#808080"))
    painter = QPainter(pixmap)
    painter.fillRect(pixmap.rect().adjusted(2, 2, -2, -2), color)
    painter.end()
    return pixmap


class FontChoice(QComboBox):
    """A font family, or "" to follow the system font, named as the font now in use."""

    def __init__(self, family: str, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName(name)
        in_use = QFontInfo(QApplication.font()).family()  # the family the system's resolves to
        self.addItem(f"System default ({in_use})", "")
        for known in QFontDatabase.families():
            if not QFontDatabase.isPrivateFamily(known):
                self.addItem(known, known)
        found = self.findData(family) if family else 0
        if found < 0:  # a font that is no longer installed: keep the choice, say so
            self.addItem(f"{family} (not installed)", family)
            found = self.count() - 1
        self.setCurrentIndex(found)

    def family(self) -> str:
        return self.currentData()


class SettingsDialog(QDialog):
    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle("Settings — Livecap")
        self.setObjectName("settingsDialog")
        self.setAccessibleName("Settings")
        tabs = QTabWidget(self)
        tabs.addTab(self._general(), "&Appearance")
        tabs.addTab(self._engine(), "&Engine")
        tabs.addTab(self._overlay(), "&Overlay")
        tabs.addTab(self._shortcuts(), "&Shortcuts")
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(tabs)
        layout.addWidget(buttons)

    def _choice(self, options, current: str, name: str) -> QComboBox:
        combo = QComboBox(self)
        combo.setAccessibleName(name)
        for option in options:
            combo.addItem(option.replace("-", " ").capitalize(), option)
        combo.setCurrentIndex(max(0, combo.findData(current)))
        return combo

    def _general(self) -> QWidget:
        page, form = QWidget(self), QFormLayout()
        page.setLayout(form)
        s = self.settings
        self.theme = self._choice(THEMES, s.get("view/theme"), "Theme")
        self.font_family = FontChoice(s.get("view/caption_font_family"), "Caption font", self)
        self.font_size = QSpinBox(self)
        self.font_size.setAccessibleName("Caption text size")
        self.font_size.setRange(0, 72)
        self.font_size.setSpecialValueText("Follow the system font")
        self.font_size.setValue(s.get("view/caption_font_size"))
        self.layout_choice = self._choice(LAYOUTS, s.get("view/layout"), "Translation pane")
        self.timestamps = QCheckBox("Show timestamps", self)
        self.timestamps.setChecked(s.get("view/timestamps"))
        self.profanity = QCheckBox("Mask strong language", self)
        self.profanity.setChecked(s.get("view/profanity_mask"))
        form.addRow("&Theme:", self.theme)
        form.addRow("Caption &font:", self.font_family)
        form.addRow("Caption text si&ze:", self.font_size)
        form.addRow("Translation &pane:", self.layout_choice)
        form.addRow(self.timestamps)
        form.addRow(self.profanity)
        return page

    def _engine(self) -> QWidget:
        page, form = QWidget(self), QFormLayout()
        page.setLayout(form)
        self.device = self._choice(
            COMPUTE_DEVICES, self.settings.get("engine/device"), "Compute device"
        )
        self.precision = self._choice(
            PRECISIONS, self.settings.get("engine/precision"), "Precision"
        )
        form.addRow("Compute &device:", self.device)
        form.addRow("&Precision:", self.precision)
        return page

    def _overlay(self) -> QWidget:
        page, form = QWidget(self), QFormLayout()
        page.setLayout(form)
        look = self.settings.overlay()
        self.look = look
        self.overlay_lines = QSpinBox(self)
        self.overlay_lines.setAccessibleName("Overlay lines")
        self.overlay_lines.setRange(1, 5)
        self.overlay_lines.setValue(look.lines)
        self.overlay_content = self._choice(OVERLAY_CONTENT, look.content, "Overlay shows")
        self.overlay_font = FontChoice(look.font_family, "Overlay font", self)
        self.overlay_size = QSpinBox(self)
        self.overlay_size.setAccessibleName("Overlay text size")
        self.overlay_size.setRange(8, 96)
        self.overlay_size.setValue(look.font_size)
        self.overlay_text = ColorButton(look.text_color, "Overlay text colour", self)
        self.overlay_background = ColorButton(look.background_color, "Overlay background", self)
        self.overlay_opacity = QDoubleSpinBox(self)
        self.overlay_opacity.setAccessibleName("Overlay background opacity")
        self.overlay_opacity.setRange(0.0, 1.0)
        self.overlay_opacity.setSingleStep(0.05)
        self.overlay_opacity.setValue(look.opacity)
        form.addRow("&Lines:", self.overlay_lines)
        form.addRow("&Shows:", self.overlay_content)
        form.addRow("&Font:", self.overlay_font)
        form.addRow("Text si&ze:", self.overlay_size)
        form.addRow("&Text colour:", self.overlay_text)
        form.addRow("&Background:", self.overlay_background)
        form.addRow("Background &opacity:", self.overlay_opacity)
        return page

    def _shortcuts(self) -> QWidget:
        page, form = QWidget(self), QFormLayout()
        page.setLayout(form)
        self.shortcut_edits: dict[str, QKeySequenceEdit] = {}
        for key, label in SHORTCUTS.items():
            edit = QKeySequenceEdit(self)
            edit.setAccessibleName(label)
            edit.setKeySequence(str(self.settings.get(f"shortcuts/{key}")))
            self.shortcut_edits[key] = edit
            form.addRow(f"{label}:", edit)
        return page

    def accept(self) -> None:
        s = self.settings
        s.set("view/theme", self.theme.currentData())
        s.set("view/caption_font_family", self.font_family.family())
        s.set("view/caption_font_size", self.font_size.value())
        s.set("view/layout", self.layout_choice.currentData())
        s.set("view/timestamps", self.timestamps.isChecked())
        s.set("view/profanity_mask", self.profanity.isChecked())
        s.set("engine/device", self.device.currentData())
        s.set("engine/precision", self.precision.currentData())
        look = self.look
        look.lines = self.overlay_lines.value()
        look.content = self.overlay_content.currentData()
        look.font_family = self.overlay_font.family()
        look.font_size = self.overlay_size.value()
        look.text_color = self.overlay_text.color
        look.background_color = self.overlay_background.color
        look.opacity = self.overlay_opacity.value()
        s.set_overlay(look)
        for key, edit in self.shortcut_edits.items():
            s.set(f"shortcuts/{key}", edit.keySequence().toString())
        super().accept()
