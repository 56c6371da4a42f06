"""Screenshots of the app for the README, taken under Xvfb with a scripted caption feed.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tests/screenshots.py [FOLDER]

Writes {main-light,main-dark,main-high-contrast,main-error,overlay,model-manager,history}.png
into FOLDER (default resources/screenshots, the README's).
Settings and the session store live in a temporary folder; nothing of the user's is read.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QPoint, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QColor, QLinearGradient, QPainter, QPixmap  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.settings import AppSettings, OverlayLook  # noqa: E402
from engine.audio import InputDevice  # noqa: E402
from engine.events import Commit, EndOfTurn, Partial, Stats  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "resources" / "screenshots"

# (caption, translation, start, end) — one meeting, as the engines would commit it.
MEETING = [
    (
        "Good morning everyone, thanks for joining.",
        "Guten Morgen zusammen, danke fürs Kommen.",
        0.4,
        3.1,
    ),
    (
        "Let's start with the release plan for next week.",
        "Beginnen wir mit dem Release-Plan für nächste Woche.",
        3.6,
        6.9,
    ),
    (
        "The captions now run fully on this laptop.",
        "Die Untertitel laufen jetzt komplett auf diesem Laptop.",
        7.4,
        10.2,
    ),
    (
        "Latency is about half a second on the CPU.",
        "Die Latenz liegt auf der CPU bei etwa einer halben Sekunde.",
        10.8,
        13.9,
    ),
    ("Any questions before we move on?", "Gibt es Fragen, bevor wir weitermachen?", 14.5, 16.6),
]
PARTIAL = ("Maria, could you share the", "Maria, könntest du die", 17.2)


def feed(window) -> None:
    transcript = window.transcript
    transcript.clear()
    for caption, translation, start, end in MEETING:
        transcript.apply("caption", Commit(caption, start, end))
        transcript.apply("translation", Commit(translation, start + 0.05, end))
        transcript.apply("caption", EndOfTurn(end + 0.3))
    transcript.apply("caption", Partial(PARTIAL[0], PARTIAL[2]))
    transcript.apply("translation", Partial(PARTIAL[1], PARTIAL[2]))
    window.translation_box.show()
    window.aligner.enabled = True
    window.status.set_state("Listening")
    window.status.set_model("kyutai/stt-1b-en_fr-trfs", "cpu", "bfloat16")
    window.status.show_stats(Stats(17.0, 7.5, 0.44, 0.0, 0.62))
    window.status.meter.set_level(-21.0, -9.0)
    window.start_button.setText("Stop")


def settle(app: QApplication, rounds: int = 5) -> None:
    for _ in range(rounds):
        app.processEvents()


def save(widget, name: str) -> Path:
    path = OUT / f"{name}.png"
    widget.grab().save(str(path))
    print(path)
    return path


def fill_history(store) -> None:
    sessions = [
        ("kyutai/stt-1b-en_fr-trfs", "Microphone: USB headset", MEETING[:3], 612.0),
        (
            "facebook/s2t-small-librispeech-asr",
            "System audio: Speakers (monitor)",
            [
                ("Welcome to the lecture on signal processing.", "", 0.5, 3.0),
                ("Today we look at the Fourier transform.", "", 3.4, 6.0),
            ],
            3725.0,
        ),
        (
            "kyutai/stt-2.6b-en-trfs",
            "File: interview.wav",
            [("So tell me how the project started.", "", 1.0, 3.2)],
            1804.0,
        ),
    ]
    for model, source, lines, duration in sessions:
        translated = any(t for _, t, _, _ in lines)
        sid = store.begin(
            model,
            source,
            "en",
            "facebook/s2t-medium-mustc-multilingual-st" if translated else None,
            "de" if translated else None,
        )
        for caption, translation, start, end in lines:
            store.add(sid, "caption", Commit(caption, start, end))
            store.add(sid, "caption", EndOfTurn(end + 0.2))
            if translation:
                store.add(sid, "translation", Commit(translation, start, end))
                store.add(sid, "translation", EndOfTurn(end + 0.2))
        store.finish(sid, duration)


def overlay_shot(app: QApplication, window) -> None:
    """The overlay over a stand-in for a video, as it looks on a desktop."""
    window.overlay.apply_look(
        OverlayLook(lines=2, font_size=22, content="both", opacity=0.72, x=0, y=0, width=900)
    )
    window.overlay.show()
    settle(app)
    caption = window.overlay.grab()
    scene = QPixmap(1100, 420)
    painter = QPainter(scene)
    gradient = QLinearGradient(0, 0, 1100, 420)
    gradient.setColorAt(0, QColor("#3a6073"))
    gradient.setColorAt(1, QColor("#16222a"))
    painter.fillRect(scene.rect(), gradient)
    painter.setPen(QColor(255, 255, 255, 60))
    font = painter.font()
    font.setPointSize(28)
    painter.setFont(font)
    painter.drawText(
        scene.rect().adjusted(0, 40, 0, 0),
        Qt.AlignmentFlag.AlignHCenter,
        "(a video call or a film plays here)",
    )
    painter.drawPixmap(QPoint((1100 - caption.width()) // 2, 420 - caption.height() - 30), caption)
    painter.end()
    path = OUT / "overlay.png"
    scene.save(str(path))
    print(path)
    window.overlay.hide()


def main() -> int:
    from app.window import MainWindow
    from engine import hub
    from engine.store import SessionStore
    from tests.app_doubles import load_double

    OUT.mkdir(parents=True, exist_ok=True)
    app = QApplication(sys.argv[:1])
    app.setFont(app.font())
    folder = Path(tempfile.mkdtemp(prefix="livecap-shots-"))
    settings = AppSettings(QSettings(str(folder / "livecap.ini"), QSettings.Format.IniFormat))
    settings.set("first_run/offer_download", False)
    settings.set("models/translation", "facebook/s2t-medium-mustc-multilingual-st")
    settings.set("view/timestamps", True)
    store = SessionStore(folder / "sessions.db")
    devices = [
        InputDevice(3, "USB headset", "ALSA", 1, 48000.0, False),
        InputDevice("alsa_output.monitor", "Speakers (monitor)", "PulseAudio", 2, 48000.0, True),
    ]
    hub.is_downloaded = lambda repo: (
        repo in ("kyutai/stt-1b-en_fr-trfs", "facebook/s2t-medium-mustc-multilingual-st")
    )
    window = MainWindow(settings, store, loader=load_double, device_lister=lambda: devices)
    window.resize(1280, 640)
    window.show()
    settle(app, 20)
    window.input_combo.setCurrentIndex(1)
    for theme in ("light", "dark", "high-contrast"):
        window.set_theme(theme)
        feed(window)
        settle(app, 10)
        window.aligner.align_all()
        settle(app)
        save(window, f"main-{theme}")
    window.set_theme("light")
    feed(window)
    window.show_error(
        "The audio input stopped: The device was unplugged.",
        "Check that the device is plugged in, choose another input, and start again. "
        "The text so far is kept.",
    )
    window.status.show_stats(Stats(30.0, 45.0, 1.5, 2.0, 3.4))
    window.start_button.setText("Start")
    window.status.set_state("Ready")
    window.status.meter.reset()
    settle(app, 10)
    save(window, "main-error")
    window.banner.hide()
    window.status.show_stats(Stats(17.0, 7.5, 0.44, 0.0, 0.62))
    overlay_shot(app, window)

    manager = window.show_model_manager()
    manager.resize(1180, 420)
    manager._download = ("kyutai/stt-2.6b-en-trfs", None)
    manager.refresh()
    manager.select("kyutai/stt-2.6b-en-trfs")
    manager.progress.show()
    manager._on_bytes(1_930_000_000, 5_300_000_000)
    settle(app, 10)
    save(manager, "model-manager")
    manager._download = None
    manager.hide()

    fill_history(store)
    window.show_history()
    history = window.history
    history.resize(1180, 520)
    history.refresh()
    settle(app, 10)
    save(history, "history")
    history.hide()
    window.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
