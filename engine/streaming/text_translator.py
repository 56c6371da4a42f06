"""Translation that follows the caption stream: caption events in, translation events out.

The captions are grouped into segments by the same TranscriptBuilder that groups them for
the panes and the exports (a segment closes at a pause, a sentence end, or when it grows too
long). Each closed segment is translated once, as a Commit carrying that segment's start and
end, then an EndOfTurn, so the translation's segments have the captions' times and the
panes, history, exports and overlay line them up. While a segment grows, a provisional
translation of it (committed words and the caption's partial) comes as a Partial, which
replaces the previous one in place; it is only worked out for the newest state of a batch,
so a translator that falls behind skips stale provisionals, never a final. Live, a
provisional never delays a final: the caption events that arrive while it is worked out are
taken in between its decoder steps, and one that closes a segment ends it unfinished, so
that segment's final is translated at once (a final is never interrupted). A final starts
from the last provisional's tokens as its draft (the same result, in fewer steps).
Provisionals are paced to take at most PROVISIONAL_SHARE of the time: after one that took t,
the next waits until t · (1 / share − 1) has passed. Translating the growing sentence after
every word was most of the translation's work, and on a machine the caption engine already
fills, every moment of it is taken from the captions; finals are never paced.

The source language is the caption model's, or the user's; for a caption model that hears
several (Kyutai 1B: English and French) each segment's language is identified with lingua,
restricted to those languages. A segment the translation model cannot read says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from engine.catalogue import find_entry, language_name
from engine.errors import ModelError
from engine.events import Commit, EndOfTurn, Event, Partial
from engine.models.contract import ModelInfo
from engine.transcript import Segment, TranscriptBuilder, join_text

if TYPE_CHECKING:
    from engine.models.translator import TextTranslator

Incoming = Callable[[], Sequence[Event]]  # the caption events queued since, without waiting

PROVISIONAL_SHARE = 0.05  # of the time, at most, that provisional translations take
_now = time.monotonic


def caption_languages(caption: ModelInfo) -> tuple[str, ...]:
    """What a caption model's text may be written in: its language, else the languages it
    hears (its info, else the catalogue's entry); () when nothing says."""
    if caption.language:
        return (caption.language,)
    if caption.languages:
        return caption.languages
    entry = find_entry(caption.name)
    return entry.languages if entry else ()


class LanguageGuesser:
    """Each text's language among `languages`, with lingua (its own models, offline)."""

    def __init__(self, languages: Sequence[str]) -> None:
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

        known = []
        for code in languages:
            try:
                known.append(Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())))
            except (AttributeError, ValueError):
                continue
        self.languages = tuple(languages)
        self._detector = (
            LanguageDetectorBuilder.from_languages(*known).build() if len(known) > 1 else None
        )

    def guess(self, text: str, fallback: str) -> str:
        found = self._detector.detect_language_of(text) if self._detector else None
        if found is None:
            return fallback
        return found.iso_code_639_1.name.lower()


class CaptionTranslator:
    """Follows one caption stream (`follow(events)`), translating into `info.language`.

    `source`: the user's fixed source language, else None to take the caption model's
    (identified per segment when it has several). `provisional`: also translate growing
    segments (live use; a file needs only the finals)."""

    def __init__(
        self,
        translator: TextTranslator,
        caption: ModelInfo,
        source: str | None = None,
        provisional: bool = True,
    ) -> None:
        languages = (source,) if source else caption_languages(caption)
        if not languages and len(translator.sources) == 1:
            languages = translator.sources  # a language pair: what else could it be given
        if not languages:
            raise ModelError(
                f"Livecap cannot tell which language {caption.name} writes, so it cannot "
                "choose what to translate from.",
                "Name the captions' language (--source-lang).",
            )
        self.translator, self.provisional = translator, provisional
        self.info: ModelInfo = translator.info
        self._languages = LanguageGuesser(languages) if len(languages) > 1 else None
        self._language = languages[0]  # the last segment's: a fallback for short text
        self.reset()

    def reset(self) -> None:
        self._builder = TranscriptBuilder()
        self._partial = ""
        self._shown = ""  # the source text of the provisional translation on show
        self._draft: tuple[int, ...] = ()
        self._closed: list[Segment] = []  # segments closed, their finals not yet made
        self._next_provisional = 0.0  # when the pacing lets the next provisional start

    def follow(self, events: Sequence[Event], incoming: Incoming | None = None) -> list[Event]:
        """Caption events → translation events: the finals of the segments they close, in
        order, then one provisional for where the captions now stand. `incoming` (live use)
        hands over the events that arrived since; if they close a segment while the
        provisional is worked out, it is given up and that final returned at once (the
        provisional for the newest text comes with the next call)."""
        from engine.models.translator import Interrupted  # here: importing it loads torch

        self._take(events)
        out = self._finals()
        if not self.provisional or (out and incoming is not None):
            return out
        if _now() < self._next_provisional:
            return out  # the newest text gets its provisional at a later call
        try:
            return out + self._provisional(incoming)
        except Interrupted:
            return self._finals()

    def flush(self) -> list[Event]:
        closed = self._builder.close()
        if closed is not None:
            self._closed.append(closed)
        return self._finals()

    def _take(self, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, Partial):
                self._partial = event.text
                continue
            if isinstance(event, Commit):
                self._partial = ""
                closed = self._builder.add(event)
            elif isinstance(event, EndOfTurn):
                self._partial = ""
                closed = self._builder.close()
            else:
                continue
            if closed is not None:
                self._closed.append(closed)

    def _closed_meanwhile(self, incoming: Incoming) -> bool:
        """Take the events that arrived; whether a segment closed (its final is due)."""
        self._take(incoming())
        return bool(self._closed)

    def _finals(self) -> list[Event]:
        out: list[Event] = []
        while self._closed:
            segment = self._closed.pop(0)
            text = self._translate(segment.text, final=True)
            self._shown, self._draft = "", ()
            out += [Commit(text, segment.start, segment.end), EndOfTurn(segment.end)]
        return out

    def _provisional(self, incoming: Incoming | None) -> list[Event]:
        current = self._builder.current
        source = join_text(current.text if current else "", self._partial)
        if source == self._shown:
            return []
        start = current.start if current else 0.0
        began = _now()
        try:
            text = self._translate(source, final=False, incoming=incoming) if source else ""
        finally:  # an interrupted provisional took its time too
            ended = _now()
            self._next_provisional = ended + (ended - began) * (1 / PROVISIONAL_SHARE - 1)
        self._shown = source
        return [Partial(text, start)]

    def _translate(self, text: str, final: bool, incoming: Incoming | None = None) -> str:
        language = self._language
        if self._languages is not None:
            language = self._languages.guess(text, self._language)
            if final:
                self._language = language
        if language == self.info.language:
            return text  # already in the language asked for
        if not self.translator.supports(language):
            reads = ", ".join(language_name(code) for code in self.translator.sources[:5])
            return f"[{language_name(language)}: not translated — {self.info.name} reads {reads}]"
        stop = None if incoming is None else lambda: self._closed_meanwhile(incoming)
        result = self.translator.translate(text, language, draft=self._draft, stop=stop)
        if not final:
            self._draft = result.ids
        return result.text
