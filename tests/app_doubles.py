"""Recognizer doubles for the GUI tests: scripted words, emitted as stream time passes.

`ScriptedRecognizer` follows the engine contract (sample rate, frame size, feed, flush,
reset): each word of its script is shown as a Partial once its start time has been fed and
committed once its end time plus `delay` has been fed; `pauses` give EndOfTurn events.
The loaders mimic `engine.recognizer.load_recognizer(model, options)`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from engine.errors import ModelError
from engine.events import Commit, EndOfTurn, Partial, Word
from engine.recognizer import LoadOptions, ModelInfo

CAPTION_WORDS = [
    ("Hello", 0.1, 0.4),
    ("everyone", 0.4, 0.8),
    ("and", 0.8, 0.9),
    ("welcome.", 0.9, 1.3),
    ("Today", 1.5, 1.8),
    ("we", 1.8, 1.9),
    ("test", 1.9, 2.2),
    ("captions", 2.2, 2.6),
]
TRANSLATION_WORDS = [
    ("Hallo", 0.1, 0.4),
    ("zusammen", 0.4, 0.8),
    ("und", 0.8, 0.9),
    ("willkommen.", 0.9, 1.3),
    ("Heute", 1.5, 1.8),
    ("testen", 1.8, 2.2),
    ("wir", 2.2, 2.3),
    ("Untertitel", 2.3, 2.6),
]
PAUSES = [1.4]


class ScriptedRecognizer:
    sample_rate = 16000
    frame_size = 1600  # 100 ms

    def __init__(
        self,
        name: str,
        words,
        pauses=(),
        delay: float = 0.2,
        task="transcribe",
        language: str | None = "en",
    ) -> None:
        self.info = ModelInfo(
            name, "double", (language or "en",), language, delay, "cpu", "float32", task
        )
        self.words, self.pauses, self.delay = list(words), list(pauses), delay
        self.reset()

    def reset(self) -> None:
        self.fed = 0
        self.committed = 0
        self.paused = 0
        self.last_partial = ""

    @property
    def now(self) -> float:
        return self.fed / self.sample_rate

    def feed(self, samples: np.ndarray) -> list:
        self.fed += len(samples)
        return self._events(self.now - self.delay)

    def flush(self) -> list:
        return self._events(float("inf"))

    def _events(self, horizon: float) -> list:
        events = []
        while self.committed < len(self.words) and self.words[self.committed][2] <= horizon:
            text, start, end = self.words[self.committed]
            while self.paused < len(self.pauses) and self.pauses[self.paused] <= start:
                events.append(EndOfTurn(self.pauses[self.paused]))
                self.paused += 1
            events.append(Commit(text, start, end, (Word(text, start, end),)))
            self.committed += 1
        heard = [w for w in self.words[self.committed :] if w[1] <= self.now]
        partial = " ".join(w[0] for w in heard)
        if partial != self.last_partial and horizon != float("inf"):
            events.append(Partial(partial, heard[0][1] if heard else self.now))
            self.last_partial = partial
        return events


def load_double(model: str, options: LoadOptions) -> ScriptedRecognizer:
    """Stands in for load_recognizer: "broken" fails like a missing model would."""
    if options.progress:
        options.progress("reading weights", 0.5)
    if "broken" in model:
        raise ModelError(f"{model} is not downloaded.", "Download it in Tools → Models.")
    if "slow" in model:
        time.sleep(0.6)  # a model that takes a while to load, off the GUI thread
    if options.target_lang:
        return ScriptedRecognizer(
            model, TRANSLATION_WORDS, PAUSES, task="translate", language=options.target_lang
        )
    return ScriptedRecognizer(model, CAPTION_WORDS, PAUSES)


class FakeHub:
    """Stands in for engine.hub's download functions: bytes arrive in steps, cancel pauses,
    the next download resumes from the bytes already fetched (as huggingface_hub does)."""

    def __init__(self, step: int = 20_000_000, pause: float = 0.02) -> None:
        self.fetched: dict[str, int] = {}
        self.complete: set[str] = set()
        self.step, self.pause = step, pause

    def download(self, repo_id, on_bytes, cancel):
        from engine import catalogue
        from engine.hub import DownloadCancelled

        total = catalogue.find_entry(repo_id).size_bytes
        done = self.fetched.get(repo_id, 0)
        while done < total:
            if cancel.is_set():
                raise DownloadCancelled("Download cancelled.", "Start it again to resume.")
            done = min(total, done + self.step)
            self.fetched[repo_id] = done
            on_bytes(done, total)
            time.sleep(self.pause)
        self.complete.add(repo_id)
        return repo_id

    def is_downloaded(self, repo_id) -> bool:
        return repo_id in self.complete

    def delete_model(self, repo_id) -> None:
        self.complete.discard(repo_id)
        self.fetched.pop(repo_id, None)


def _stolen_seconds() -> float:
    """Time the hypervisor has stolen from all cores so far (0 where /proc/stat is absent)."""
    try:
        steal = int(Path("/proc/stat").read_text().split(maxsplit=9)[8])
    except (OSError, ValueError, IndexError):
        return 0.0
    return steal / os.sysconf("SC_CLK_TCK")


class Responsiveness:
    """Was the GUI thread ever blocked for more than `limit` seconds?

    A 10 ms QTimer heartbeat finds the gaps between event-loop turns. On a loaded machine a
    gap can also mean the OS ran other processes, so each long gap is checked for what the
    GUI thread did meanwhile: the CPU time it used, and how long a sampler thread saw it
    asleep inside Livecap's own code (app/ or engine/: a blocking wait). A gap counts as
    blocking when the thread used more CPU than the limit, or waited in our code for more
    than half of it. (Not CPU over half the limit: on this VM a thread's CPU time also
    counts time the hypervisor stole — about a tenth of busy time — and a turn of 50–100 ms
    of CPU, stretched by the worker thread's share of the GIL and cores, is not a block.)
    The CPU rule is waived for a gap in which the hypervisor stole more than a quarter of
    the machine's time (/proc/stat): the guest then charges stolen time to whichever thread
    was running (a 564 ms stall once showed as 367 ms of GUI CPU); such gaps are `excused`.
    """

    def __init__(self, limit: float = 0.1) -> None:
        import sys
        import threading

        from PySide6.QtCore import QTimer

        self.limit = limit
        self.longest_gap = 0.0
        self.blocked: list[str] = []
        self._main = threading.main_thread().ident
        self._stat = Path(f"/proc/self/task/{threading.main_thread().native_id}/stat")
        self._busy: list[float] = []
        self._running = True
        self._last, self._cpu = time.perf_counter(), time.thread_time()
        self._steal = _stolen_seconds()
        self.excused: list[str] = []
        self._timer = QTimer(interval=10, timeout=self._beat)
        self._timer.start()
        self._frames = sys._current_frames
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while self._running:
            frame = self._frames().get(self._main) if self._main_is_waiting() else None
            while frame is not None:
                name = frame.f_code.co_filename
                if "/app/" in name or "/engine/" in name:
                    self._busy.append(time.perf_counter())
                    break
                frame = frame.f_back
            time.sleep(0.005)

    def _main_is_waiting(self) -> bool:
        """Is the GUI thread asleep (on a lock, an event, I/O) rather than runnable? Only a
        sleeping thread is blocked by our code; a runnable one that made no progress was
        starved by the OS, and time it did run shows up as CPU time instead."""
        try:
            stat = self._stat.read_text()
        except OSError:  # no /proc: count every sample, as if asleep
            return True
        return stat.rsplit(")", 1)[1].split()[0] in "SD"

    def _beat(self) -> None:
        now, cpu, steal = time.perf_counter(), time.thread_time(), _stolen_seconds()
        gap = now - self._last
        self.longest_gap = max(self.longest_gap, gap)
        if gap > self.limit:
            inside = 0.005 * sum(1 for t in self._busy if self._last <= t <= now)
            starved = steal - self._steal > gap * (os.cpu_count() or 1) / 4
            report = (
                f"{gap * 1000:.0f} ms gap: {(cpu - self._cpu) * 1000:.0f} ms CPU, "
                f"{inside * 1000:.0f} ms seen in Livecap code"
            )
            if inside > self.limit / 2 or (cpu - self._cpu > self.limit and not starved):
                self.blocked.append(report)
            elif cpu - self._cpu > self.limit:
                self.excused.append(report)
        self._last, self._cpu, self._steal = now, cpu, steal

    def stop(self) -> list[str]:
        self._timer.stop()
        self._running = False
        self._sampler.join()
        return self.blocked
