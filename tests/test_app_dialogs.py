"""The app's dialogs and overlay as a user meets them: model manager errors, rows and
buttons; partial text in the overlay; colour swatches and the font in use in settings;
deleting and exporting in the history (offscreen Qt, temporary settings and store)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import dataclasses

import pytest
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QColor, QFont, QFontInfo, QTextDocument
from PySide6.QtWidgets import QApplication, QFileDialog

from app.history import HistoryDialog
from app.live_transcript import CAPTION, TRANSLATION, LiveTranscript
from app.model_manager import ModelManager
from app.overlay import Overlay
from app.settings import AppSettings, OverlayLook
from app.settings_dialog import ColorButton, SettingsDialog
from app.themes import apply_theme
from engine import catalogue
from engine.errors import ModelError
from engine.events import Commit, EndOfTurn, Partial
from engine.store import SessionStore
from tests.app_doubles import FakeHub

OFFLINE = (
    "The Hugging Face Hub cannot be reached: there is no network connection.",
    "Models already downloaded: facebook/s2t-small-librispeech-asr. To use a model you "
    "already have, choose Add local folder.",
)


@pytest.fixture
def settings(tmp_path):
    return AppSettings(
        QSettings(str(tmp_path / "livecap.ini"), QSettings.Format.IniFormat),
        tmp_path / "local_folders.json",
    )


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub(step=40_000_000, pause=0.01)
    for name in ("download", "is_downloaded", "delete_model"):
        monkeypatch.setattr(f"engine.hub.{name}", getattr(fake, name))
    return fake


@pytest.fixture
def manager(qtbot, settings, hub):
    dialog = ModelManager(settings)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


@pytest.fixture
def high_contrast(qapp):
    style, palette, sheet = qapp.style().name(), qapp.palette(), qapp.styleSheet()
    apply_theme(qapp, "high-contrast")
    yield
    qapp.setStyleSheet(sheet)
    qapp.setPalette(palette)
    qapp.setStyle(style)


# -- model manager ----------------------------------------------------------------------------
def test_a_download_error_shows_the_engines_words_apart_and_is_gone_on_reopening(
    qtbot, manager, hub, monkeypatch
):
    repo = "facebook/s2t-small-librispeech-asr"
    working = hub.download

    def offline(*_args):
        raise ModelError(*OFFLINE)

    monkeypatch.setattr("engine.hub.download", offline)
    manager.select(repo)
    manager.download_button.click()
    qtbot.waitUntil(manager.banner.isVisible)
    assert (manager.banner.message.text(), manager.banner.hint.text()) == OFFLINE
    assert OFFLINE[0] not in manager.progress_label.text()
    assert manager.download_button.isEnabled()  # the offer can be taken up again

    manager.close()
    manager.show()  # reopened later: the old error is not shown as if it were new
    assert not manager.banner.isVisible()

    monkeypatch.setattr("engine.hub.download", working)
    manager.select(repo)
    manager.download_button.click()
    qtbot.waitUntil(lambda: "downloaded and ready" in manager.progress_label.text())
    assert not manager.banner.isVisible()
    assert manager.table.item(2, 5).text() == "Downloaded"


def test_use_buttons_follow_what_the_model_does(manager, settings, tmp_path):
    def buttons(name):
        manager.select(name)
        return manager.caption_button.isEnabled(), manager.translation_button.isEnabled()

    assert buttons("kyutai/stt-1b-en_fr-trfs") == (True, False)
    assert buttons("facebook/s2t-small-librispeech-asr") == (True, False)
    assert buttons("facebook/s2t-medium-mustc-multilingual-st") == (False, True)
    assert buttons("facebook/wav2vec2-xls-r-300m-en-to-15") == (False, True)
    folder = tmp_path / "folder-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert manager.add_folder(str(folder))
    assert buttons(str(folder)) == (True, True)  # a folder may hold either kind


def test_a_folder_list_that_cannot_be_saved_is_said_and_left_as_it_was(qtbot, hub, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings = AppSettings(
        QSettings(str(tmp_path / "livecap.ini"), QSettings.Format.IniFormat),
        blocker / "local_folders.json",
    )
    manager = ModelManager(settings)
    qtbot.addWidget(manager)
    manager.show()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    assert not manager.add_folder(str(tmp_path / "model"))
    assert manager.banner.isVisible()
    assert str(blocker / "local_folders.json") in manager.banner.message.text()
    assert "the list is unchanged" in manager.banner.hint.text()
    assert manager.table.rowCount() == len(catalogue.CATALOGUE)


def test_licences_and_languages_are_shown_when_the_catalogue_has_them(
    qtbot, settings, hub, monkeypatch
):
    entries = [
        dataclasses.replace(catalogue.CATALOGUE[0], licence="CC-BY 4.0"),
        dataclasses.replace(catalogue.CATALOGUE[3], licence=""),
    ]
    monkeypatch.setattr(catalogue, "CATALOGUE", entries)
    manager = ModelManager(settings)
    qtbot.addWidget(manager)
    headers = [manager.table.horizontalHeaderItem(c).text() for c in range(len(manager.columns))]
    assert headers[-1] == "Licence"
    assert [manager.table.item(r, len(headers) - 1).text() for r in range(2)] == [
        "CC-BY 4.0",
        "Not given",
    ]
    assert manager.table.item(0, 1).text() == "en, fr"
    assert manager.table.item(1, 1).text().endswith("ru (translation)")

    monkeypatch.setattr(catalogue, "CATALOGUE", entries[1:2])
    plain = ModelManager(settings)
    qtbot.addWidget(plain)
    assert "Licence" not in plain.columns  # no empty column when nothing is known


def test_the_first_row_stays_in_view_when_the_last_is_chosen(
    qtbot, settings, hub, high_contrast, monkeypatch
):
    # the speech models and a folder: as many rows as fit the dialog's table at once
    speech = [e for e in catalogue.CATALOGUE if e.task != "text-translate"]
    monkeypatch.setattr(catalogue, "CATALOGUE", speech)
    folder_model = settings.folders_file.parent / "my-model"
    folder_model.mkdir()
    (folder_model / "config.json").write_text("{}")
    settings.set_local_model_folders([str(folder_model)])
    manager = ModelManager(settings)
    qtbot.addWidget(manager)
    manager.show()
    qtbot.waitExposed(manager)
    manager.select(str(folder_model))
    table = manager.table
    qtbot.wait(50)
    for row in (0, table.rowCount() - 1):
        top = table.rowViewportPosition(row)
        assert 0 <= top and top + table.rowHeight(row) <= table.viewport().height(), row


# -- overlay ----------------------------------------------------------------------------------
def fragments(label_html: str) -> list[tuple[str, bool]]:
    """(text, italic) of each run of text as Qt lays the label out."""
    document = QTextDocument()
    document.setHtml(label_html)
    runs, block = [], document.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            fragment = it.fragment()
            runs.append((fragment.text(), fragment.charFormat().fontItalic()))
            it += 1
        block = block.next()
    return runs


def test_partial_words_in_the_overlay_differ_by_more_than_colour(qtbot):
    model = LiveTranscript()
    model.apply(CAPTION, Commit("Good morning", 0.0, 0.8))
    model.apply(CAPTION, Partial("everyone", 0.8))
    model.apply(TRANSLATION, Partial("Guten Morgen", 0.0))
    overlay = Overlay(model, OverlayLook(lines=2, content="both"))
    qtbot.addWidget(overlay)
    runs = fragments(overlay.label.text())
    assert runs == [("Good morning ", False), ("everyone…", True), ("Guten Morgen…", True)]

    model.apply(CAPTION, Commit("everyone", 0.8, 1.2))
    model.apply(CAPTION, EndOfTurn(1.5))
    model.apply(TRANSLATION, Commit("Guten Morgen zusammen", 0.0, 1.2))
    model.finish()
    runs = fragments(overlay.label.text())
    assert runs == [("Good morning everyone", False), ("Guten Morgen zusammen", False)]
    assert overlay.lines() == [(CAPTION, "Good morning everyone"), (TRANSLATION, runs[1][0])]


# -- settings ---------------------------------------------------------------------------------
def test_colour_buttons_show_a_swatch_not_a_colour_code(qtbot):
    button = ColorButton("#ffffff", "Overlay text colour")
    qtbot.addWidget(button)
    button.set_color("#ff8800")
    assert "#" not in button.text()
    image = button.icon().pixmap(button.iconSize()).toImage()
    middle = image.pixelColor(image.width() // 2, image.height() // 2)
    assert middle == QColor("#ff8800")
    assert button.toolTip() == "#ff8800" and "#ff8800" in button.accessibleDescription()


def test_caption_font_names_the_system_font_it_follows_and_keeps_following_it(qtbot, settings):
    settings.set("view/caption_font_family", "")
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    in_use = QFontInfo(QApplication.font()).family()
    assert dialog.font_family.currentText() == f"System default ({in_use})"
    assert dialog.overlay_font.currentText() == f"System default ({in_use})"
    dialog.accept()
    assert settings.get("view/caption_font_family") == ""  # still follows the system
    assert settings.overlay().font_family == ""

    chosen = next(
        f for f in ("DejaVu Serif", "DejaVu Sans Mono") if QFontInfo(QFont(f)).exactMatch()
    )
    settings.set("view/caption_font_family", chosen)
    again = SettingsDialog(settings)
    qtbot.addWidget(again)
    assert again.font_family.currentText() == chosen
    again.accept()
    assert settings.get("view/caption_font_family") == chosen


# -- history ----------------------------------------------------------------------------------
@pytest.fixture
def history(qtbot, tmp_path):
    store = SessionStore(tmp_path / "sessions.db")
    session = store.begin("kyutai/stt-1b-en_fr-trfs", "Default microphone", "en")
    store.add(session, "caption", Commit("Hello everyone.", 0.1, 1.0))
    store.finish(session, 2.0)
    dialog = HistoryDialog(store)
    qtbot.addWidget(dialog)
    dialog.show()
    yield dialog
    store.close()


def answer_next_question(qtbot, key, seen: list) -> None:
    """Press `key` in the question box that is about to open, as the user would."""

    def press():
        box = QApplication.activeModalWidget()
        default = box.defaultButton()
        seen.append(default.text().replace("&", "") if default else None)
        qtbot.keyClick(box, key)

    QTimer.singleShot(200, press)


def test_deleting_a_session_asks_with_no_as_the_default(qtbot, history):
    seen = []
    answer_next_question(qtbot, Qt.Key.Key_Return, seen)
    history.delete_button.click()
    assert seen == ["No"]
    assert history.list.topLevelItemCount() == 1  # Enter kept it
    answer_next_question(qtbot, Qt.Key.Key_Y, seen)  # Yes, by its mnemonic
    history.delete_button.click()
    assert history.list.topLevelItemCount() == 0
    assert history.store.sessions() == []


def test_export_opens_in_documents_and_says_where_it_went(qtbot, history, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    offered = []

    def save_as(_parent, _title, suggested, _filters):
        offered.append(suggested)
        return suggested, ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_as)
    history.export_button.click()
    target = home / "Documents" / f"livecap-session-{history.current_id()}.srt"
    assert offered == [str(target)]
    assert target.read_text(encoding="utf-8").strip().endswith("Hello everyone.")
    assert history.notice.text() == f"Exported to {target}"

    (home / "Documents").rename(home / "Papers")  # no Documents folder: the home folder
    history.export_button.click()
    assert offered[1] == str(home / target.name)

    missing = home / "gone" / "out.txt"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a: (str(missing), ""))
    history.export_button.click()
    message, hint = history.notice.text().split("\n")
    assert message == f"Could not write {missing}: No such file or directory."
    assert hint.startswith("Choose another folder")


def test_no_route_to_the_hub_is_said_in_the_engines_words(qtbot, settings, monkeypatch, tmp_path):
    """The real download path, with the Hub on a closed loopback port: the manager says the
    Hub cannot be reached and what to do, message and hint apart, never "Something went
    wrong"; the offer to download stays usable."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    manager = ModelManager(settings)
    qtbot.addWidget(manager)
    manager.show()
    manager.select("facebook/s2t-small-librispeech-asr")
    manager.download_button.click()
    qtbot.waitUntil(manager.banner.isVisible, timeout=20_000)
    assert "cannot be reached" in manager.banner.message.text()
    assert "Something went wrong" not in manager.banner.message.text()
    assert "local model folder" in manager.banner.hint.text()
    qtbot.waitUntil(manager.download_button.isEnabled)
