"""The main window: input and model choices, the caption and translation panes, status.

Everything slow (listing devices, loading models, stopping a session) runs off the GUI
thread through `SessionController` and `Task`; the window only reacts to their signals.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QFont, QGuiApplication, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app import profanity
from app.banner import Banner
from app.bridge import Task
from app.caption_view import PaneAligner, TranscriptPane
from app.controller import (
    InputChoice,
    Loader,
    SessionController,
    SessionRequest,
    explain,
    freeze_heap,
)
from app.history import HistoryDialog, ask_export_path, write_export
from app.live_transcript import CAPTION, TRANSLATION, LiveTranscript
from app.model_manager import ModelManager, should_offer_first_download
from app.overlay import Overlay
from app.settings import RESOURCES, THEMES, AppSettings
from app.status import StatusLine
from app.themes import apply_theme
from engine import catalogue
from engine.events import Level, Stats
from engine.recognizer import load_recognizer
from engine.store import SessionStore

NO_TRANSLATION = "No translation"
FILE_INPUT = "Audio file…"
MANAGE_MODELS = "Manage models…"
LANGUAGES = {
    "ar": "Arabic", "ca": "Catalan", "cy": "Welsh", "de": "German", "en": "English",
    "es": "Spanish", "et": "Estonian", "fa": "Persian", "fr": "French", "id": "Indonesian",
    "it": "Italian", "ja": "Japanese", "lv": "Latvian", "mn": "Mongolian", "nl": "Dutch",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sl": "Slovenian", "sv": "Swedish",
    "ta": "Tamil", "tr": "Turkish", "zh": "Chinese",
}  # fmt: skip


class MainWindow(QMainWindow):
    def __init__(
        self,
        settings: AppSettings,
        store: SessionStore,
        loader: Loader = load_recognizer,
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

        self._build_controls()
        self._build_panes()
        self._build_menus()
        self.overlay = Overlay(self.transcript, settings.overlay())
        self.overlay.look_changed.connect(self._on_overlay_look)
        self.manager: ModelManager | None = None
        self.history: HistoryDialog | None = None

        self.apply_settings()
        QGuiApplication.styleHints().colorSchemeChanged.connect(self._on_system_scheme)
        self._restore_geometry()
        self._list_devices(device_lister)
        self._on_state("idle")
        if should_offer_first_download(settings, self.caption_model()):
            QTimer.singleShot(500, self._offer_first_download)
        # The one collection Livecap asks for: here, on the GUI thread, before the window is
        # shown; then everything alive is frozen (see freeze_heap).
        gc.collect()
        freeze_heap()

    # -- building ---------------------------------------------------------------------------
    def _build_controls(self) -> None:
        central = QWidget(self)
        central.setObjectName("central")
        self.setCentralWidget(central)
        self.layout_ = QVBoxLayout(central)
        self.layout_.setContentsMargins(10, 8, 10, 4)

        controls = QHBoxLayout()
        self.start_button = QPushButton("Start", central)
        self.start_button.setObjectName("startButton")
        self.start_button.setAccessibleName("Start or stop captions")
        self.start_button.clicked.connect(self.toggle_session)
        controls.addWidget(self.start_button)

        self.input_combo = self._combo("inputCombo", "Audio input", "Input:", controls)
        self.input_combo.activated.connect(self._on_input_activated)
        self.caption_combo = self._combo(
            "captionModelCombo", "Caption model", "Captions:", controls
        )
        self.caption_combo.activated.connect(self._on_caption_model_activated)
        self.translation_combo = self._combo(
            "translationModelCombo", "Translation model", "Translate:", controls
        )
        self.translation_combo.activated.connect(self._on_translation_model_activated)
        self.language_combo = self._combo("targetLanguageCombo", "Target language", "to", controls)
        self.language_combo.activated.connect(
            lambda: self.settings.set("models/target_language", self.language_combo.currentData())
        )
        controls.addStretch(1)
        self.overlay_button = QPushButton("Overlay", central)
        self.overlay_button.setObjectName("overlayButton")
        self.overlay_button.setAccessibleName("Show caption overlay")
        self.overlay_button.setCheckable(True)
        self.overlay_button.toggled.connect(self.set_overlay_visible)
        controls.addWidget(self.overlay_button)
        self.layout_.addLayout(controls)

        self.banner = Banner(central)
        self.layout_.addWidget(self.banner)
        self.load_bar = QProgressBar(central)
        self.load_bar.setObjectName("loadProgress")
        self.load_bar.setAccessibleName("Model loading progress")
        self.load_bar.setRange(0, 0)
        self.load_bar.setMaximumHeight(18)
        self.load_bar.hide()
        self.layout_.addWidget(self.load_bar)

    def _combo(self, name: str, accessible: str, label: str, layout: QHBoxLayout) -> QComboBox:
        caption = QLabel(label, self.centralWidget())
        combo = QComboBox(self.centralWidget())
        combo.setObjectName(name)
        combo.setAccessibleName(accessible)
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        combo.setMinimumContentsLength(12)
        caption.setBuddy(combo)
        layout.addWidget(caption)
        layout.addWidget(combo)
        return combo

    def _build_panes(self) -> None:
        self.caption_pane = TranscriptPane(self.transcript, CAPTION, "Captions")
        self.translation_pane = TranscriptPane(self.transcript, TRANSLATION, "Translation")
        self.aligner = PaneAligner(self.caption_pane, self.translation_pane)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self.centralWidget())
        self.splitter.setObjectName("paneSplitter")
        self.splitter.setChildrenCollapsible(False)
        for title, pane in (
            ("Captions", self.caption_pane),
            ("Translation", self.translation_pane),
        ):
            box = QWidget(self.splitter)
            box_layout = QVBoxLayout(box)
            box_layout.setContentsMargins(0, 0, 0, 0)
            heading = QLabel(title, box)
            heading.setObjectName("paneTitle")
            box_layout.addWidget(heading)
            box_layout.addWidget(pane, 1)
            pane.setParent(box)
            if pane is self.translation_pane:
                self.translation_box, self.translation_title = box, heading
        self.layout_.addWidget(self.splitter, 1)
        self.status = StatusLine(self.centralWidget())
        self.layout_.addWidget(self.status)

    def _build_menus(self) -> None:
        def shortcut(key: str) -> QKeySequence:
            return QKeySequence(str(self.settings.get(f"shortcuts/{key}")))

        session = self.menuBar().addMenu("&Session")
        self.start_action = self._action(session, "&Start / stop", self.toggle_session)
        self.start_action.setShortcut(shortcut("start_stop"))
        self.stop_action = self._action(session, "Sto&p", self.controller.stop)
        self.stop_action.setShortcut(shortcut("stop"))
        session.addSeparator()
        self.export_action = self._action(session, "&Export this session…", self.export_session)
        self.export_action.setShortcut(shortcut("export"))
        self.history_action = self._action(session, "&History…", self.show_history)
        self.history_action.setShortcut(shortcut("history"))
        session.addSeparator()
        quit_action = self._action(session, "&Quit", self.close)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)

        view = self.menuBar().addMenu("&View")
        self.overlay_action = self._action(view, "Caption &overlay", self.overlay_button.toggle)
        self.overlay_action.setShortcut(shortcut("overlay"))
        self.click_through_action = self._action(
            view, "Overlay lets &clicks through", self.set_click_through, checkable=True
        )
        self.click_through_action.setShortcut(shortcut("click_through"))
        self.click_through_action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        view.addSeparator()
        self.timestamps_action = self._action(
            view, "&Timestamps", self.set_timestamps, checkable=True
        )
        layout_menu = view.addMenu("Translation &pane")
        self.layout_group = QActionGroup(self)
        for key, text in (("beside", "&Beside the captions"), ("below", "B&elow the captions")):
            action = self._action(
                layout_menu, text, lambda _=False, k=key: self.set_layout(k), True
            )
            action.setData(key)
            self.layout_group.addAction(action)
        view.addSeparator()
        bigger = self._action(view, "&Larger text", lambda: self.zoom_captions(2))
        bigger.setShortcuts([QKeySequence.StandardKey.ZoomIn, QKeySequence("Ctrl+=")])
        smaller = self._action(view, "&Smaller text", lambda: self.zoom_captions(-2))
        smaller.setShortcut(QKeySequence.StandardKey.ZoomOut)
        theme_menu = view.addMenu("T&heme")
        self.theme_group = QActionGroup(self)
        for theme in THEMES:
            action = self._action(
                theme_menu,
                theme.replace("-", " ").capitalize(),
                lambda _=False, t=theme: self.set_theme(t),
                True,
            )
            action.setData(theme)
            self.theme_group.addAction(action)

        tools = self.menuBar().addMenu("&Tools")
        self._action(tools, "&Models…", self.show_model_manager)
        prefs = self._action(tools, "&Settings…", self.show_settings)
        prefs.setShortcuts([QKeySequence.StandardKey.Preferences, QKeySequence("Ctrl+,")])

    def _action(self, menu, text: str, slot, checkable: bool = False) -> QAction:
        action = QAction(text, self)
        action.setCheckable(checkable)
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)  # shortcuts work even while the menu bar is hidden
        return action

    # -- settings ---------------------------------------------------------------------------
    def apply_settings(self) -> None:
        """(Re)read every visible setting: theme, fonts, layout, masking, model lists."""
        s = self.settings
        self.set_theme(s.get("view/theme"), save=False)
        self.set_timestamps(s.get("view/timestamps"), save=False)
        self.set_layout(s.get("view/layout"), save=False)
        masking = s.get("view/profanity_mask")
        mask = profanity.mask if masking else (lambda text: text)
        for pane in (self.caption_pane, self.translation_pane):
            pane.mask = mask
            pane.rerender()
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
        for pane in (self.caption_pane, self.translation_pane):
            pane.set_caption_font(font)
        self.aligner.align_all()

    def zoom_captions(self, step: int) -> None:
        current = self.caption_pane.font().pointSize()
        self.settings.set("view/caption_font_size", min(72, max(8, current + step)))
        self._apply_caption_font()

    def set_theme(self, theme: str, save: bool = True) -> None:
        theme = theme if theme in THEMES else "system"
        apply_theme(QApplication.instance(), theme)
        for action in self.theme_group.actions():
            action.setChecked(action.data() == theme)
        if save:
            self.settings.set("view/theme", theme)
        for pane in (self.caption_pane, self.translation_pane):
            pane.setPalette(QApplication.palette())
        self._apply_caption_font()  # a new style sheet resets widget fonts; this rerenders

    def _on_system_scheme(self, _scheme) -> None:
        if self.settings.get("view/theme") == "system":
            self.set_theme("system", save=False)

    def set_timestamps(self, enabled: bool, save: bool = True) -> None:
        self.timestamps_action.setChecked(bool(enabled))
        for pane in (self.caption_pane, self.translation_pane):
            pane.timestamps = bool(enabled)
            pane.rerender()
        self.aligner.align_all()
        if save:
            self.settings.set("view/timestamps", bool(enabled))

    def set_layout(self, layout: str, save: bool = True) -> None:
        layout = layout if layout in ("beside", "below") else "beside"
        vertical = layout == "below"
        self.splitter.setOrientation(
            Qt.Orientation.Vertical if vertical else Qt.Orientation.Horizontal
        )
        for action in self.layout_group.actions():
            action.setChecked(action.data() == layout)
        QTimer.singleShot(0, self.aligner.align_all)
        if save:
            self.settings.set("view/layout", layout)

    # -- inputs and models ------------------------------------------------------------------
    def _list_devices(self, lister) -> None:
        self.input_combo.clear()
        self.input_combo.addItem("Default microphone", InputChoice("Default microphone"))
        self.input_combo.addItem(FILE_INPUT, None)
        if lister is None:
            from engine.audio import list_input_devices as lister
        task = Task(lambda _progress: lister())
        task.succeeded.connect(self._fill_devices)
        task.failed.connect(self._on_devices_failed)
        task.start()

    def _fill_devices(self, devices) -> None:
        remembered = self.settings.get("input/device")
        at = self.input_combo.findText(FILE_INPUT)
        for device in devices:
            kind = "System audio" if device.is_system_audio else "Microphone"
            label = f"{kind}: {device.name}"
            choice = InputChoice(label, device.index, system_audio=device.is_system_audio)
            self.input_combo.insertItem(at, label, choice)
            self.input_combo.setItemData(
                at,
                "Captures what this computer plays (meetings, videos)"
                if device.is_system_audio
                else f"{device.hostapi}, {device.channels} channels",
                Qt.ItemDataRole.ToolTipRole,
            )
            at += 1
        found = self.input_combo.findText(remembered) if remembered else -1
        if found >= 0:
            self.input_combo.setCurrentIndex(found)

    def _on_devices_failed(self, exc: BaseException) -> None:
        message, hint = explain(exc)
        self.banner.show_message(
            message, f"{hint} You can still caption an audio file.", kind="info"
        )

    def _on_input_activated(self, index: int) -> None:
        if self.input_combo.itemText(index) == FILE_INPUT:
            path, _ = QFileDialog.getOpenFileName(
                self, "Caption an audio file", "", "Audio (*.wav *.flac *.ogg);;All files (*)"
            )
            if path:
                self.set_input_file(Path(path))
            else:
                self.input_combo.setCurrentIndex(0)
            return
        self.settings.set("input/device", self.input_combo.itemText(index))

    def set_input_file(self, path: Path) -> None:
        label = f"File: {path.name}"
        found = self.input_combo.findText(label)
        if found < 0:
            self.input_combo.insertItem(
                self.input_combo.count() - 1, label, InputChoice(label, file=path)
            )
            found = self.input_combo.findText(label)
        self.input_combo.setCurrentIndex(found)

    def input_choice(self) -> InputChoice:
        return self.input_combo.currentData() or InputChoice("Default microphone")

    def _fill_models(self) -> None:
        local = self.settings.local_model_folders()
        caption = self.settings.get("models/caption")
        translation = self.settings.get("models/translation")
        self.caption_combo.clear()
        self.translation_combo.clear()
        self.translation_combo.addItem(NO_TRANSLATION, "")
        for entry in catalogue.CATALOGUE:
            combo = self.translation_combo if entry.task == "translate" else self.caption_combo
            combo.addItem(entry.title.split(" — ")[0], entry.repo_id)
            combo.setItemData(combo.count() - 1, entry.repo_id, Qt.ItemDataRole.ToolTipRole)
        for folder in local:
            for combo in (self.caption_combo, self.translation_combo):
                combo.addItem(f"Folder: {Path(folder).name}", folder)
                combo.setItemData(combo.count() - 1, folder, Qt.ItemDataRole.ToolTipRole)
        for combo in (self.caption_combo, self.translation_combo):
            combo.addItem(MANAGE_MODELS, None)
        self.set_caption_model(caption, save=False)
        self.set_translation_model(translation, save=False)

    def _select_model(self, combo: QComboBox, name: str) -> None:
        found = combo.findData(name)
        if found < 0:  # a model named elsewhere (settings, command line, tests)
            combo.insertItem(combo.count() - 1, Path(name).name or name, name)
            found = combo.findData(name)
        combo.setCurrentIndex(found)

    def set_caption_model(self, name: str, save: bool = True) -> None:
        self._select_model(self.caption_combo, name)
        if save:
            self.settings.set("models/caption", name)
        self.status.set_model(name, "")

    def set_translation_model(self, name: str, save: bool = True) -> None:
        self._select_model(self.translation_combo, name or "")
        if save:
            self.settings.set("models/translation", name or "")
        self._fill_languages(name)

    def _fill_languages(self, model: str) -> None:
        entry = catalogue.find_entry(model) if model else None
        if entry is not None:
            languages = list(entry.languages)
        else:
            languages = sorted(
                {lang for e in catalogue.CATALOGUE if e.task == "translate" for lang in e.languages}
            )
        self.language_combo.clear()
        for code in languages:
            self.language_combo.addItem(LANGUAGES.get(code, code), code)
        wanted = self.settings.get("models/target_language")
        self.language_combo.setCurrentIndex(max(0, self.language_combo.findData(wanted)))
        enabled = bool(model)
        self.language_combo.setEnabled(enabled and self.controller.state == "idle")
        self._show_translation(enabled or self._has_translation_text())

    def _show_translation(self, visible: bool) -> None:
        self.translation_box.setVisible(visible)
        self.aligner.enabled = visible

    def _has_translation_text(self) -> bool:
        return any(row.translation for row in self.transcript.rows)

    def caption_model(self) -> str:
        return self.caption_combo.currentData() or self.settings.get("models/caption")

    def translation_model(self) -> str:
        return self.translation_combo.currentData() or ""

    def _on_caption_model_activated(self, index: int) -> None:
        name = self.caption_combo.itemData(index)
        if name is None:
            self.set_caption_model(self.settings.get("models/caption"), save=False)
            self.show_model_manager()
        else:
            self.set_caption_model(name)

    def _on_translation_model_activated(self, index: int) -> None:
        name = self.translation_combo.itemData(index)
        if name is None:
            self.set_translation_model(self.settings.get("models/translation"), save=False)
            self.show_model_manager()
        else:
            self.set_translation_model(name)

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
        idle = state == "idle"
        texts = {"idle": "Start", "loading": "Cancel", "running": "Stop", "stopping": "Stopping…"}
        self.start_button.setText(texts[state])
        self.start_button.setEnabled(state != "stopping")
        self.start_button.setToolTip(
            f"{texts[state]} ({self.start_action.shortcut().toString()})"
            if idle
            else f"{texts[state]} (Esc)"
        )
        for combo in (self.input_combo, self.caption_combo, self.translation_combo):
            combo.setEnabled(idle)
        self.language_combo.setEnabled(idle and bool(self.translation_model()))
        self.load_bar.setVisible(state == "loading")
        names = {
            "idle": "Ready",
            "loading": "Loading model…",
            "running": "Listening",
            "stopping": "Finishing…",
        }
        self.status.set_state(names[state])
        if idle:
            self.status.meter.reset()

    def _on_load_progress(self, stage: str, fraction: float) -> None:
        self.status.set_state(stage)
        if 0 < fraction < 1:
            self.load_bar.setRange(0, 100)
            self.load_bar.setValue(round(fraction * 100))
        else:
            self.load_bar.setRange(0, 0)

    def _on_started(self, caption_info, translation_info) -> None:
        # The previous session's text stays until this one has really started.
        self.transcript.clear()
        self.status.clear_stats()
        self._show_translation(translation_info is not None)
        if translation_info is not None:
            language = translation_info.language or ""
            self.translation_title.setText(
                f"Translation — {LANGUAGES.get(language, language)}" if language else "Translation"
            )
        self.status.set_model(caption_info.name, caption_info.device, caption_info.dtype)

    def _on_events(self, batch: list) -> None:
        for role, event in batch:
            if isinstance(event, Level):
                self.status.meter.set_level(event.rms_dbfs, event.peak_dbfs)
            elif isinstance(event, Stats):
                if role == CAPTION:
                    self.status.show_stats(event)
            else:
                self.transcript.apply(role, event)

    def _on_finished(self, session_id) -> None:
        self.transcript.finish()
        if self.history is not None and self.history.isVisible():
            self.history.refresh()
        if session_id is not None:
            self.status.set_state("Saved to history")

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

    def _on_overlay_look(self, look) -> None:
        self.settings.set_overlay(look)

    # -- other windows ----------------------------------------------------------------------
    def export_session(self) -> None:
        session_id = self.controller.last_session_id
        if session_id is None:
            self.banner.show_message(
                "There is no session to export yet.", "Start captions first.", kind="info"
            )
            return
        target = ask_export_path(self, f"livecap-session-{session_id}.srt")
        if target is not None:
            try:
                write_export(self.store.transcript(session_id), *target)
            except OSError as exc:
                self.show_error(f"Could not write {target[0]}: {exc}", "Choose another folder.")

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
        if role == CAPTION:
            self._fill_models()
            self.set_caption_model(name)
        else:
            self._fill_models()
            self.set_translation_model(name)

    def show_settings(self) -> None:
        from app.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            self.apply_settings()
            self._apply_shortcuts()

    def _apply_shortcuts(self) -> None:
        for action, key in (
            (self.start_action, "start_stop"),
            (self.stop_action, "stop"),
            (self.export_action, "export"),
            (self.history_action, "history"),
            (self.overlay_action, "overlay"),
            (self.click_through_action, "click_through"),
        ):
            action.setShortcut(QKeySequence(str(self.settings.get(f"shortcuts/{key}"))))

    def _offer_first_download(self) -> None:
        self.settings.set("first_run/offer_download", False)
        model = self.caption_model()
        entry = catalogue.find_entry(model)
        size = f" ({entry.size_bytes / 1e9:.1f} GB)" if entry else ""
        answer = QMessageBox.question(
            self,
            "Download a caption model?",
            f"Livecap needs a speech model to make captions. Download {model}{size} now?\n"
            "You can also do this later from Tools → Models.",
        )
        if answer == QMessageBox.StandardButton.Yes:
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
            self._show_translation(bool(self.translation_model()))

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
