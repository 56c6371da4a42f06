"""The main window's own parts and edges: the menu's shortcut table, the controls bar's
intents, drop-downs that keep their text in every theme, readable disabled lists, what
screen readers are told, device lists read again, the first-run offer, and the banners
(offscreen Qt, temporary settings and store)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtGui import QAccessible, QColor, QKeySequence, QPalette
from PySide6.QtWidgets import QApplication, QComboBox, QMessageBox, QStyle, QStyleOptionComboBox

from app.live_transcript import CAPTION, TRANSLATION
from app.model_manager import ModelManager
from app.settings import DEFAULTS, AppSettings
from app.window import MainWindow
from engine.audio import InputDevice
from engine.events import Stats
from engine.recognizer import ModelInfo
from engine.store import SessionStore
from tests.app_doubles import load_double

HEADSET = InputDevice(3, "USB headset", "ALSA", 1, 48000.0, False)
MONITOR = InputDevice("alsa_output.monitor", "Speakers (monitor)", "PulseAudio", 2, 48000.0, True)
CAPTION_INFO = ModelInfo("double", "double", ("en",), "en", 0.2, "cpu", "float32")


@pytest.fixture
def settings(tmp_path):
    s = AppSettings(QSettings(str(tmp_path / "livecap.ini"), QSettings.Format.IniFormat))
    s.set("first_run/offer_download", False)
    return s


@pytest.fixture
def store(tmp_path):
    store = SessionStore(tmp_path / "sessions.db")
    yield store
    store.close()


def open_window(qtbot, settings, store, devices=(HEADSET, MONITOR)) -> MainWindow:
    window = MainWindow(settings, store, loader=load_double, device_lister=lambda: list(devices))
    qtbot.addWidget(window)
    window.resize(1100, 640)  # the size a first run opens at
    window.show()
    qtbot.waitUntil(lambda: window.input_combo.count() == 2 + len(devices))
    return window


@pytest.fixture
def window(qtbot, settings, store):
    window = open_window(qtbot, settings, store)
    yield window
    window.close()


def contrast(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio of two colours."""

    def luminance(color: QColor) -> float:
        channels = [
            c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
            for c in (color.redF(), color.greenF(), color.blueF())
        ]
        return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]

    low, high = sorted((luminance(a), luminance(b)))
    return (high + 0.05) / (low + 0.05)


def described(widget) -> str:
    """What a screen reader gets as the widget's description."""
    return QAccessible.queryAccessibleInterface(widget).text(QAccessible.Text.Description)


# -- the menu and the controls bar ------------------------------------------------------------
def test_every_user_shortcut_has_one_menu_action_that_follows_the_settings(window, settings):
    keys = {key.split("/", 1)[1] for key in DEFAULTS if key.startswith("shortcuts/")}
    actions = window.menus.shortcut_actions
    assert set(actions) == keys
    assert actions["start_stop"] is window.start_action
    for number, key in enumerate(sorted(keys), start=1):
        settings.set(f"shortcuts/{key}", f"Ctrl+Alt+{number}")
    window._apply_shortcuts()
    for number, key in enumerate(sorted(keys), start=1):
        assert actions[key].shortcut() == QKeySequence(f"Ctrl+Alt+{number}")
        assert actions[key] in window.actions()  # works while the menu bar is hidden


def test_the_controls_bar_says_what_was_asked_and_the_window_acts(qtbot, window, settings):
    controls = window.controls
    with qtbot.waitSignal(controls.start_stop_requested):
        window.start_button.click()
    assert window.controller.state == "loading"  # the window started a session
    assert window.start_button.text() == "Cancel"
    qtbot.waitUntil(lambda: window.controller.state == "idle")  # no microphone here

    chosen = []
    controls.model_chosen.connect(lambda role, name: chosen.append((role, name)))
    combo = window.translation_combo
    combo.activated.emit(combo.findData("facebook/s2t-medium-mustc-multilingual-st"))
    assert chosen[-1] == (TRANSLATION, "facebook/s2t-medium-mustc-multilingual-st")
    assert settings.get("models/translation") == "facebook/s2t-medium-mustc-multilingual-st"
    assert window.language_combo.isEnabled()
    combo = window.caption_combo
    combo.activated.emit(combo.count() - 1)  # "Manage models…"
    assert chosen[-1] == (CAPTION, None)
    assert window.manager is not None and window.manager.isVisible()
    assert window.caption_model() == settings.get("models/caption")


# -- themes -----------------------------------------------------------------------------------
def text_room(combo: QComboBox) -> int:
    """The width a combo box gives its text (its frame and arrow taken off)."""
    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    field = combo.style().subControlRect(
        QStyle.ComplexControl.CC_ComboBox, option, QStyle.SubControl.SC_ComboBoxEditField, combo
    )
    return field.width()


@pytest.mark.parametrize("theme", ["light", "dark", "high-contrast"])
def test_drop_downs_show_their_whole_text_in_every_theme(qtbot, window, theme):
    window.set_theme("light")
    window.input_combo.setCurrentIndex(2)  # "System audio: Speakers (monitor)", the longest
    window.set_theme(theme)  # a theme chosen while the window is open
    combos = [window.input_combo, window.caption_combo, window.translation_combo]
    for _ in range(3):
        QApplication.processEvents()
    for combo in combos:
        needed = combo.fontMetrics().horizontalAdvance(combo.currentText())
        assert text_room(combo) >= needed, (theme, combo.currentText())
    window.set_theme("light")


def test_a_disabled_list_stays_readable_in_the_dark_theme(window):
    window.set_translation_model("", save=False)
    window.set_theme("dark")
    combo = window.language_combo
    assert not combo.isEnabled() and combo.currentText()
    palette = combo.palette()
    disabled = QPalette.ColorGroup.Disabled
    text = palette.color(disabled, QPalette.ColorRole.ButtonText)
    assert contrast(text, palette.color(disabled, QPalette.ColorRole.Button)) >= 4.5
    assert text != palette.color(QPalette.ColorGroup.Active, QPalette.ColorRole.ButtonText)
    window.set_theme("light")


# -- screen readers ---------------------------------------------------------------------------
def test_status_labels_and_meter_tell_screen_readers_what_they_show(window):
    status = window.status
    window.controller.events.emit([(CAPTION, Stats(10.0, 15.0, 1.5, 2.0, 3.4))])
    assert described(status.speed) == status.speed.text() == "1.50× real time · latency 3.4 s"
    assert described(status.warning) == status.warning.text()
    assert "slower than speech" in described(status.warning)
    assert status.speed.accessibleName() == "Speed and latency"  # the name says what it is
    assert described(status.state) == "Ready"
    window.controller.started.emit(CAPTION_INFO, None)
    assert described(status.device) == "CPU float32"
    assert described(status.speed) == "None"  # cleared for the new session

    meter = status.meter
    assert described(meter) == "Silent"
    meter.set_level(-21.0, -9.0)
    assert described(meter) == "-21 dB, peak -9 dB"
    meter.set_level(-3.0, -0.4)
    assert described(meter) == "-3 dB, peak -0 dB, clipping"


# -- inputs -----------------------------------------------------------------------------------
def test_the_input_list_is_read_again_when_the_chooser_opens(qtbot, settings, store, tmp_path):
    devices = [HEADSET]
    window = MainWindow(settings, store, loader=load_double, device_lister=lambda: list(devices))
    qtbot.addWidget(window)
    window.show()
    combo = window.input_combo
    qtbot.waitUntil(lambda: combo.findText("Microphone: USB headset") >= 0)
    window.set_input_file(tmp_path / "talk.wav")
    devices.append(MONITOR)  # a PulseAudio monitor appears after the start
    combo.showPopup()
    qtbot.waitUntil(lambda: combo.findText("System audio: Speakers (monitor)") >= 0)
    combo.hidePopup()
    assert combo.currentText() == "File: talk.wav"  # the choice made stays
    assert [combo.itemText(i) for i in range(combo.count())] == [
        "Default microphone",
        "Microphone: USB headset",
        "System audio: Speakers (monitor)",
        "File: talk.wav",
        "Audio file…",
    ]
    combo.setCurrentIndex(1)
    devices.remove(HEADSET)  # unplugged: gone from the list, the default takes its place
    combo.showPopup()
    qtbot.waitUntil(lambda: combo.findText("Microphone: USB headset") < 0)
    combo.hidePopup()
    assert combo.currentText() == "Default microphone"
    window.close()


# -- first run --------------------------------------------------------------------------------
def test_the_first_run_offer_counts_as_made_only_once_answered(window, settings, monkeypatch):
    downloads = []
    monkeypatch.setattr(ModelManager, "download", lambda self, repo: downloads.append(repo))
    # The question as the old code asked it, so it cannot block a run of this test.
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    settings.set("first_run/offer_download", True)

    monkeypatch.setattr(QMessageBox, "exec", lambda box: 0)  # closed with no answer
    window._offer_first_download()
    assert settings.get("first_run/offer_download") is True
    assert downloads == []

    def answer(button):
        def exec_(box):
            assert settings.get("first_run/offer_download") is True  # not yet: still asking
            box.button(button).click()
            return 0

        return exec_

    monkeypatch.setattr(QMessageBox, "exec", answer(QMessageBox.StandardButton.No))
    window._offer_first_download()
    assert settings.get("first_run/offer_download") is False
    assert downloads == []

    settings.set("first_run/offer_download", True)
    monkeypatch.setattr(QMessageBox, "exec", answer(QMessageBox.StandardButton.Yes))
    window._offer_first_download()
    assert settings.get("first_run/offer_download") is False
    assert downloads == [window.caption_model()]


# -- banners ----------------------------------------------------------------------------------
def test_invalid_input_samples_are_reported_once_a_session(window):
    banner = window.banner
    window.controller.started.emit(CAPTION_INFO, None)
    window.controller.events.emit([(CAPTION, Stats(1.0, 0.5, 0.5))])
    assert banner.isHidden()
    window.controller.events.emit([(CAPTION, Stats(2.0, 1.0, 0.5, nonfinite_samples=1200))])
    assert banner.isVisible()
    assert "1,200 invalid samples" in banner.message.text()
    assert "silence" in banner.message.text()
    banner.hide()
    window.controller.events.emit([(CAPTION, Stats(3.0, 1.5, 0.5, nonfinite_samples=1900))])
    window.controller.events.emit([(TRANSLATION, Stats(3.0, 1.5, 0.5, nonfinite_samples=1900))])
    assert banner.isHidden()  # once is enough for one session
    window.controller.started.emit(CAPTION_INFO, None)
    window.controller.events.emit([(CAPTION, Stats(1.0, 0.5, 0.5, nonfinite_samples=3))])
    assert banner.isVisible() and "3 invalid samples" in banner.message.text()


@pytest.mark.parametrize("theme", ["light", "dark", "high-contrast"])
def test_an_error_keeps_its_message_and_hint_apart(window, theme):
    window.set_theme(theme)
    window.show_error("The Hub cannot be reached.", "Check the network, or add a local folder.")
    QApplication.processEvents()
    banner = window.banner
    banner.message.ensurePolished()
    banner.hint.ensurePolished()
    assert banner.message.font().bold() and not banner.hint.font().bold()
    assert banner.hint.geometry().top() > banner.message.geometry().bottom()
    assert (
        described(banner) == "The Hub cannot be reached.\nCheck the network, or add a local folder."
    )
    window.set_theme("light")
