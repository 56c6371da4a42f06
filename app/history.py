"""Past sessions: list, full-text search, read, export (TXT, SRT, VTT, JSON) and delete."""

from __future__ import annotations

import html
from pathlib import Path
from typing import NamedTuple

from PySide6.QtCore import QStandardPaths, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.caption_view import clock
from engine.store import SessionStore
from engine.transcript import FORMATS, Transcript, export

FILTERS = {
    "srt": "SubRip subtitles (*.srt)",
    "vtt": "WebVTT subtitles (*.vtt)",
    "txt": "Plain text (*.txt)",
    "json": "JSON with word times (*.json)",
}


def export_folder() -> Path:
    """Where the export dialog opens: the user's Documents folder, else their home."""
    documents = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    if documents and Path(documents).is_dir():
        return Path(documents)
    return Path.home()


def ask_export_path(parent: QWidget, suggested: str) -> tuple[Path, str] | None:
    """Ask where to save (a file name `suggested` in export_folder()), and in which format
    (from the chosen filter or the suffix)."""
    path, chosen = QFileDialog.getSaveFileName(
        parent, "Export transcript", str(export_folder() / suggested), ";;".join(FILTERS.values())
    )
    if not path:
        return None
    suffix = Path(path).suffix.lstrip(".").lower()
    fmt = (
        suffix
        if suffix in FORMATS
        else next((f for f, label in FILTERS.items() if label == chosen), "txt")
    )
    if Path(path).suffix.lower() != f".{fmt}":
        path += f".{fmt}"
    return Path(path), fmt


def write_export(transcript: Transcript, path: Path, fmt: str) -> None:
    path.write_text(export(transcript, fmt), encoding="utf-8")


class ExportOutcome(NamedTuple):
    """What to tell the user after an export: where the file went, or why it did not (and
    then, in `hint`, what to do)."""

    message: str
    hint: str = ""


def export_with_dialog(
    parent: QWidget, transcript: Transcript, session_id: int
) -> ExportOutcome | None:
    """Ask where to export session `session_id`, write it, and say how it went; None when
    the user cancelled the dialog."""
    target = ask_export_path(parent, f"livecap-session-{session_id}.srt")
    if target is None:
        return None
    path, fmt = target
    try:
        write_export(transcript, path, fmt)
    except OSError as exc:
        return ExportOutcome(
            f"Could not write {path}: {exc.strerror or exc}.",
            "Choose another folder, or free some space, and export again.",
        )
    return ExportOutcome(f"Exported to {path}")


def offer_unsaved_export(
    parent: QWidget, transcript: Transcript, session_id: int | None, problem: str
) -> ExportOutcome | None:
    """The store could not take all of a session (a full disk) but its text is still in
    memory: offer to write it to a file of the user's choice."""
    answer = QMessageBox.question(
        parent,
        "Session not fully saved",
        f"{problem}\n\nExport the whole transcript to a file now?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.Yes,
    )
    if answer != QMessageBox.StandardButton.Yes:
        return None
    return export_with_dialog(parent, transcript, session_id or 0)


def transcript_html(transcript: Transcript) -> str:
    """A readable view of a stored session, translation under each caption line."""
    translated = transcript.translation.segments if transcript.translation else []
    lines = []
    for segment in transcript.segments:
        lines.append(
            f'<p><span style="color:gray">[{clock(segment.start)}]</span> '
            f"{html.escape(segment.text)}"
        )
        for other in translated:
            if segment.start - 0.05 <= other.start < max(segment.end, segment.start + 0.05):
                lines.append(f'<br><i style="color:gray">{html.escape(other.text)}</i>')
        lines.append("</p>")
    return "".join(lines) or "<p><i>This session has no text.</i></p>"


class HistoryDialog(QDialog):
    opened = Signal(int)

    def __init__(self, store: SessionStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.setWindowTitle("History — Livecap")
        self.setObjectName("historyDialog")
        self.setAccessibleName("Session history")
        self.resize(980, 560)
        layout = QVBoxLayout(self)

        self.search = QLineEdit(self)
        self.search.setObjectName("historySearch")
        self.search.setAccessibleName("Search past sessions")
        self.search.setPlaceholderText("Search the text of past sessions…")
        self.search.setClearButtonEnabled(True)
        self._debounce = QTimer(self, singleShot=True, interval=250, timeout=self.refresh)
        self.search.textChanged.connect(self._debounce.start)
        layout.addWidget(self.search)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.list = QTreeWidget(splitter)
        self.list.setObjectName("historyList")
        self.list.setAccessibleName("Sessions")
        self.list.setRootIsDecorated(False)
        self.list.setHeaderLabels(["Started", "Length", "Model", "Input", "Text"])
        self.list.currentItemChanged.connect(self._show_current)
        self.viewer = QTextBrowser(splitter)
        self.viewer.setObjectName("historyViewer")
        self.viewer.setAccessibleName("Session transcript")
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout.addWidget(splitter, 1)

        buttons = QHBoxLayout()
        self.count = QLabel(self)
        self.count.setAccessibleName("Number of sessions")
        buttons.addWidget(self.count)
        self.notice = QLabel(self)
        self.notice.setObjectName("historyNotice")
        self.notice.setAccessibleName("Export result")
        self.notice.setWordWrap(True)
        self.notice.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons.addWidget(self.notice, 1)
        buttons.addStretch(1)
        self.export_button = QPushButton("&Export…", self)
        self.export_button.setAccessibleName("Export session")
        self.export_button.clicked.connect(self.export_current)
        self.delete_button = QPushButton("&Delete", self)
        self.delete_button.setAccessibleName("Delete session")
        self.delete_button.clicked.connect(self.delete_current)
        close = QPushButton("Cl&ose", self)
        close.setAccessibleName("Close history")
        close.clicked.connect(self.close)
        for button in (self.export_button, self.delete_button, close):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.refresh()

    def refresh(self) -> None:
        query = self.search.text().strip() or None
        self.list.clear()
        for summary in self.store.sessions(query):
            text = summary.snippet or summary.preview
            length = clock(summary.duration) if summary.duration is not None else "running"
            item = QTreeWidgetItem(
                [
                    summary.started_at.astimezone().strftime("%Y-%m-%d %H:%M"),
                    length,
                    summary.model,
                    summary.source,
                    " ".join(text.split()),
                ]
            )
            item.setData(0, Qt.ItemDataRole.UserRole, summary.id)
            item.setToolTip(4, text)
            self.list.addTopLevelItem(item)
        for column in range(4):
            self.list.resizeColumnToContents(column)
        found = self.list.topLevelItemCount()
        self.count.setText(f"{found} session{'s' if found != 1 else ''}")
        if found:
            self.list.setCurrentItem(self.list.topLevelItem(0))
        else:
            self.viewer.clear()
        self._update_buttons()

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return item.data(0, Qt.ItemDataRole.UserRole) if item else None

    def select(self, session_id: int) -> None:
        for index in range(self.list.topLevelItemCount()):
            item = self.list.topLevelItem(index)
            if item.data(0, Qt.ItemDataRole.UserRole) == session_id:
                self.list.setCurrentItem(item)

    def _show_current(self, *_args) -> None:
        session_id = self.current_id()
        self._update_buttons()
        if session_id is None:
            return
        try:
            self.viewer.setHtml(transcript_html(self.store.transcript(session_id)))
        except KeyError:
            self.viewer.setPlainText("This session was deleted.")
        self.opened.emit(session_id)

    def _update_buttons(self) -> None:
        has = self.current_id() is not None
        self.export_button.setEnabled(has)
        self.delete_button.setEnabled(has)

    def export_current(self) -> None:
        session_id = self.current_id()
        if session_id is None:
            return
        outcome = export_with_dialog(self, self.store.transcript(session_id), session_id)
        if outcome is not None:
            self.notice.setText(f"{outcome.message}\n{outcome.hint}".strip())

    def delete_current(self) -> None:
        session_id = self.current_id()
        if session_id is None:
            return
        buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
        answer = QMessageBox.question(  # No is the default: Enter keeps the session
            self,
            "Delete session",
            "Delete this session and its text? This cannot be undone.",
            buttons,
            QMessageBox.StandardButton.No,
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.store.delete(session_id)
            self.refresh()
