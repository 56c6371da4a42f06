"""The one-time offer, on a first run without it, to download the default caption model."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

from app.settings import AppSettings
from engine import catalogue


def offer_default_model(parent: QWidget, settings: AppSettings, model: str) -> bool:
    """Ask whether to download `model`; True when the person said yes.

    The offer counts as made only once a person answered it: a run that ends with the
    question unanswered (closed by the program, or shown on a display nobody sees) asks
    again next time."""
    entry = catalogue.find_entry(model)
    size = f" ({entry.size_bytes / 1e9:.1f} GB)" if entry else ""
    Button = QMessageBox.StandardButton
    box = QMessageBox(
        QMessageBox.Icon.Question,
        "Download a caption model?",
        f"Livecap needs a speech model to make captions. Download {model}{size} now?\n"
        "You can also do this later from Tools → Models.",
        Button.Yes | Button.No,
        parent,
    )
    box.setEscapeButton(Button.No)  # Esc is an answer: "not now"
    box.exec()
    answer = box.clickedButton()
    if answer is None:
        return False
    settings.set("first_run/offer_download", False)
    return box.standardButton(answer) == Button.Yes
