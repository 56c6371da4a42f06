"""The floating caption window: frameless, always on top, translucent, for watching others.

It shows the last few lines of captions, translation, or both; it is moved by dragging,
resized from its corner grip, and can let clicks pass through to the window beneath.
Its look and place are an `OverlayLook`, saved in the settings whenever they change.
"""

from __future__ import annotations

import html

from PySide6.QtCore import QPoint, QRect, Qt, Signal
from PySide6.QtGui import QColor, QFont, QGuiApplication, QPainter
from PySide6.QtWidgets import QLabel, QSizeGrip, QVBoxLayout, QWidget

from app.live_transcript import CAPTION, TRANSLATION, LiveTranscript
from app.settings import OverlayLook
from engine.transcript import join_text


class Overlay(QWidget):
    look_changed = Signal(object)  # OverlayLook, after a move, resize or restyle

    def __init__(self, model: LiveTranscript, look: OverlayLook) -> None:
        super().__init__(None)
        self.model = model
        self.look = look.clamped()
        self.mask = lambda text: text
        self._drag_offset: QPoint | None = None
        self.setObjectName("overlay")
        self.setWindowTitle("Livecap captions")
        self.setAccessibleName("Caption overlay")
        self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground)
        self.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 10, 16, 6)
        self.label = QLabel(self)
        self.label.setObjectName("overlayText")
        self.label.setAccessibleName("Overlay caption text")
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom)
        self.label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        layout.addWidget(self.label, 1)
        self.grip = QSizeGrip(self)
        self.grip.setAccessibleName("Resize overlay")
        layout.addWidget(self.grip, 0, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom)
        model.row_added.connect(self.refresh)
        model.row_changed.connect(self.refresh)
        model.cleared.connect(self.refresh)
        self.apply_look(self.look)

    # -- look -------------------------------------------------------------------------------
    def apply_look(self, look: OverlayLook) -> None:
        self.look = look.clamped()
        flags = (
            Qt.WindowType.Tool
            | Qt.WindowType.FramelessWindowHint
            | Qt.WindowType.WindowStaysOnTopHint
        )
        if self.look.click_through:
            flags |= Qt.WindowType.WindowTransparentForInput
        if self.windowFlags() != flags:
            visible = self.isVisible()
            self.setWindowFlags(flags)
            if visible:
                self.show()
        self.grip.setVisible(not self.look.click_through)
        font = QFont(self.look.font_family) if self.look.font_family else QFont(self.font())
        font.setPointSize(self.look.font_size)
        self.label.setFont(font)
        self._place()
        self.refresh()
        self.update()

    def set_click_through(self, enabled: bool) -> None:
        self.look.click_through = enabled
        self.apply_look(self.look)
        self.look_changed.emit(self.look)

    def _place(self) -> None:
        line_height = self.label.fontMetrics().lineSpacing()
        lines = self.look.lines * (2 if self.look.content == "both" else 1)
        height = self.look.height or (lines * line_height + 40)
        screen = QGuiApplication.primaryScreen()
        area = screen.availableGeometry() if screen else QRect(0, 0, 1280, 800)
        width = min(self.look.width, area.width())
        x, y = self.look.x, self.look.y
        if x < 0 or y < 0:  # first show: centred near the bottom
            x = area.x() + (area.width() - width) // 2
            y = area.y() + area.height() - height - 60
        self.setGeometry(x, y, width, height)

    # -- text -------------------------------------------------------------------------------
    def lines(self) -> list[tuple[str, str]]:
        """The (role, text) lines on show: the newest `look.lines` rows of the chosen text."""
        return [(role, join_text(done, partial)) for role, done, partial in self._line_parts()]

    def _line_parts(self) -> list[tuple[str, str, str]]:
        """(role, committed, partial) of each line on show."""
        roles = {"captions": (CAPTION,), "translation": (TRANSLATION,)}.get(
            self.look.content, (CAPTION, TRANSLATION)
        )
        rows: list[list[tuple[str, str, str]]] = []
        for index in range(len(self.model.rows) - 1, -1, -1):
            if len(rows) == self.look.lines:
                break
            row_lines = []
            for role in roles:
                done, partial = (self.mask(part) for part in self.model.text(role, index))
                if done or partial:
                    row_lines.append((role, done, partial))
            if row_lines:
                rows.insert(0, row_lines)
        return [line for row in rows for line in row]

    def refresh(self, *_args) -> None:
        """Committed words plainly; words still being recognised (partial) in lighter italics
        followed by an ellipsis, so that they differ by more than colour."""
        color = QColor(self.look.text_color)
        faded = QColor(color)
        faded.setAlphaF(0.75)
        parts = []
        for role, done, partial in self._line_parts():
            style = f"color:{color.name()}"
            if role == TRANSLATION and self.look.content == "both":
                style = f"color:{faded.name(QColor.NameFormat.HexArgb)};font-size:90%"
            parts.append(f'<div style="{style}">{_line_html(done, partial, faded)}</div>')
        self.label.setText("".join(parts))
        self.label.setAccessibleDescription(" ".join(text for _role, text in self.lines()))

    # -- painting and moving ----------------------------------------------------------------
    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        background = QColor(self.look.background_color)
        background.setAlphaF(self.look.opacity)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(background)
        painter.drawRoundedRect(self.rect(), 10, 10)

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt API
        if event.button() == Qt.MouseButton.LeftButton:
            self._drag_offset = event.globalPosition().toPoint() - self.frameGeometry().topLeft()
            event.accept()

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - Qt API
        if self._drag_offset is not None:
            self.move(event.globalPosition().toPoint() - self._drag_offset)
            event.accept()

    def mouseReleaseEvent(self, _event) -> None:  # noqa: N802 - Qt API
        self._drag_offset = None
        self._remember_geometry()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        if self.isVisible() and event.oldSize().isValid():
            self._remember_geometry()

    def _remember_geometry(self) -> None:
        geometry = self.geometry()
        self.look.x, self.look.y = geometry.x(), geometry.y()
        self.look.width, self.look.height = geometry.width(), geometry.height()
        self.look_changed.emit(self.look)


def _line_html(done: str, partial: str, faded: QColor) -> str:
    done, partial = done.strip(), partial.strip()
    if not partial:
        return html.escape(done)
    joined = join_text(done, partial)  # a space between them, unless the script uses none
    gap = joined[len(done) : len(joined) - len(partial)]
    style = f"font-style:italic;font-weight:300;color:{faded.name(QColor.NameFormat.HexArgb)}"
    shown = html.escape(partial) + "\N{HORIZONTAL ELLIPSIS}"
    return f'{html.escape(done)}{gap}<span style="{style}">{shown}</span>'
