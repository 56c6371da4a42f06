"""The model manager: the catalogue, downloads with byte progress, local folders, caption
servers, deletion.

Downloads go through engine.hub (huggingface_hub and its cache) on a background thread;
cancelling keeps the partial files, so downloading again resumes where it stopped.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.banner import Banner
from app.bridge import Task
from app.controller import explain
from app.settings import AppSettings
from engine import catalogue

COLUMNS = ("Model", "Languages", "Delay", "Download", "Fits this machine", "Status")
LICENCE_COLUMN = "Licence"


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit in ("B", "KB") else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def total_ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def fits(entry: catalogue.CatalogueEntry, ram: int | None = None) -> str:
    """Whether the model's weights (plus working room) fit in this machine's memory."""
    ram = total_ram_bytes() if ram is None else ram
    if not ram:
        return "Unknown"
    need = entry.size_bytes * 1.3  # weights as downloaded plus activations and caches
    if need <= ram * 0.5:
        return "Yes"
    if need <= ram * 0.85:
        return "Tight — close other programs"
    return f"No — needs about {human_bytes(need)} of memory"


def translates(entry: catalogue.CatalogueEntry) -> bool:
    """A model that produces another language (speech or text translation), not captions."""
    return entry.task != "transcribe"


class _Progress(QObject):
    bytes = Signal(object, object)  # done, total (may exceed 32 bits)


class ModelManager(QDialog):
    use_model = Signal(str, str)  # role ("caption" | "translation"), model name
    models_changed = Signal()

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle("Models — Livecap")
        self.setObjectName("modelManager")
        self.setAccessibleName("Model manager")
        self.resize(1080, 520)
        self._download: tuple[str, threading.Event] | None = None
        self._paused: dict[str, tuple[int, int]] = {}
        self._last_bytes = (0, 0)

        layout = QVBoxLayout(self)
        intro = QLabel(
            "Models run on this computer. Download one from the Hugging Face Hub, or add a "
            "folder that holds a model you already have. Captions can also come from a "
            "server (Server…).",
            self,
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.banner = Banner(self)
        layout.addWidget(self.banner)
        self.columns = COLUMNS + (
            (LICENCE_COLUMN,) if any(e.licence for e in catalogue.CATALOGUE) else ()
        )
        heading = QLabel("Available &models:", self)
        layout.addWidget(heading)
        self.table = QTableWidget(0, len(self.columns), self)
        heading.setBuddy(self.table)  # Alt+M brings the keyboard back to the list
        self.table.setObjectName("modelTable")
        self.table.setAccessibleName("Available models")
        self.table.setHorizontalHeaderLabels(self.columns)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        # Arrow keys choose a row; Tab leaves the table for the buttons (no keyboard trap).
        self.table.setTabKeyNavigation(False)
        self.table.setStyleSheet("QTableView::item { padding: 3px 0px; }")
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(self.columns)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        # The 15 languages of a translation model wrap in a column of their own width.
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(1, self.fontMetrics().horizontalAdvance("de, nl, es, fr, it, pt, "))
        header.sectionResized.connect(self._fit_rows)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        layout.addWidget(self.table, 1)

        self.progress = QProgressBar(self)
        self.progress.setObjectName("downloadProgress")
        self.progress.setAccessibleName("Download progress")
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.progress_label = QLabel(self)
        self.progress_label.setAccessibleName("Download status")
        layout.addWidget(self.progress)
        layout.addWidget(self.progress_label)

        buttons = QHBoxLayout()
        self.download_button = self._button("&Download", self.download_selected, buttons)
        self.cancel_button = self._button("Ca&ncel download", self.cancel_download, buttons)
        self.delete_button = self._button("De&lete", self.delete_selected, buttons)
        self.add_folder_button = self._button("&Add local folder…", self.add_folder_dialog, buttons)
        self.add_server_button = self._button("Ser&ver…", self.add_server_dialog, buttons)
        buttons.addStretch(1)
        self.caption_button = self._button(
            "Use for &captions", lambda: self._use("caption"), buttons
        )
        self.translation_button = self._button(
            "Use for &translation", lambda: self._use("translation"), buttons
        )
        self.close_button = self._button("Cl&ose", self.close, buttons)
        # Enter on the table uses the model for captions; it never starts a download.
        self.caption_button.setDefault(True)
        layout.addLayout(buttons)

        self._signals = _Progress(self)
        self._signals.bytes.connect(self._on_bytes)
        self.refresh()

    def _button(self, text: str, slot, layout: QHBoxLayout) -> QPushButton:
        button = QPushButton(text, self)
        button.setAccessibleName(text.replace("&", "").rstrip("…"))
        button.clicked.connect(slot)
        layout.addWidget(button)
        return button

    # -- the table --------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, str]]:
        """(name, kind) per row: kind is "hub" for catalogue entries, "folder" for local
        ones, "server" for caption servers."""
        hub = [(entry.repo_id, "hub") for entry in catalogue.CATALOGUE]
        folders = [(folder, "folder") for folder in self.settings.local_model_folders()]
        return hub + folders + [(address, "server") for address in self.settings.servers()]

    def refresh(self) -> None:
        from engine import hub

        self.table.setRowCount(0)
        for name, kind in self.rows():
            row = self.table.rowCount()
            self.table.insertRow(row)
            if kind == "hub":
                entry = catalogue.find_entry(name)
                cells = (
                    f"{entry.title}\n{entry.repo_id}",
                    ", ".join(entry.languages) + (" (translation)" if translates(entry) else ""),
                    f"{entry.delay_seconds:g} s",
                    human_bytes(entry.size_bytes),
                    fits(entry),
                    self._status(name, hub.is_downloaded(name)),
                    entry.licence or "Not given",
                )
            elif kind == "server":
                key = "Key saved" if self.settings.server_key(name) else "No key"
                cells = (f"Caption server\n{name}", "", "", "", "Runs on the server", key, "")
            else:
                exists = Path(name).is_dir()
                state = "Ready" if exists else "Missing"
                cells = (f"Local folder\n{name}", "", "", "", "", state, "")
            for column, text in enumerate(cells[: len(self.columns)]):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, (name, kind))
                self.table.setItem(row, column, item)
        self._fit_rows()
        self._update_buttons()

    def _fit_rows(self, *_args) -> None:
        """Rows as tall as their wrapped text, and a table tall enough for all of them (up to
        most of the screen), so that choosing the last row never scrolls the first away."""
        self.table.resizeRowsToContents()
        if not self.isVisible():  # the columns get their widths, and rows theirs, on show
            return
        rows = sum(self.table.rowHeight(row) for row in range(self.table.rowCount()))
        needed = rows + self.table.horizontalHeader().height() + 2 * self.table.frameWidth()
        screen = self.screen().availableGeometry().height() if self.screen() else 800
        self.table.setMinimumHeight(min(needed, screen * 6 // 10))

    def _status(self, repo_id: str, downloaded: bool) -> str:
        if self._download and self._download[0] == repo_id:
            return "Downloading…"
        if downloaded:
            return "Downloaded"
        if repo_id in self._paused:
            done, total = self._paused[repo_id]
            return f"Paused at {human_bytes(done)} of {human_bytes(total)} — Download resumes"
        return "Not downloaded"

    def selected(self) -> tuple[str, str] | None:
        items = self.table.selectedItems()
        return items[0].data(Qt.ItemDataRole.UserRole) if items else None

    def select(self, name: str) -> None:
        for row, (row_name, _kind) in enumerate(self.rows()):
            if row_name == name:
                self.table.selectRow(row)

    def _update_buttons(self) -> None:
        chosen = self.selected()
        busy = self._download is not None
        is_hub = bool(chosen) and chosen[1] == "hub"
        self.download_button.setEnabled(is_hub and not busy)
        self.cancel_button.setEnabled(busy)
        self.delete_button.setEnabled(bool(chosen) and not busy)
        # A catalogue model is for captions or for translation; a folder may be either; a
        # server only captions (Kyutai's protocol transcribes).
        entry = catalogue.find_entry(chosen[0]) if is_hub else None
        server = bool(chosen) and chosen[1] == "server"
        self.caption_button.setEnabled(bool(chosen) and not (entry and translates(entry)))
        self.translation_button.setEnabled(
            bool(chosen) and not server and not (entry and not translates(entry))
        )
        paused = is_hub and chosen[0] in self._paused
        self.download_button.setText("Resume &download" if paused else "&Download")

    def _use(self, role: str) -> None:
        chosen = self.selected()
        if chosen:
            self.use_model.emit(role, chosen[0])

    # -- downloads --------------------------------------------------------------------------
    def download_selected(self) -> None:
        chosen = self.selected()
        if chosen and chosen[1] == "hub":
            self.download(chosen[0])

    def download(self, repo_id: str) -> None:
        from engine import hub

        if self._download is not None:
            return
        cancel = threading.Event()
        self._download = (repo_id, cancel)
        self._last_bytes = (0, 0)
        self.banner.hide()
        self.progress.setRange(0, 0)
        self.progress.show()
        self.progress_label.setText(f"Connecting to download {repo_id}…")
        task = Task(lambda _progress: hub.download(repo_id, self._signals.bytes.emit, cancel))
        task.succeeded.connect(lambda _path: self._download_ended(repo_id, None))
        task.failed.connect(lambda exc: self._download_ended(repo_id, exc))
        task.start()
        self.refresh()

    def cancel_download(self) -> None:
        if self._download is not None:
            self._download[1].set()
            self.progress_label.setText("Cancelling…")

    def _on_bytes(self, done: int, total: int) -> None:
        if self._download is None:
            return
        if total:
            # QProgressBar holds ints: count in kilobytes so sizes past 2 GB fit.
            self.progress.setRange(0, max(1, total // 1000))
            self.progress.setValue(done // 1000)
            self.progress.setFormat(f"{done * 100 // total}%")
        self.progress_label.setText(
            f"Downloading {self._download[0]}: {human_bytes(done)} of {human_bytes(total)}"
        )
        self._last_bytes = (done, total)

    def _download_ended(self, repo_id: str, exc: BaseException | None) -> None:
        cancelled = self._download is not None and self._download[1].is_set()
        self._download = None
        self.progress.hide()
        if cancelled:
            self._paused[repo_id] = self._last_bytes
            self.progress_label.setText(
                f"Download of {repo_id} paused. Choose Resume download to continue."
            )
        elif exc is not None:
            self.progress_label.clear()
            self.show_error(*explain(exc))
        else:
            self._paused.pop(repo_id, None)
            self.progress_label.setText(f"{repo_id} is downloaded and ready.")
            self.models_changed.emit()
        self.refresh()
        self.select(repo_id)

    # -- local folders and deleting ---------------------------------------------------------
    def add_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder: str) -> bool:
        if not (Path(folder) / "config.json").is_file():
            QMessageBox.warning(
                self,
                "Not a model folder",
                f"{folder} has no config.json.\nChoose a folder saved in the Hugging Face "
                "layout (config.json and safetensors weights).",
            )
            return False
        if not self._save_folders([*self.settings.local_model_folders(), folder]):
            return False
        self.refresh()
        self.select(folder)
        self.models_changed.emit()
        return True

    def add_server_dialog(self) -> None:
        from app.server_dialog import ServerDialog

        dialog = ServerDialog(self)
        if dialog.exec():
            self.add_server(dialog.address(), dialog.key())

    def add_server(self, address: str, key: str) -> None:
        """Remember the server (a new key replaces the old one) and choose its row, so that
        Enter uses it for captions."""
        self.settings.set_servers({**self.settings.servers(), address: key})
        self.refresh()
        self.select(address)
        self.models_changed.emit()

    def delete_selected(self) -> None:
        chosen = self.selected()
        if chosen is None:
            return
        name, kind = chosen
        question = {
            "hub": f"Delete the downloaded files of {name}? You can download it again later.",
            "server": f"Remove the server {name} and its key from the list?",
        }.get(kind, f"Remove {name} from the list? The folder itself is not touched.")
        buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
        answer = QMessageBox.question(
            self, "Delete model", question, buttons, QMessageBox.StandardButton.No
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.delete(name, kind)

    def delete(self, name: str, kind: str) -> None:
        from engine import hub

        if kind == "hub":
            try:
                hub.delete_model(name)
            except Exception as exc:  # noqa: BLE001 - shown to the user
                self.show_error(*explain(exc))
            self._paused.pop(name, None)
        elif kind == "server":
            self.settings.set_servers(
                {a: k for a, k in self.settings.servers().items() if a != name}
            )
        else:
            folders = [f for f in self.settings.local_model_folders() if f != name]
            if not self._save_folders(folders):
                return
        self.refresh()
        self.models_changed.emit()

    def _save_folders(self, folders: list[str]) -> bool:
        try:
            self.settings.set_local_model_folders(folders)
        except OSError as exc:
            self.show_error(
                f"The list of model folders cannot be saved to {self.settings.folders_file}: "
                f"{exc.strerror or exc}.",
                "Check that this folder is writable and has free space; the list is unchanged.",
            )
            return False
        return True

    # -- errors and showing -----------------------------------------------------------------
    def show_error(self, message: str, hint: str) -> None:
        """What went wrong and what to do, as the engine words them, on their own lines."""
        self.banner.show_message(message, hint)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        if self._download is None:  # reopened: the last attempt's outcome is old news
            self.banner.hide()
            self.progress_label.clear()
        self._fit_rows()
        if self.selected() is None and self.table.rowCount():
            self.table.selectRow(0)  # the keyboard's place in the list is a chosen model
        self.table.setFocus()


def should_offer_first_download(settings: AppSettings, default_model: str) -> bool:
    """Offer the default model once, on a first run without it; never under tests."""
    if not settings.get("first_run/offer_download"):
        return False
    if os.environ.get("LIVECAP_NO_FIRST_RUN") or "PYTEST_CURRENT_TEST" in os.environ:
        return False
    from engine import hub

    try:
        return not hub.is_downloaded(default_model)
    except Exception:  # noqa: BLE001 - a broken cache is reported when the model is used
        return False
