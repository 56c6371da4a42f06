"""The dialog that adds a caption server (Kyutai's streaming protocol): its address and key."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from engine.errors import ModelError
from engine.remote import stream_url


class ServerDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Caption server — Livecap")
        self.setObjectName("serverDialog")
        self.setAccessibleName("Caption server")
        intro = QLabel(
            "Captions can come from a server: Livecap's (livecap serve) on a more powerful "
            "machine, or Kyutai's own. The audio goes to the server; the text comes back.",
            self,
        )
        intro.setWordWrap(True)
        self.address_edit = QLineEdit(self)
        self.address_edit.setPlaceholderText("ws://HOST:8080")
        self.address_edit.setAccessibleName("Server address")
        self.key_edit = QLineEdit(self)
        self.key_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_edit.setPlaceholderText("none")
        self.key_edit.setAccessibleName("API key")
        self.show_key = QCheckBox("&Show the key", self)
        self.show_key.toggled.connect(self._show_key)
        form = QFormLayout()
        form.addRow("Server &address:", self.address_edit)
        form.addRow("API &key:", self.key_edit)
        form.addRow("", self.show_key)
        note = QLabel(
            "The key is saved with Livecap's other settings, in plain text in your user "
            "settings file.",
            self,
        )
        note.setWordWrap(True)
        self.error = QLabel(self)
        self.error.setObjectName("serverError")
        self.error.setAccessibleName("Problem with the address")
        self.error.setWordWrap(True)
        self.error.hide()
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("A&dd server")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.resize(520, self.sizeHint().height())

    def address(self) -> str:
        """What was typed, with ws:// added when no scheme was."""
        text = self.address_edit.text().strip().rstrip("/")
        return text if "://" in text or not text else f"ws://{text}"

    def key(self) -> str:
        return self.key_edit.text().strip()

    def accept(self) -> None:
        try:
            if not self.address():
                raise ModelError("Type the server's address.", "For example ws://HOST:8080.")
            stream_url(self.address())
        except ModelError as exc:
            self.error.setText(f"{exc.message}\n{exc.hint}")
            self.error.show()
            self.address_edit.setFocus()
            return
        super().accept()

    def _show_key(self, shown: bool) -> None:
        mode = QLineEdit.EchoMode.Normal if shown else QLineEdit.EchoMode.Password
        self.key_edit.setEchoMode(mode)
