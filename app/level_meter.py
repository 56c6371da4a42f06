"""A horizontal input level meter: RMS as the bar, peak as a tick, in dBFS."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QSizePolicy, QWidget

FLOOR_DB = -60.0
CLIPPING_DB = -1.0  # a peak this close to full scale is shown red: the input is too loud


class LevelMeter(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rms_db = self.peak_db = FLOOR_DB
        self.setObjectName("levelMeter")
        self.setAccessibleName("Input level")
        self.setToolTip("Input level (RMS bar, peak tick)")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.reset()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(160, 12)

    def set_level(self, rms_dbfs: float, peak_dbfs: float) -> None:
        self.rms_db, self.peak_db = max(FLOOR_DB, rms_dbfs), max(FLOOR_DB, peak_dbfs)
        self.setAccessibleDescription(self.describe())
        self.update()

    def describe(self) -> str:
        """What the meter shows, in words: the level, the peak, and clipping (the red bar)."""
        if self.rms_db <= FLOOR_DB + 1:
            return "Silent"
        words = f"{self.rms_db:.0f} dB, peak {self.peak_db:.0f} dB"
        return words + ", clipping" if self.peak_db >= CLIPPING_DB else words

    def reset(self) -> None:
        self.set_level(FLOOR_DB, FLOOR_DB)

    @staticmethod
    def fraction(db: float) -> float:
        return min(1.0, max(0.0, (db - FLOOR_DB) / -FLOOR_DB))

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        palette = self.palette()
        painter.setPen(palette.color(QPalette.ColorRole.Mid))
        painter.setBrush(palette.color(QPalette.ColorRole.Base))
        painter.drawRoundedRect(rect, 3, 3)
        level = self.fraction(self.rms_db)
        color = QColor("#2e9d4f") if self.peak_db < -6 else QColor("#d08a00")
        if self.peak_db >= CLIPPING_DB:
            color = QColor("#c62828")
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(color)
        painter.drawRoundedRect(
            QRectF(rect.x(), rect.y(), rect.width() * level, rect.height()), 3, 3
        )
        peak_x = rect.x() + rect.width() * self.fraction(self.peak_db)
        painter.setPen(palette.color(QPalette.ColorRole.Text))
        painter.drawLine(int(peak_x), int(rect.top()) + 1, int(peak_x), int(rect.bottom()) - 1)
