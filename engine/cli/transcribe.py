"""`livecap transcribe`: a sound file through one or two recognizers, a block at a time.

The file is read, mixed down, cleaned of non-finite samples and resampled (soxr's streaming
resampler, one per recognizer rate) in blocks of a few seconds, so memory does not grow with
the file's length: a two-hour file needs what a ten-minute one does (measured by
tests/benchmarks/long_file_memory.py). Each recognizer is fed one-second chunks at its own
rate, as a whole-file run would feed it. On a terminal, stderr shows how far it got.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile

from engine.audio.finite import silence_nonfinite
from engine.audio.resample import StreamResampler
from engine.errors import AudioError, LivecapError, ModelError
from engine.events import Error
from engine.recognizer import Recognizer
from engine.streaming.text_translator import CaptionTranslator
from engine.transcript import Transcript, TranscriptBuilder

BLOCK_SECONDS = 5.0  # read from the file at a time
PROGRESS_EVERY_SECONDS = 0.5  # wall time between progress line updates


def check_output(path: Path) -> None:
    """Refuse an output file that cannot be written (LivecapError), before any work."""
    folder = path.parent
    if not folder.is_dir():
        raise LivecapError(
            f"Cannot write {path}: the folder {folder} does not exist.",
            "Create the folder first, or choose another path with -o.",
        )
    if path.is_dir():
        raise LivecapError(f"Cannot write {path}: it is a folder.", "Give a file name with -o.")
    if not os.access(folder, os.W_OK):
        raise LivecapError(
            f"Cannot write {path}: the folder {folder} is not writable.",
            "Choose a writable path with -o.",
        )


def write_output(path: Path | None, text: str) -> None:
    """`text` into `path`, or onto stdout without one."""
    if path is None:
        sys.stdout.write(text)
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise LivecapError(
            f"Cannot write {path}: {exc.strerror}", "Choose a writable path with -o."
        ) from None


def open_audio(path: Path) -> soundfile.SoundFile:
    """The file opened for reading in blocks; AudioError saying what is wrong otherwise."""
    if not path.is_file():
        raise AudioError(f"No such audio file: {path}", "Check the path of AUDIO.")
    try:
        return soundfile.SoundFile(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(
            f"Cannot read {path} as audio: {exc}", "Give a WAV, FLAC or OGG file."
        ) from None


class _Feed:
    """One recognizer's side: its resampler, the audio short of a whole chunk, its text, and
    the text translator following that text, if any."""

    def __init__(
        self, recognizer: Recognizer, file_rate: int, follower: CaptionTranslator | None = None
    ) -> None:
        self.recognizer = recognizer
        self.resampler = StreamResampler(file_rate, recognizer.sample_rate)
        self.pending = np.zeros(0, np.float32)
        self.builder = TranscriptBuilder(recognizer.info.name, recognizer.info.language)
        self.follower = follower
        if follower is not None:
            self.followed = TranscriptBuilder(follower.info.name, follower.info.language)

    def push(self, mono: np.ndarray) -> None:
        audio = np.concatenate((self.pending, self.resampler.process(mono)))
        chunk = self.recognizer.sample_rate
        whole = len(audio) // chunk * chunk
        for start in range(0, whole, chunk):
            self._add(self.recognizer.feed(audio[start : start + chunk]))
        self.pending = audio[whole:]

    def finish(self, duration: float) -> Transcript:
        rest = np.concatenate((self.pending, self.resampler.flush()))
        if rest.size:
            self._add(self.recognizer.feed(rest))
        self._add(self.recognizer.flush())
        transcript = self.builder.finish(duration)
        if self.follower is not None:
            for event in self.follower.flush():
                self.followed.add(event)
            transcript.translation = self.followed.finish(duration)
        return transcript

    def _add(self, events: list) -> None:
        for event in events:
            if isinstance(event, Error) and event.fatal:  # a caption server lost mid-file
                raise ModelError(event.message, "Run the command again to retry the file.")
            self.builder.add(event)
        if self.follower is not None:
            for event in self.follower.follow(events):
                self.followed.add(event)


class Progress:
    """`position / length · speed · time left` rewritten in place on a terminal's stderr."""

    def __init__(self, total_seconds: float) -> None:
        self.total = total_seconds
        self.shown = sys.stderr.isatty()
        self.began = self.last = time.monotonic()

    def update(self, position: float) -> None:
        now = time.monotonic()
        if not self.shown or now - self.last < PROGRESS_EVERY_SECONDS:
            return
        self.last = now
        speed = position / max(now - self.began, 1e-6)
        left = (self.total - position) / speed if speed > 0 else 0.0
        sys.stderr.write(
            f"\r\x1b[K{clock(position)} / {clock(self.total)} · {speed:.1f}× real time · "
            f"{clock(left)} left"
        )
        sys.stderr.flush()

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def clock(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def transcribe_file(
    sound: soundfile.SoundFile,
    caption: Recognizer,
    translation: Recognizer | CaptionTranslator | None,
) -> tuple[Transcript, int]:
    """The caption transcript (with the translation attached) and how many non-finite
    samples were replaced with silence. A CaptionTranslator translates the captions as
    they commit; a speech translation Recognizer hears the audio itself."""
    rate = sound.samplerate
    if isinstance(translation, CaptionTranslator):
        feeds = [_Feed(caption, rate, follower=translation)]
    else:
        feeds = [_Feed(caption, rate)] + ([_Feed(translation, rate)] if translation else [])
    progress = Progress(sound.frames / rate)
    block = max(1, round(BLOCK_SECONDS * rate))
    read = nonfinite = 0
    try:
        while (samples := sound.read(block, dtype="float32", always_2d=True)).shape[0]:
            mono = samples.mean(axis=1, dtype=np.float32)
            nonfinite += silence_nonfinite(mono)
            for feed in feeds:
                feed.push(mono)
            read += samples.shape[0]
            progress.update(read / rate)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioError(
            f"Reading {sound.name} failed after {clock(read / rate)}: {exc}",
            "The file may be truncated or damaged; convert it again or give another file.",
        ) from None
    finally:
        progress.clear()
    transcripts = [feed.finish(read / rate) for feed in feeds]
    if len(transcripts) > 1:
        transcripts[0].translation = transcripts[1]
    return transcripts[0], nonfinite
