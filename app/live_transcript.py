"""What the caption and translation panes show: rows of caption text with their translation.

A row is one caption segment as the engine's TranscriptBuilder groups them (a new row at a
pause, a sentence end, or when a line grows too long), so the window shows the same lines
that an export writes. A committed translation goes into the first row whose caption
reaches the translation's start time, which keeps it level with the captions it
translates; while the captions have not reached that time yet (the two engines run at
their own pace), the translation waits in the newest row's tail, drawn like a partial.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from engine.events import Commit, EndOfTurn, Partial
from engine.transcript import TranscriptBuilder, join_text

CAPTION, TRANSLATION = "caption", "translation"
# A translation that starts this little after a row's captions end still belongs to it.
_ROW_TOLERANCE_S = 0.05


@dataclass
class Row:
    start: float
    end: float
    caption: str = ""
    translation: str = ""
    closed: bool = False


class LiveTranscript(QObject):
    row_added = Signal(int)
    row_changed = Signal(int)
    cleared = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.clear()

    def clear(self) -> None:
        self.rows: list[Row] = []
        self.partial = {CAPTION: "", TRANSLATION: ""}
        self.partial_row = {CAPTION: -1, TRANSLATION: -1}
        self._waiting: list[Commit] = []  # translations the captions have not reached yet
        self._builder = TranscriptBuilder()
        self.cleared.emit()

    def text(self, role: str, index: int) -> tuple[str, str]:
        """(committed, partial) text of `role` in row `index`."""
        row = self.rows[index]
        committed = row.caption if role == CAPTION else row.translation
        if self.partial_row[role] != index:
            return committed, ""
        waiting = [c.text.strip() for c in self._waiting] if role == TRANSLATION else []
        return committed, " ".join([*waiting, self.partial[role]]).strip()

    def apply(self, role: str, event: object) -> None:
        if role == CAPTION:
            self._apply_caption(event)
        elif role == TRANSLATION:
            self._apply_translation(event)
        else:
            return
        self._place_translations()

    def finish(self) -> None:
        """The session ended: every waiting translation takes its place."""
        self._place_translations(force=True)

    # -- captions ---------------------------------------------------------------------------
    def _apply_caption(self, event: object) -> None:
        if isinstance(event, Partial):
            index = self._open_row(event.start) if event.text.strip() else -1
            self._set_partial(CAPTION, index, event.text)
        elif isinstance(event, Commit) and event.text.strip():
            index = self._open_row(event.start)
            closed = self._builder.add(event)
            current = self._builder.current
            if closed is not None and current is not None:  # the commit overflowed the line
                self._finish_row(index, closed.text, closed.end)
                index = self._add_row(current.start)
            if current is not None:
                row = self.rows[index]
                row.caption, row.start, row.end = current.text, current.start, current.end
                self.row_changed.emit(index)
            elif closed is not None:
                self._finish_row(index, closed.text, closed.end)
            rest = _after(self.partial[CAPTION], event.text)
            if rest and self.rows[index].closed:
                index = self._add_row(event.end)
            self._set_partial(CAPTION, index, rest)
        elif isinstance(event, EndOfTurn):
            closed = self._builder.add(event)
            # A row with no caption yet stays open for the next words: no empty lines.
            if self.rows and not self.rows[-1].closed and self.rows[-1].caption:
                index = len(self.rows) - 1
                row = self.rows[index]
                if closed is not None:
                    self._finish_row(index, closed.text, closed.end)
                else:
                    self._finish_row(index, row.caption, row.end)
            self._set_partial(CAPTION, -1, "")

    def _open_row(self, start: float) -> int:
        if self.rows and not self.rows[-1].closed:
            return len(self.rows) - 1
        return self._add_row(start)

    def _add_row(self, start: float) -> int:
        self.rows.append(Row(start, start))
        index = len(self.rows) - 1
        self.row_added.emit(index)
        return index

    def _finish_row(self, index: int, text: str, end: float) -> None:
        row = self.rows[index]
        row.caption, row.end, row.closed = text, max(row.end, end), True
        self.row_changed.emit(index)

    # -- translation ------------------------------------------------------------------------
    def _apply_translation(self, event: object) -> None:
        if isinstance(event, Partial):
            self.partial[TRANSLATION] = event.text
        elif isinstance(event, Commit) and event.text.strip():
            self._waiting.append(event)
            self.partial[TRANSLATION] = _after(self.partial[TRANSLATION], event.text)
        elif isinstance(event, EndOfTurn):
            self.partial[TRANSLATION] = ""

    def _place_translations(self, force: bool = False) -> None:
        placed = False
        while self._waiting:
            commit = self._waiting[0]
            index = self._row_reaching(commit.start)
            if index is None:
                if not force:
                    break
                index = len(self.rows) - 1 if self.rows else self._add_row(commit.start)
            row = self.rows[index]
            row.translation = join_text(row.translation, commit.text)
            self._waiting.pop(0)
            self.row_changed.emit(index)
            placed = True
        tail = bool(self._waiting or self.partial[TRANSLATION])
        if tail and not self.rows:
            self._add_row(self._waiting[0].start if self._waiting else 0.0)
        old, new = self.partial_row[TRANSLATION], (len(self.rows) - 1 if tail else -1)
        self.partial_row[TRANSLATION] = new
        if placed or old != new or tail:
            for changed in {old, new} - {-1}:
                self.row_changed.emit(changed)

    def _row_reaching(self, time: float) -> int | None:
        """The first row whose captions reach `time`; None when no caption has got there."""
        index = None
        for i in range(len(self.rows) - 1, -1, -1):
            if self.rows[i].end + _ROW_TOLERANCE_S < time:
                break
            index = i
        return index

    # -- partials ---------------------------------------------------------------------------
    def _set_partial(self, role: str, index: int, text: str) -> None:
        old = self.partial_row[role]
        self.partial[role], self.partial_row[role] = text, (index if text else -1)
        for changed in {old, self.partial_row[role]} - {-1}:
            self.row_changed.emit(changed)


def _after(partial: str, committed: str) -> str:
    """What remains of a partial once `committed` (its beginning, usually) is final."""
    partial, committed = partial.strip(), committed.strip()
    if committed and partial.startswith(committed):
        return partial[len(committed) :].strip()
    return ""
