"""Text translation following the caption stream: finals per caption segment with its times,
provisionals replaced in place, the source language per segment, in a live session too."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import soundfile

from engine.audio.sources import FileSource
from engine.errors import ModelError
from engine.events import Commit, EndOfTurn, Partial, Word
from engine.models import m2m100, marian
from engine.models.contract import LoadOptions
from engine.session import LiveSession
from engine.store import SessionStore
from engine.streaming import text_translator
from engine.streaming.text_translator import CaptionTranslator
from engine.transcript import TranscriptBuilder
from tests.recognizer_doubles import RecordingRecognizer, info
from tests.translation_fixtures import tiny

ENGLISH = "the quick brown fox jumps over the lazy dog."
FRENCH = "la reunion commence a neuf heures et finit avant midi."


@pytest.fixture(autouse=True)
def unpaced(monkeypatch):
    """Provisionals as often as the captions change (their pacing has its own test)."""
    monkeypatch.setattr(text_translator, "PROVISIONAL_SHARE", 1.0)


@pytest.fixture(scope="module")
def en_fr():
    return marian.load_model(tiny("marian"), "opus-mt-en-fr", LoadOptions(beams=1))


@pytest.fixture(scope="module")
def into_german():
    return m2m100.load_model(tiny("m2m100"), "m2m", LoadOptions(beams=1, target_lang="de"))


def commits(sentence: str, start: float = 0.0, seconds: float = 0.4) -> list[Commit]:
    """One Commit per word, as a streaming caption model gives them."""
    out = []
    for n, text in enumerate(sentence.split()):
        begin = start + n * seconds
        out.append(Commit(text, begin, begin + seconds, (Word(text, begin, begin + seconds),)))
    return out


def segments(events) -> list[tuple[float, float, str]]:
    builder = TranscriptBuilder()
    for event in events:
        builder.add(event)
    return [(s.start, s.end, s.text) for s in builder.finish(0.0).segments]


def test_each_caption_segment_is_translated_once_with_its_times(en_fr):
    follower = CaptionTranslator(en_fr, info("captions", "en"), provisional=False)
    caption = [*commits(ENGLISH), EndOfTurn(4.0), *commits("please repeat the meeting", 5.0)]
    translated = follower.follow(caption) + follower.flush()
    expected = [
        (start, end, en_fr.translate(text, "en").text) for start, end, text in segments(caption)
    ]
    assert segments(translated) == expected
    assert len(expected) == 2 and expected[0][:2] == (0.0, pytest.approx(3.6))
    assert not [e for e in translated if isinstance(e, Partial)]


def test_a_growing_segment_gets_provisionals_then_its_final(en_fr):
    follower = CaptionTranslator(en_fr, info("captions", "en"))
    words = commits(ENGLISH)
    first = follower.follow([words[0], Partial("quick bro", 0.4)])
    assert first == [Partial(en_fr.translate("the quick bro", "en").text, 0.0)]
    assert follower.follow([Partial("quick bro", 0.4)]) == []  # nothing new: no work
    # a batch that waited (the translator fell behind): one provisional, for its newest state
    batch = follower.follow([*words[1:4], Partial("over the", 1.6)])
    assert batch == [Partial(en_fr.translate("the quick brown fox over the", "en").text, 0.0)]
    final = follower.follow(words[4:])
    text = en_fr.translate(ENGLISH, "en").text
    assert final[:2] == [Commit(text, 0.0, words[-1].end), EndOfTurn(words[-1].end)]
    assert final[2:] == []  # the EndOfTurn clears the provisional on show (the panes)


def test_provisionals_take_at_most_their_share_of_the_time(en_fr, monkeypatch):
    """After a provisional that took t, words arriving within t · (1 / share − 1) get none;
    the next call after that translates the newest text; a final is never held back."""
    clock, translate = [0.0], en_fr.translate

    def taking_a_tenth_of_a_second(text, source, draft=(), stop=None):
        clock[0] += 0.1
        return translate(text, source, draft, stop)

    monkeypatch.setattr(text_translator, "PROVISIONAL_SHARE", 0.1)
    monkeypatch.setattr(text_translator, "_now", lambda: clock[0])
    monkeypatch.setattr(en_fr, "translate", taking_a_tenth_of_a_second)
    follower = CaptionTranslator(en_fr, info("captions", "en"))
    words = commits(ENGLISH)
    assert follower.follow(words[:1]) == [Partial(translate("the", "en").text, 0.0)]
    clock[0] += 0.5  # 0.6 s in: 0.1 s spent, 0.9 s more must pass
    assert follower.follow(words[1:2]) == []
    clock[0] += 0.45
    newest = [Partial(translate("the quick brown", "en").text, 0.0)]
    assert follower.follow(words[2:3]) == newest
    final = follower.follow(words[3:])  # within the pause after that provisional
    assert final[:1] == [Commit(translate(ENGLISH, "en").text, 0.0, words[-1].end)]


def test_a_provisional_is_given_up_when_its_segment_closes_meanwhile(en_fr):
    """Live: the events that arrive while a provisional is worked out are taken between its
    decoder steps; one that closes the segment ends the provisional unfinished, and that
    final comes at once (no provisional before it), the same as without the interruption."""
    follower = CaptionTranslator(en_fr, info("captions", "en"))
    words = commits(ENGLISH)
    arriving = [words[1:]]  # the rest of the sentence, taken at the first decoder step
    out = follower.follow(words[:1], incoming=lambda: arriving.pop() if arriving else [])
    text = en_fr.translate(ENGLISH, "en").text
    assert out == [Commit(text, 0.0, words[-1].end), EndOfTurn(words[-1].end)]


def test_words_arriving_during_a_provisional_make_only_the_next_one_newer(en_fr):
    """Words that close nothing do not interrupt a provisional (it is shown, a little stale);
    the next call translates the newest text only, once."""
    follower = CaptionTranslator(en_fr, info("captions", "en"))
    words = commits(ENGLISH)
    arriving = [words[1:3]]
    out = follower.follow(words[:1], incoming=lambda: arriving.pop() if arriving else [])
    assert out == [Partial(en_fr.translate("the", "en").text, 0.0)]
    newest = [Partial(en_fr.translate("the quick brown", "en").text, 0.0)]
    assert follower.follow([], incoming=list) == newest
    assert follower.follow([], incoming=list) == []


@pytest.mark.parametrize("seed", range(3))
def test_live_finals_are_never_dropped_or_reordered(en_fr, seed):
    """However the caption events are split between calls and arrivals during provisionals,
    every segment gets exactly its final, in order, with its times."""
    caption, at = [], 0.0
    for sentence in (ENGLISH, "please repeat the meeting.", "we start at nine and end at noon."):
        caption += commits(sentence, at)
        at = caption[-1].end + 1.0
    expected = [
        (start, end, en_fr.translate(text, "en").text) for start, end, text in segments(caption)
    ]
    rng, queue = random.Random(seed), list(caption)

    def take():
        taken = queue[: rng.randint(0, 3)]
        del queue[: len(taken)]
        return taken

    follower, out = CaptionTranslator(en_fr, info("captions", "en")), []
    while queue:
        out += follower.follow(take() or [queue.pop(0)], incoming=take)
    out += follower.flush()
    assert segments(out) == expected
    assert len(expected) == 3


def test_a_final_starts_from_the_last_provisional_s_tokens(en_fr, monkeypatch):
    """The final is searched with the last provisional's tokens as its draft (fewer decoder
    steps), and comes out as the plain translation."""
    translate, drafts = en_fr.translate, []

    def recording(text, source, draft=(), stop=None):
        drafts.append(tuple(draft))
        return translate(text, source, draft, stop)

    monkeypatch.setattr(en_fr, "translate", recording)
    follower = CaptionTranslator(en_fr, info("captions", "en"))
    words = commits(ENGLISH)
    follower.follow(words[:-1])
    final = follower.follow(words[-1:])
    assert drafts[-1] == translate(" ".join(ENGLISH.split()[:-1]), "en").ids != ()
    assert final[0].text == translate(ENGLISH, "en").text


def test_a_bilingual_caption_model_gets_each_sentence_language_identified(into_german):
    kyutai_1b = dataclasses.replace(info("kyutai", None), languages=("en", "fr"))
    follower = CaptionTranslator(into_german, kyutai_1b, provisional=False)
    out = follower.follow([*commits(ENGLISH), *commits(FRENCH, 5.0)])
    finals = [e.text for e in out if isinstance(e, Commit)]
    assert finals == [
        into_german.translate(ENGLISH, "en").text,
        into_german.translate(FRENCH, "fr").text,
    ]
    assert finals[0] != into_german.translate(ENGLISH, "fr").text  # the language mattered


def test_a_user_fixed_source_language_is_kept(into_german):
    kyutai_1b = dataclasses.replace(info("kyutai", None), languages=("en", "fr"))
    follower = CaptionTranslator(into_german, kyutai_1b, source="fr", provisional=False)
    out = follower.follow(commits(ENGLISH))
    assert out[0].text == into_german.translate(ENGLISH, "fr").text


def test_a_sentence_the_model_cannot_read_says_so(en_fr):
    captions = dataclasses.replace(info("kyutai", None), languages=("en", "de"))
    follower = CaptionTranslator(en_fr, captions, provisional=False)
    german = "der schnelle braune Fuchs springt über den faulen Hund und das ist gut."
    out = follower.follow(commits(german))
    assert out[0].text == "[German: not translated — opus-mt-en-fr reads English]"
    assert follower.follow(commits(ENGLISH))[0].text == en_fr.translate(ENGLISH, "en").text


def test_text_already_in_the_target_language_is_shown_as_it_is(en_fr):
    captions = dataclasses.replace(info("kyutai", None), languages=("en", "fr"))
    follower = CaptionTranslator(en_fr, captions, provisional=False)
    assert follower.follow(commits(FRENCH))[0].text == FRENCH


def test_captions_of_unknown_language_need_a_source_language(en_fr, into_german):
    unknown = dataclasses.replace(info("somewhere/asr", None), languages=())
    with pytest.raises(ModelError, match="--source-lang"):
        CaptionTranslator(into_german, unknown)
    pair = CaptionTranslator(en_fr, unknown, provisional=False)  # a pair reads one language
    assert pair.follow(commits(ENGLISH))[0].text == en_fr.translate(ENGLISH, "en").text


class SentenceRecognizer(RecordingRecognizer):
    """Commits the words of ENGLISH, one per `word_seconds` of audio, over and over."""

    def _word(self, n: int) -> Commit:
        words = ENGLISH.split()
        start, end = n * self.word_seconds, (n + 1) * self.word_seconds
        text = words[n % len(words)]
        return Commit(text, start, end, (Word(text, start, end),))


def test_a_live_session_saves_translations_with_the_captions_times(en_fr, tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, np.zeros(16000 * 6, np.float32), 16000)
    store = SessionStore(tmp_path / "s.db")
    follower = CaptionTranslator(en_fr, info("captions", "en"))
    events = []
    session = LiveSession(
        # at the pace of speech: faster, every provisional would be overtaken by its final
        FileSource(path, realtime=True),
        SentenceRecognizer(word_seconds=0.5),
        lambda role, event: events.append((role, event)),
        translation=follower,
        store=store,
    )
    session.start()
    assert session.wait(timeout=60)
    saved = store.transcript(session.session_id)
    assert saved.translation.model == "opus-mt-en-fr"
    caption_times = [(s.start, s.end) for s in saved.segments]
    assert [(s.start, s.end) for s in saved.translation.segments] == caption_times
    assert saved.translation.segments[0].text == en_fr.translate(ENGLISH, "en").text
    assert any(role == "translation" and isinstance(e, Partial) for role, e in events)
    assert session.transcript().translation.segments == saved.translation.segments


# -- the app: the Translate chooser offers text models with any caption model ---------------


def test_the_app_translates_any_caption_model_with_a_text_model(qtbot, tmp_path, en_fr):
    from PySide6.QtCore import QSettings

    from app.live_transcript import TRANSLATION
    from app.settings import AppSettings
    from app.window import MainWindow
    from tests.app_doubles import load_double
    from tests.test_app import CAPTION_ROWS, run_session

    def loader(model, options):
        return en_fr if "opus-mt" in model else load_double(model, options)

    settings = AppSettings(QSettings(str(tmp_path / "l.ini"), QSettings.Format.IniFormat))
    settings.set("first_run/offer_download", False)
    store = SessionStore(tmp_path / "s.db")
    window = MainWindow(settings, store, loader=loader, device_lister=lambda: [])
    qtbot.addWidget(window)
    window.show()
    combo = window.translation_combo
    offered = [combo.itemData(i) for i in range(combo.count())]
    assert {"Helsinki-NLP/opus-mt-en-de", "facebook/m2m100_418M"} <= set(offered)
    wav = tmp_path / "speech.wav"
    soundfile.write(wav, np.zeros(int(2.8 * 16000), np.float32), 16000)
    run_session(qtbot, window, wav, translation="Helsinki-NLP/opus-mt-en-fr")
    rows = window.transcript.rows
    assert [row.caption for row in rows] == CAPTION_ROWS
    expected = [en_fr.translate(text, "en").text for text in CAPTION_ROWS]
    assert [row.translation for row in rows] == expected
    assert window.translation_pane.role == TRANSLATION
    saved = store.transcript(store.sessions()[0].id)
    assert [(s.start, s.end) for s in saved.translation.segments] == [
        (s.start, s.end) for s in saved.segments
    ]
    window.close()
    store.close()
