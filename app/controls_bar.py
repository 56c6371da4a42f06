"""The row of controls above the panes: start/stop, input, models, target language, overlay.

The bar holds the lists and says what the user asked for through signals; the window
decides what that means (settings, dialogs, sessions). When the window is too narrow for
one row, the model choices move to a second row instead of cutting their text.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.controller import InputChoice
from app.live_transcript import CAPTION, TRANSLATION
from engine import catalogue

DEFAULT_INPUT = "Default microphone"
FILE_INPUT = "Audio file…"
MANAGE_MODELS = "Manage models…"
NO_TRANSLATION = "No translation"
SPACING = 6
STATE_TEXTS = {"idle": "Start", "loading": "Cancel", "running": "Stop", "stopping": "Stopping…"}


class InputCombo(QComboBox):
    """The input chooser; `opening` fires before its list drops down, so the list can be
    read again (a device plugged in, a PulseAudio monitor that appeared, since the start)."""

    opening = Signal()

    def showPopup(self) -> None:  # noqa: N802 - Qt API
        self.opening.emit()
        super().showPopup()


class ControlsBar(QWidget):
    start_stop_requested = Signal()
    input_list_opening = Signal()
    input_chosen = Signal(str)  # a device's label
    file_input_requested = Signal()
    model_chosen = Signal(str, object)  # role, model name (None: "Manage models…")
    language_chosen = Signal(str)
    overlay_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("controlsBar")
        self.start_button = QPushButton("Start", self)
        self.start_button.setObjectName("startButton")
        self.start_button.setAccessibleName("Start or stop captions")
        self.start_button.clicked.connect(self.start_stop_requested)

        self.lead = self._group()
        self.lead.layout().addWidget(self.start_button)
        self.input_combo = self._combo(
            self.lead, InputCombo(), "inputCombo", "Audio input", "Input:"
        )
        self.input_combo.opening.connect(self.input_list_opening)
        self.input_combo.activated.connect(self._on_input_activated)

        self.models = self._group()
        self.caption_combo = self._combo(
            self.models, QComboBox(), "captionModelCombo", "Caption model", "Captions:"
        )
        self.translation_combo = self._combo(
            self.models, QComboBox(), "translationModelCombo", "Translation model", "Translate:"
        )
        self.language_combo = self._combo(
            self.models, QComboBox(), "targetLanguageCombo", "Target language", "to"
        )
        for role, combo in ((CAPTION, self.caption_combo), (TRANSLATION, self.translation_combo)):
            combo.activated.connect(
                lambda index, r=role, c=combo: self.model_chosen.emit(r, c.itemData(index))
            )
        self.language_combo.activated.connect(
            lambda: self.language_chosen.emit(self.language_combo.currentData())
        )

        self.overlay_button = QPushButton("Overlay", self)
        self.overlay_button.setObjectName("overlayButton")
        self.overlay_button.setAccessibleName("Show caption overlay")
        self.overlay_button.setCheckable(True)
        self.overlay_button.toggled.connect(self.overlay_toggled)

        rows = QVBoxLayout(self)
        rows.setContentsMargins(0, 0, 0, 0)
        rows.setSpacing(SPACING)
        self.first_row, self.second_row = QHBoxLayout(), QHBoxLayout()
        for row in (self.first_row, self.second_row):
            row.setSpacing(SPACING)
            rows.addLayout(row)
        self.first_row.addWidget(self.lead)
        self.first_row.addWidget(self.models)
        self.first_row.addStretch(1)
        self.first_row.addWidget(self.overlay_button)
        self.two_rows = False

    # -- building ---------------------------------------------------------------------------
    def _group(self) -> QWidget:
        group = QWidget(self)
        layout = QHBoxLayout(group)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(SPACING)
        return group

    @staticmethod
    def _combo(
        group: QWidget, combo: QComboBox, name: str, accessible: str, label: str
    ) -> QComboBox:
        caption = QLabel(label, group)
        combo.setParent(group)
        combo.setObjectName(name)
        combo.setAccessibleName(accessible)
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        combo.setMinimumContentsLength(12)
        caption.setBuddy(combo)
        group.layout().addWidget(caption)
        group.layout().addWidget(combo)
        return combo

    # -- one row or two ---------------------------------------------------------------------
    def _one_row_width(self) -> int:
        parts = (self.lead, self.models, self.overlay_button)
        return sum(part.sizeHint().width() for part in parts) + SPACING * (len(parts) - 1)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        """Narrow enough for two rows; the combos themselves never shrink below their text."""
        first = self.lead.sizeHint().width() + SPACING + self.overlay_button.sizeHint().width()
        width = max(first, self.models.sizeHint().width())
        return QSize(width, super().minimumSizeHint().height())

    def _arrange(self) -> None:
        two_rows = self.width() < self._one_row_width()
        if two_rows == self.two_rows:
            return
        self.two_rows = two_rows
        (self.first_row if two_rows else self.second_row).removeWidget(self.models)
        if two_rows:
            self.second_row.addWidget(self.models)
            self.second_row.addStretch(1)
        else:
            self.second_row.takeAt(0)  # the stretch
            self.first_row.insertWidget(1, self.models)
        self.updateGeometry()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        self._arrange()

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.LayoutRequest:  # a list's text changed its width
            self._arrange()
        return super().event(event)

    # -- state ------------------------------------------------------------------------------
    def set_state(self, state: str, start_shortcut: str, translating: bool) -> None:
        """Follow the session state: the button's words, and lists only while idle."""
        idle = state == "idle"
        text = STATE_TEXTS[state]
        self.start_button.setText(text)
        self.start_button.setEnabled(state != "stopping")
        self.start_button.setToolTip(f"{text} ({start_shortcut if idle else 'Esc'})")
        for combo in (self.input_combo, self.caption_combo, self.translation_combo):
            combo.setEnabled(idle)
        self.language_combo.setEnabled(idle and translating)

    # -- inputs -----------------------------------------------------------------------------
    def reset_inputs(self) -> None:
        self.input_combo.clear()
        self.input_combo.addItem(DEFAULT_INPUT, InputChoice(DEFAULT_INPUT))
        self.input_combo.addItem(FILE_INPUT, None)

    def set_devices(self, devices: list, remembered: str = "") -> None:
        """Replace the listed capture devices, keeping files; then choose `remembered` (a
        label) if it is listed, else keep the current choice while it is still listed."""
        combo = self.input_combo
        current = combo.currentText()
        for index in reversed(range(combo.count())):
            choice = combo.itemData(index)
            if isinstance(choice, InputChoice) and choice.device is not None:
                combo.removeItem(index)
        for at, device in enumerate(devices, start=1):
            kind = "System audio" if device.is_system_audio else "Microphone"
            label = f"{kind}: {device.name}"
            choice = InputChoice(label, device.index, system_audio=device.is_system_audio)
            combo.insertItem(at, label, choice)
            combo.setItemData(
                at,
                "Captures what this computer plays (meetings, videos)"
                if device.is_system_audio
                else f"{device.hostapi}, {device.channels} channels",
                Qt.ItemDataRole.ToolTipRole,
            )
        found = combo.findText(remembered) if remembered else -1
        combo.setCurrentIndex(max(0, found if found >= 0 else combo.findText(current)))

    def _on_input_activated(self, index: int) -> None:
        if self.input_combo.itemText(index) == FILE_INPUT:
            self.file_input_requested.emit()
        else:
            self.input_chosen.emit(self.input_combo.itemText(index))

    def add_file(self, path: Path) -> None:
        label = f"File: {path.name}"
        found = self.input_combo.findText(label)
        if found < 0:
            self.input_combo.insertItem(
                self.input_combo.count() - 1, label, InputChoice(label, file=path)
            )
            found = self.input_combo.findText(label)
        self.input_combo.setCurrentIndex(found)

    def input_choice(self) -> InputChoice:
        return self.input_combo.currentData() or InputChoice(DEFAULT_INPUT)

    # -- models -----------------------------------------------------------------------------
    def fill_models(self, local_folders: list[str]) -> None:
        """The catalogue's models, then the user's folders, then "Manage models…"."""
        self.caption_combo.clear()
        self.translation_combo.clear()
        self.translation_combo.addItem(NO_TRANSLATION, "")
        for entry in catalogue.CATALOGUE:
            translates = entry.task != "transcribe"  # speech or text translation
            combo = self.translation_combo if translates else self.caption_combo
            self._add_model(combo, entry.title.split(" — ")[0], entry.repo_id)
        for folder in local_folders:
            for combo in (self.caption_combo, self.translation_combo):
                self._add_model(combo, f"Folder: {Path(folder).name}", folder)
        for combo in (self.caption_combo, self.translation_combo):
            combo.addItem(MANAGE_MODELS, None)

    @staticmethod
    def _add_model(combo: QComboBox, text: str, name: str) -> None:
        combo.addItem(text, name)
        combo.setItemData(combo.count() - 1, name, Qt.ItemDataRole.ToolTipRole)

    def model_combo(self, role: str) -> QComboBox:
        return self.caption_combo if role == CAPTION else self.translation_combo

    def select_model(self, role: str, name: str) -> None:
        combo = self.model_combo(role)
        found = combo.findData(name)
        if found < 0:  # a model named elsewhere (settings, command line, tests)
            combo.insertItem(combo.count() - 1, Path(name).name or name, name)
            found = combo.findData(name)
        combo.setCurrentIndex(found)

    def set_languages(self, codes: list[str], wanted: str, enabled: bool) -> None:
        self.language_combo.clear()
        for code in codes:
            self.language_combo.addItem(catalogue.language_name(code), code)
        self.language_combo.setCurrentIndex(max(0, self.language_combo.findData(wanted)))
        self.language_combo.setEnabled(enabled)
