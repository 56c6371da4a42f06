"""The main window: wires the menus, the controls bar, the panes and the status line to
the session controller and the settings.

Everything slow (listing devices, loading models, stopping a session) runs off the GUI
thread through `SessionController` and `Task`; the window only reacts to their signals.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSize, QTimer
from PySide6.QtGui import QFont, QGuiApplication, QIcon
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QMainWindow,
    QVBoxLayout,
    QWidget,
)

from app import profanity
from app.banner import Banner
from app.controller import (
    InputChoice,
    Loader,
    SessionController,
    SessionRequest,
    explain,
    freeze_heap,
)
from app.controls_bar import ControlsBar
from app.first_run import offer_default_model
from app.history import ExportOutcome, HistoryDialog, export_with_dialog, offer_unsaved_export
from app.input_devices import DeviceReader
from app.live_transcript import CAPTION, TRANSLATION, LiveTranscript
from app.menu_bar import MenuBar
from app.model_manager import ModelManager, should_offer_first_download
from app.overlay import Overlay
from app.panes import PaneSplitter
from app.settings import RESOURCES, THEMES, AppSettings
from app.status import LoadProgress, StatusLine, describe_nonfinite
from app.themes import apply_theme
from engine import catalogue
from engine.events import Level, Stats
from engine.store import SessionStore


class MainWindow(QMainWindow):
    def __init__(
        self,
        settings: AppSettings,
        store: SessionStore,
        loader: Loader | None = None,
        device_lister: Callable[[], list] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.store = store
        self.setWindowTitle("Livecap")
        self.setObjectName("mainWindow")
        self.setAccessibleName("Livecap main window")
        self.setWindowIcon(QIcon(str(RESOURCES / "icons" / "livecap.svg")))

        self.transcript = LiveTranscript(self)
        self.controller = SessionController(store, loader, self)
        self.controller.state_changed.connect(self._on_state)
        self.controller.load_progress.connect(self._on_load_progress)
        self.controller.started.connect(self._on_started)
        self.controller.events.connect(self._on_events)
        self.controller.failed.connect(self.show_error)
        self.controller.finished.connect(self._on_finished)
        self.controller.unsaved.connect(self._offer_unsaved_export)

        self._build_central()
        self._build_menus()
        self.overlay = Overlay(self.transcript, settings.overlay())
        self.overlay.look_changed.connect(settings.set_overlay)
        self.manager: ModelManager | None = None
        self.history: HistoryDialog | None = None
        self._warned_nonfinite = False

        self.apply_settings()
        QGuiApplication.styleHints().colorSchemeChanged.connect(self._on_system_scheme)
        self._restore_geometry()
        self.devices = DeviceReader(device_lister, self)
        self.devices.listed.connect(self._on_devices)
        self.devices.failed.connect(self._on_devices_failed)
        self.controls.input_list_opening.connect(self.devices.read)
        self._remembered_input = settings.get("input/device")
        self.controls.reset_inputs()
        self.devices.read()
        self._on_state("idle")
        if should_offer_first_download(settings, self.caption_model()):
            QTimer.singleShot(500, self._offer_first_download)
        # The one collection Livecap asks for: here, on the GUI thread, before the window is
        # shown; then everything alive is frozen (see freeze_heap).
        gc.collect()
        freeze_heap()

    # -- building ---------------------------------------------------------------------------
    def _build_central(self) -> None:
        central = QWidget(self)
        central.setObjectName("central")
        self.setCentralWidget(central)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(10, 8, 10, 4)

        self.controls = controls = ControlsBar(central)
        controls.start_stop_requested.connect(self.toggle_session)
        controls.input_chosen.connect(lambda label: self.settings.set("input/device", label))
        controls.file_input_requested.connect(self._choose_input_file)
        controls.model_chosen.connect(self._on_model_chosen)
        controls.language_chosen.connect(
            lambda code: self.settings.set("models/target_language", code)
        )
        controls.overlay_toggled.connect(self.set_overlay_visible)
        layout.addWidget(controls)
        self.start_button, self.overlay_button = controls.start_button, controls.overlay_button
        self.input_combo, self.caption_combo = controls.input_combo, controls.caption_combo
        self.translation_combo = controls.translation_combo
        self.language_combo = controls.language_combo

        self.banner = Banner(central)
        layout.addWidget(self.banner)
        self.load_bar = LoadProgress(central)
        layout.addWidget(self.load_bar)

        self.splitter = PaneSplitter(self.transcript, central)
        self.caption_pane, self.translation_pane = self.splitter.panes()
        self.aligner, self.translation_box = self.splitter.aligner, self.splitter.translation_box
        layout.addWidget(self.splitter, 1)
        self.status = StatusLine(central)
        layout.addWidget(self.status)

    def _build_menus(self) -> None:
        self.menus = menus = MenuBar(self)
        self.setMenuBar(menus)
        menus.start_stop_requested.connect(self.toggle_session)
        menus.stop_requested.connect(self.controller.stop)
        menus.export_requested.connect(self.export_session)
        menus.history_requested.connect(self.show_history)
        menus.quit_requested.connect(self.close)
        menus.overlay_requested.connect(self.overlay_button.toggle)
        menus.click_through_toggled.connect(self.set_click_through)
        menus.timestamps_toggled.connect(self.set_timestamps)
        menus.layout_chosen.connect(self.set_layout)
        menus.zoom_requested.connect(self.zoom_captions)
        menus.theme_chosen.connect(self.set_theme)
        menus.models_requested.connect(self.show_model_manager)
        menus.settings_requested.connect(self.show_settings)
        menus.apply_shortcuts(self.settings)
        self.start_action, self.export_action = menus.start_action, menus.export_action
        self.click_through_action = menus.click_through_action

    # -- settings ---------------------------------------------------------------------------
    def apply_settings(self) -> None:
        """(Re)read every visible setting: theme, fonts, layout, masking, model lists."""
        s = self.settings
        self.set_theme(s.get("view/theme"), save=False)
        self.set_timestamps(s.get("view/timestamps"), save=False)
        self.set_layout(s.get("view/layout"), save=False)
        masking = s.get("view/profanity_mask")
        mask = profanity.mask if masking else (lambda text: text)
        self.splitter.set_mask(mask)
        self.overlay.mask = mask
        self.overlay.apply_look(s.overlay())
        self.click_through_action.setChecked(self.overlay.look.click_through)
        self._fill_models()

    def _apply_caption_font(self) -> None:
        size = self.settings.get("view/caption_font_size")
        family = self.settings.get("view/caption_font_family")
        font = QFont(family) if family else QFont(QApplication.font())
        if size <= 0:  # follow the user's desktop font size, a little larger for reading
            size = max(15, round(QApplication.font().pointSizeF() * 1.6))
        font.setPointSize(size)
        self.splitter.set_caption_font(font)

    def zoom_captions(self, step: int) -> None:
        current = self.caption_pane.font().pointSize()
        self.settings.set("view/caption_font_size", min(72, max(8, current + step)))
        self._apply_caption_font()

    def set_theme(self, theme: str, save: bool = True) -> None:
        theme = theme if theme in THEMES else "system"
        apply_theme(QApplication.instance(), theme)
        self.menus.check(self.menus.theme_group, theme)
        if save:
            self.settings.set("view/theme", theme)
        self.splitter.set_palette(QApplication.palette())
        self._apply_caption_font()  # a new style sheet resets widget fonts; this rerenders

    def _on_system_scheme(self, _scheme) -> None:
        if self.settings.get("view/theme") == "system":
            self.set_theme("system", save=False)

    def set_timestamps(self, enabled: bool, save: bool = True) -> None:
        self.menus.timestamps_action.setChecked(bool(enabled))
        self.splitter.set_timestamps(bool(enabled))
        if save:
            self.settings.set("view/timestamps", bool(enabled))

    def set_layout(self, layout: str, save: bool = True) -> None:
        layout = layout if layout in ("beside", "below") else "beside"
        self.splitter.set_below(layout == "below")
        self.menus.check(self.menus.layout_group, layout)
        if save:
            self.settings.set("view/layout", layout)

    # -- inputs and models ------------------------------------------------------------------
    def _on_devices(self, devices: list) -> None:
        self.controls.set_devices(devices, self._remembered_input)
        self._remembered_input = ""  # chosen once; later lists keep the current choice

    def _on_devices_failed(self, exc: BaseException) -> None:
        message, hint = explain(exc)
        self.banner.show_message(
            message, f"{hint} You can still caption an audio file.", kind="info"
        )

    def _choose_input_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Caption an audio file", "", "Audio (*.wav *.flac *.ogg);;All files (*)"
        )
        if path:
            self.set_input_file(Path(path))
        else:
            self.input_combo.setCurrentIndex(0)

    def set_input_file(self, path: Path) -> None:
        self.controls.add_file(path)

    def input_choice(self) -> InputChoice:
        return self.controls.input_choice()

    def _fill_models(self) -> None:
        caption = self.settings.get("models/caption")
        translation = self.settings.get("models/translation")
        self.controls.fill_models(self.settings.local_model_folders())
        self.set_caption_model(caption, save=False)
        self.set_translation_model(translation, save=False)

    def set_caption_model(self, name: str, save: bool = True) -> None:
        self.controls.select_model(CAPTION, name)
        if save:
            self.settings.set("models/caption", name)
        self.status.set_model(name, "")

    def set_translation_model(self, name: str, save: bool = True) -> None:
        self.controls.select_model(TRANSLATION, name or "")
        if save:
            self.settings.set("models/translation", name or "")
        self.controls.set_languages(
            catalogue.target_languages(name),
            self.settings.get("models/target_language"),
            enabled=bool(name) and self.controller.state == "idle",
        )
        self.splitter.show_translation(bool(name) or self._has_translation_text())

    def _set_model(self, role: str, name: str, save: bool = True) -> None:
        setter = self.set_caption_model if role == CAPTION else self.set_translation_model
        setter(name, save=save)

    def _has_translation_text(self) -> bool:
        return any(row.translation for row in self.transcript.rows)

    def caption_model(self) -> str:
        return self.caption_combo.currentData() or self.settings.get("models/caption")

    def translation_model(self) -> str:
        return self.translation_combo.currentData() or ""

    def _on_model_chosen(self, role: str, name: str | None) -> None:
        if name is None:  # "Manage models…": the list goes back to the model in use
            self._set_model(role, self.settings.get(f"models/{role}"), save=False)
            self.show_model_manager()
        else:
            self._set_model(role, name)

    # -- sessions ---------------------------------------------------------------------------
    def request(self) -> SessionRequest:
        translation = self.translation_model()
        return SessionRequest(
            source=self.input_choice(),
            caption_model=self.caption_model(),
            translation_model=translation or None,
            target_language=self.language_combo.currentData() if translation else None,
            device=self.settings.get("engine/device"),
            dtype=self.settings.get("engine/precision"),
            api_key=self.settings.server_key(self.caption_model()),
        )

    def toggle_session(self) -> None:
        if self.controller.state == "idle":
            self.start_session()
        else:
            self.controller.stop()

    def start_session(self) -> None:
        if self.controller.state != "idle":
            return
        self.banner.hide()
        self.controller.start(self.request())

    def _on_state(self, state: str) -> None:
        shortcut = self.start_action.shortcut().toString()
        self.controls.set_state(state, shortcut, translating=bool(self.translation_model()))
        self.load_bar.setVisible(state == "loading")
        self.status.set_session_state(state)

    def _on_load_progress(self, stage: str, fraction: float) -> None:
        self.status.set_state(stage)
        self.load_bar.show_fraction(fraction)

    def _on_started(self, caption_info, translation_info) -> None:
        # The previous session's text stays until this one has really started.
        self.transcript.clear()
        self.status.clear_stats()
        self._warned_nonfinite = False
        self.splitter.show_translation(translation_info is not None)
        if translation_info is not None:
            self.splitter.set_translation_language(translation_info.language or "")
        self.status.set_model(caption_info.name, caption_info.device, caption_info.dtype)

    def _on_events(self, batch: list) -> None:
        for role, event in batch:
            if isinstance(event, Level):
                self.status.meter.set_level(event.rms_dbfs, event.peak_dbfs)
            elif isinstance(event, Stats):
                if role == CAPTION:
                    self.status.show_stats(event)
                if event.nonfinite_samples > 0:
                    self._warn_nonfinite(event.nonfinite_samples)
            else:
                self.transcript.apply(role, event)

    def _warn_nonfinite(self, count: int) -> None:
        """Once a session: the input held samples no model can use (NaN or infinity)."""
        if self._warned_nonfinite:
            return
        self._warned_nonfinite = True
        self.banner.show_message(*describe_nonfinite(count), kind="info")

    def _on_finished(self, session_id) -> None:
        self.transcript.finish()
        if self.history is not None and self.history.isVisible():
            self.history.refresh()
        if session_id is not None:
            self.status.set_state("Saved to history")

    def _offer_unsaved_export(self, session_id, transcript, message: str, hint: str) -> None:
        self.banner.show_message(message, hint)
        self._show_export_outcome(offer_unsaved_export(self, transcript, session_id, message))

    def _show_export_outcome(self, outcome: ExportOutcome | None) -> None:
        if outcome is not None:
            kind = "error" if outcome.hint else "info"
            self.banner.show_message(outcome.message, outcome.hint, kind=kind)

    def show_error(self, message: str, hint: str) -> None:
        """Errors appear in the window; the session's text stays where it is."""
        self.banner.show_message(message, hint)

    # -- overlay ----------------------------------------------------------------------------
    def set_overlay_visible(self, visible: bool) -> None:
        if self.overlay_button.isChecked() != visible:
            self.overlay_button.setChecked(visible)
            return
        self.overlay.setVisible(visible)
        self.overlay_button.setAccessibleName(
            "Hide caption overlay" if visible else "Show caption overlay"
        )

    def set_click_through(self, enabled: bool) -> None:
        self.click_through_action.setChecked(enabled)
        self.overlay.set_click_through(enabled)

    # -- other windows ----------------------------------------------------------------------
    def export_session(self) -> None:
        session_id = self.controller.last_session_id
        if session_id is None:
            self.banner.show_message(
                "There is no session to export yet.", "Start captions first.", kind="info"
            )
            return
        self._show_export_outcome(
            export_with_dialog(self, self.store.transcript(session_id), session_id)
        )

    def show_history(self) -> None:
        if self.history is None:
            self.history = HistoryDialog(self.store, self)
        self.history.refresh()
        if self.controller.last_session_id is not None:
            self.history.select(self.controller.last_session_id)
        self.history.show()
        self.history.raise_()

    def show_model_manager(self) -> ModelManager:
        if self.manager is None:
            self.manager = ModelManager(self.settings, self)
            self.manager.use_model.connect(self._use_model)
            self.manager.models_changed.connect(self._fill_models)
        self.manager.refresh()
        self.manager.select(self.caption_model())
        self.manager.show()
        self.manager.raise_()
        return self.manager

    def _use_model(self, role: str, name: str) -> None:
        self._fill_models()
        self._set_model(role, name)

    def show_settings(self) -> None:
        from app.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            self.apply_settings()
            self._apply_shortcuts()

    def _apply_shortcuts(self) -> None:
        self.menus.apply_shortcuts(self.settings)

    def _offer_first_download(self) -> None:
        model = self.caption_model()
        if offer_default_model(self, self.settings, model):
            self.show_model_manager().download(model)

    # -- geometry and closing ---------------------------------------------------------------
    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(1100, 640)

    def _restore_geometry(self) -> None:
        geometry = self.settings.window_state("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            screen = QGuiApplication.primaryScreen()
            if screen is not None:
                area = screen.availableGeometry()
                self.resize(min(1100, area.width() - 40), min(640, area.height() - 40))
        splitter = self.settings.window_state("splitter")
        if splitter is not None:  # pane sizes; which panes show follows the chosen models
            self.splitter.restoreState(splitter)
            self.set_layout(self.settings.get("view/layout"), save=False)
            self.splitter.show_translation(bool(self.translation_model()))

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.settings.set_window_state("geometry", self.saveGeometry())
        self.settings.set_window_state("splitter", self.splitter.saveState())
        self.settings.set_overlay(self.overlay.look)
        if self.manager is not None:
            self.manager.cancel_download()
        self.controller.shutdown()
        self.overlay.close()
        self.settings.sync()
        super().closeEvent(event)
