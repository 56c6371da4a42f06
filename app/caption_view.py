"""The caption and translation panes: one text block per transcript row.

Committed text is drawn in the normal weight, the partial tail greyed and italic; a change
rewrites only the block of the row that changed, so hour-long sessions stay cheap. The pane
follows the live end until the user scrolls up; a "Jump to live" button brings it back.
Two panes shown together are kept row-aligned: each row gets the height of the taller of
its two blocks, so a translation stays level with the captions it translates.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QPalette, QTextBlockFormat, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QApplication, QTextBrowser, QToolButton, QWidget

from app.live_transcript import LiveTranscript

ROW_GAP = 8  # pixels between rows


def clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return (
        f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
        if hours
        else f"{rest // 60:02d}:{rest % 60:02d}"
    )


class TranscriptPane(QTextBrowser):
    rows_rendered = Signal(int)  # row index whose block was rewritten

    def __init__(self, model: LiveTranscript, role: str, name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.model, self.role = model, role
        self.timestamps = False
        self.mask: Callable[[str], str] = lambda text: text
        self.following = True
        self.setObjectName(f"{role}Pane")
        self.setAccessibleName(name)
        self.setAccessibleDescription(f"{name}: live text, selectable; newest at the bottom")
        self.setOpenLinks(False)
        self.setUndoRedoEnabled(False)
        self.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self.document().setDocumentMargin(10)

        self.jump = QToolButton(self)
        self.jump.setText("⤓ Jump to live")
        self.jump.setObjectName("jumpToLive")
        self.jump.setAccessibleName(f"Jump to live {role}s")
        self.jump.setToolTip("Scroll to the newest text and follow it again")
        self.jump.setCursor(Qt.CursorShape.PointingHandCursor)
        self.jump.clicked.connect(self.jump_to_live)
        self.jump.hide()

        bar = self.verticalScrollBar()
        bar.rangeChanged.connect(self._on_range_changed)
        bar.valueChanged.connect(self._on_scrolled)
        model.row_added.connect(self._on_row_added)
        model.row_changed.connect(self.render_row)
        model.cleared.connect(self.rerender)
        self.rerender()

    # -- rendering --------------------------------------------------------------------------
    def rerender(self) -> None:
        self.document().clear()
        QTextCursor(self.document()).setBlockFormat(_row_format())
        for index in range(len(self.model.rows)):
            if index:
                self._append_block()
            self.render_row(index)

    def _on_row_added(self, index: int) -> None:
        if index:
            self._append_block()
        self.render_row(index)

    def _append_block(self) -> None:
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertBlock(_row_format(), QTextCharFormat())

    def render_row(self, index: int) -> None:
        block = self.document().findBlockByNumber(index)
        if not block.isValid():
            return
        committed, partial = self.model.text(self.role, index)
        cursor = QTextCursor(block)
        cursor.movePosition(QTextCursor.MoveOperation.EndOfBlock, QTextCursor.MoveMode.KeepAnchor)
        cursor.removeSelectedText()
        if self.timestamps and (committed or partial or self.role == "caption"):
            cursor.insertText(f"[{clock(self.model.rows[index].start)}] ", self._format("stamp"))
        if committed:
            cursor.insertText(self.mask(committed), self._format("committed"))
        if partial:
            cursor.insertText(
                (" " if committed else "") + self.mask(partial), self._format("partial")
            )
        self.rows_rendered.emit(index)

    def _format(self, kind: str) -> QTextCharFormat:
        fmt = QTextCharFormat()
        palette = self.palette()
        high_contrast = QApplication.instance().property("livecapTheme") == "high-contrast"
        if kind == "committed" or (high_contrast and kind == "stamp"):
            fmt.setForeground(palette.color(QPalette.ColorRole.Text))
        elif high_contrast:  # grey is too faint there: the partial tail turns yellow instead
            fmt.setForeground(palette.color(QPalette.ColorRole.Highlight))
        else:
            fmt.setForeground(_muted(palette))
        if kind == "partial":
            fmt.setFontItalic(True)
        if kind == "stamp":
            fmt.setFontPointSize(max(6.0, self.font().pointSizeF() * 0.7))
        return fmt

    def set_caption_font(self, font: QFont) -> None:
        self.setFont(font)
        self.document().setDefaultFont(font)
        self.rerender()

    # -- following the live end -------------------------------------------------------------
    def _on_range_changed(self, _minimum: int, maximum: int) -> None:
        if self.following:
            self.verticalScrollBar().setValue(maximum)

    def _on_scrolled(self, value: int) -> None:
        following = value >= self.verticalScrollBar().maximum() - 2
        if following != self.following:
            self.following = following
            self.jump.setVisible(not following)

    def jump_to_live(self) -> None:
        self.following = True
        self.jump.hide()
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        hint = self.jump.sizeHint()
        margin = 12
        x = self.viewport().width() - hint.width() - margin
        y = self.viewport().height() - hint.height() - margin
        self.jump.setGeometry(x, y, hint.width(), hint.height())


def _row_format() -> QTextBlockFormat:
    """Rows a little apart: easier to follow while they grow."""
    fmt = QTextBlockFormat()
    fmt.setTopMargin(ROW_GAP)
    return fmt


def _muted(palette: QPalette) -> QColor:
    text, base = palette.color(QPalette.ColorRole.Text), palette.color(QPalette.ColorRole.Base)
    return QColor(
        (text.red() * 55 + base.red() * 45) // 100,
        (text.green() * 55 + base.green() * 45) // 100,
        (text.blue() * 55 + base.blue() * 45) // 100,
    )


class PaneAligner:
    """Keeps row k of two panes at the same height, so their rows line up on screen."""

    def __init__(self, first: TranscriptPane, second: TranscriptPane) -> None:
        self.panes = (first, second)
        self.enabled = True
        # Owned by the first pane: it must not fire for panes that are gone.
        self._realign_all = QTimer(first, singleShot=True, interval=60, timeout=self.align_all)
        for pane in self.panes:
            pane.rows_rendered.connect(self.align_row)
            pane.document().documentLayout().documentSizeChanged.connect(self._on_resized)
        self._syncing = False
        self._widths: tuple[int, int] | None = None
        first.verticalScrollBar().valueChanged.connect(lambda v: self._sync(first, second, v))
        second.verticalScrollBar().valueChanged.connect(lambda v: self._sync(second, first, v))

    def align_row(self, index: int) -> None:
        if not self.enabled:
            return
        blocks = [pane.document().findBlockByNumber(index) for pane in self.panes]
        if not all(block.isValid() for block in blocks):
            return
        natural = [
            self._natural_height(pane, block)
            for pane, block in zip(self.panes, blocks, strict=True)
        ]
        tallest = max(natural)
        for block, height in zip(blocks, natural, strict=True):
            padding = round(tallest - height)
            # Qt collapses a block's bottom margin with the next one's top margin, like CSS.
            margin = padding + ROW_GAP if padding > 0 else 0
            if round(block.blockFormat().bottomMargin()) != margin:
                fmt = block.blockFormat()
                fmt.setBottomMargin(margin)
                QTextCursor(block).setBlockFormat(fmt)

    def align_all(self) -> None:
        rows = min(pane.document().blockCount() for pane in self.panes)
        for index in range(rows):
            self.align_row(index)

    def _on_resized(self) -> None:
        # A new width rewraps every row; realign once the resizing settles.
        widths = tuple(pane.viewport().width() for pane in self.panes)
        if widths != self._widths:
            self._widths = widths
            self._realign_all.start()

    def _sync(self, source: TranscriptPane, other: TranscriptPane, value: int) -> None:
        """Scrolling one pane scrolls the other to the same rows."""
        if self._syncing or not self.enabled:
            return
        self._syncing = True
        try:
            if source.following:
                if not other.following:
                    other.jump_to_live()
            else:
                other.verticalScrollBar().setValue(value)
        finally:
            self._syncing = False

    @staticmethod
    def _natural_height(pane: TranscriptPane, block) -> float:
        # The text's own height: margins (the same in both panes, plus the padding added
        # here) are not part of it.
        return block.layout().boundingRect().height()
