"""The caption and translation panes side by side (or one above the other), each under its
title, kept row-aligned while both show."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

from app.caption_view import PaneAligner, TranscriptPane
from app.live_transcript import CAPTION, TRANSLATION, LiveTranscript
from engine import catalogue


class PaneSplitter(QSplitter):
    def __init__(self, transcript: LiveTranscript, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.setObjectName("paneSplitter")
        self.setChildrenCollapsible(False)
        self.caption_pane = TranscriptPane(transcript, CAPTION, "Captions")
        self.translation_pane = TranscriptPane(transcript, TRANSLATION, "Translation")
        self.aligner = PaneAligner(self.caption_pane, self.translation_pane)
        self._titled(self.caption_pane, "Captions")
        self.translation_box, self.translation_title = self._titled(
            self.translation_pane, "Translation"
        )

    def _titled(self, pane: TranscriptPane, title: str) -> tuple[QWidget, QLabel]:
        box = QWidget(self)
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        heading = QLabel(title, box)
        heading.setObjectName("paneTitle")
        layout.addWidget(heading)
        layout.addWidget(pane, 1)
        pane.setParent(box)
        return box, heading

    def panes(self) -> tuple[TranscriptPane, TranscriptPane]:
        return self.caption_pane, self.translation_pane

    def set_mask(self, mask: Callable[[str], str]) -> None:
        for pane in self.panes():
            pane.mask = mask
            pane.rerender()

    def set_timestamps(self, enabled: bool) -> None:
        for pane in self.panes():
            pane.timestamps = enabled
            pane.rerender()
        self.aligner.align_all()

    def set_caption_font(self, font: QFont) -> None:
        for pane in self.panes():
            pane.set_caption_font(font)
        self.aligner.align_all()

    def set_palette(self, palette: QPalette) -> None:
        for pane in self.panes():
            pane.setPalette(palette)

    def show_translation(self, visible: bool) -> None:
        self.translation_box.setVisible(visible)
        self.aligner.enabled = visible

    def set_translation_language(self, language: str) -> None:
        self.translation_title.setText(
            f"Translation — {catalogue.language_name(language)}" if language else "Translation"
        )

    def set_below(self, below: bool) -> None:
        """The translation pane below the captions, or beside them."""
        self.setOrientation(Qt.Orientation.Vertical if below else Qt.Orientation.Horizontal)
        QTimer.singleShot(0, self, self.aligner.align_all)
