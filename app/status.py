"""The status line: model, device, speed and latency, in words a user understands."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QSizePolicy, QWidget

from app.level_meter import LevelMeter
from engine.events import Stats
from engine.pace import falling_behind

SESSION_STATES = {
    "idle": "Ready",
    "loading": "Loading model…",
    "running": "Listening",
    "stopping": "Finishing…",
}
SUGGESTION = "Try a smaller model, int8 precision or the GPU (Settings → Engine)."


def describe(stats: Stats) -> tuple[str, str]:
    """(summary, warning) for a Stats event; warning is "" while the engine keeps up."""
    summary = f"{stats.realtime_factor:.2f}× real time · latency {stats.latency_seconds:.1f} s"
    problems = falling_behind(stats)
    return summary, (" ".join(problems) + " " + SUGGESTION) if problems else ""


def describe_nonfinite(count: int) -> tuple[str, str]:
    """(message, hint) for input samples that were NaN or infinity, replaced with silence."""
    return (
        f"The input contained {count:,} invalid samples (NaN or infinity); "
        "they were replaced with silence.",
        "Captions go on. If this keeps happening, check the audio file or the device's driver.",
    )


class StatusLine(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("statusLine")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        self.state = self._label("stateLabel", "Session state", "Ready")
        self.model = self._label("modelLabel", "Caption model", "")
        self.device = self._label("deviceLabel", "Compute device", "")
        self.speed = self._label("speedLabel", "Speed and latency", "")
        self.warning = self._label("warningLabel", "Performance warning", "")
        self.warning.setWordWrap(True)
        self.warning.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.meter = LevelMeter(self)
        self.meter.setMaximumWidth(180)
        for widget in (self.state, self.model, self.device, self.speed):
            layout.addWidget(widget)
        layout.addWidget(self.warning, 1)
        layout.addWidget(QLabel("Level:", self))
        layout.addWidget(self.meter)

    def _label(self, name: str, accessible: str, text: str) -> QLabel:
        label = QLabel(self)
        label.setObjectName(name)
        label.setAccessibleName(accessible)
        _show(label, text)
        return label

    def set_state(self, text: str) -> None:
        _show(self.state, text)

    def set_session_state(self, state: str) -> None:
        """idle | loading | running | stopping, in words; the meter rests while idle."""
        self.set_state(SESSION_STATES[state])
        if state == "idle":
            self.meter.reset()

    def set_model(self, model: str, device: str, dtype: str = "") -> None:
        _show(self.model, model)
        _show(self.device, f"{device.upper()} {dtype}".strip() if device else "")

    def show_stats(self, stats: Stats) -> None:
        summary, warning = describe(stats)
        _show(self.speed, summary)
        _show(self.warning, warning)

    def clear_stats(self) -> None:
        _show(self.speed, "")
        _show(self.warning, "")


def _show(label: QLabel, text: str) -> None:
    """A label's name says what it is ("Session state"); a screen reader reads what it
    shows from its description, which follows the text."""
    label.setText(text)
    label.setAccessibleDescription(text or "None")


class LoadProgress(QProgressBar):
    """How far a model load has come; busy (no fraction) while the stage gives none."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("loadProgress")
        self.setAccessibleName("Model loading progress")
        self.setRange(0, 0)
        self.setMaximumHeight(18)
        self.hide()

    def show_fraction(self, fraction: float) -> None:
        if 0 < fraction < 1:
            self.setRange(0, 100)
            self.setValue(round(fraction * 100))
        else:
            self.setRange(0, 0)
