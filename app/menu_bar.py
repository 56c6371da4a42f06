"""The main window's menus. Each action says what the user asked for through a signal;
the window decides what that means. Actions whose shortcut the user may change (Settings →
Shortcuts) name their settings key once, where they are made, so building the menus and
applying changed shortcuts read the same table (`shortcut_actions`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import Qt, Signal, SignalInstance
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu, QMenuBar

from app.settings import THEMES, AppSettings

LAYOUT_CHOICES = (("beside", "&Beside the captions"), ("below", "B&elow the captions"))


class MenuBar(QMenuBar):
    start_stop_requested = Signal()
    stop_requested = Signal()
    export_requested = Signal()
    history_requested = Signal()
    quit_requested = Signal()
    overlay_requested = Signal()  # show or hide the overlay
    click_through_toggled = Signal(bool)
    timestamps_toggled = Signal(bool)
    layout_chosen = Signal(str)  # "beside" | "below"
    zoom_requested = Signal(int)  # points to add to the caption font
    theme_chosen = Signal(str)
    models_requested = Signal()
    settings_requested = Signal()

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self.window_ = window
        self.shortcut_actions: dict[str, QAction] = {}  # settings key → action

        session = self.addMenu("&Session")
        self.start_action = self._action(
            session, "&Start / stop", self.start_stop_requested, "start_stop"
        )
        self._action(session, "Sto&p", self.stop_requested, "stop")
        session.addSeparator()
        self.export_action = self._action(
            session, "&Export this session…", self.export_requested, "export"
        )
        self._action(session, "&History…", self.history_requested, "history")
        session.addSeparator()
        self._action(session, "&Quit", self.quit_requested).setShortcut(
            QKeySequence.StandardKey.Quit
        )

        view = self.addMenu("&View")
        self._action(view, "Caption &overlay", self.overlay_requested, "overlay")
        self.click_through_action = self._action(
            view, "Overlay lets &clicks through", self.click_through_toggled, "click_through"
        )
        self.click_through_action.setCheckable(True)
        self.click_through_action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        view.addSeparator()
        self.timestamps_action = self._action(view, "&Timestamps", self.timestamps_toggled)
        self.timestamps_action.setCheckable(True)
        self.layout_group = self._choices(
            view.addMenu("Translation &pane"), LAYOUT_CHOICES, self.layout_chosen
        )
        view.addSeparator()
        bigger = self._action(view, "&Larger text", lambda: self.zoom_requested.emit(2))
        bigger.setShortcuts([QKeySequence.StandardKey.ZoomIn, QKeySequence("Ctrl+=")])
        smaller = self._action(view, "&Smaller text", lambda: self.zoom_requested.emit(-2))
        smaller.setShortcut(QKeySequence.StandardKey.ZoomOut)
        themes = [(theme, theme.replace("-", " ").capitalize()) for theme in THEMES]
        self.theme_group = self._choices(view.addMenu("T&heme"), themes, self.theme_chosen)

        tools = self.addMenu("&Tools")
        self._action(tools, "&Models…", self.models_requested)
        prefs = self._action(tools, "&Settings…", self.settings_requested)
        prefs.setShortcuts([QKeySequence.StandardKey.Preferences, QKeySequence("Ctrl+,")])

    def _action(
        self,
        menu: QMenu,
        text: str,
        slot: Callable | SignalInstance,
        shortcut_key: str | None = None,
    ) -> QAction:
        action = QAction(text, self.window_)
        action.triggered.connect(slot)
        menu.addAction(action)
        self.window_.addAction(action)  # shortcuts work even while the menu bar is hidden
        if shortcut_key is not None:
            self.shortcut_actions[shortcut_key] = action
        return action

    def _choices(
        self, menu: QMenu, choices: Sequence[tuple[str, str]], chosen: SignalInstance
    ) -> QActionGroup:
        """One checkable action per (value, text); the checked one follows `check`."""
        group = QActionGroup(self)
        for value, text in choices:
            action = self._action(menu, text, lambda _=False, v=value: chosen.emit(v))
            action.setCheckable(True)
            action.setData(value)
            group.addAction(action)
        return group

    def apply_shortcuts(self, settings: AppSettings) -> None:
        for key, action in self.shortcut_actions.items():
            action.setShortcut(QKeySequence(str(settings.get(f"shortcuts/{key}"))))

    @staticmethod
    def check(group: QActionGroup, value: str) -> None:
        for action in group.actions():
            action.setChecked(action.data() == value)
