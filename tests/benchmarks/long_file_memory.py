"""Peak memory of `livecap transcribe` against the file's length: does it stay flat?

    .venv/bin/python tests/benchmarks/long_file_memory.py --minutes 10 120
    .venv/bin/python tests/benchmarks/long_file_memory.py --minutes 10 120 --tiny-kyutai

For each length, writes a WAV of syllable-shaped noise (22.05 kHz, 16-bit, so `transcribe`
must resample it) and runs the real CLI on it in a fresh process, reporting that process's
peak resident memory (ru_maxrss) and wall time. The model is a stand-in that commits a word
per second of audio and keeps nothing else, so the figures measure what the CLI itself holds:
reading, resampling, feeding and the transcript. With --tiny-kyutai, a tiny random Kyutai
checkpoint (built by transformers, the test oracle) is used instead. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[2]
FILE_RATE = 22050

# Run in the measured process: the real CLI, its model replaced by a stand-in (argv[2] "-")
# or loaded from the folder in argv[2].
_RUN = """
import resource, sys
import main
from engine.events import Commit

class WordPerSecond:
    sample_rate, frame_size = 16000, 320

    def __init__(self):
        from engine.recognizer import ModelInfo
        self.info = ModelInfo("stand-in", "none", ("en",), "en", 0.0, "cpu", "float32")
        self.fed = 0

    def feed(self, samples):
        before, self.fed = self.fed, self.fed + samples.size
        seconds = range(before // self.sample_rate, self.fed // self.sample_rate)
        return [Commit(f"w{n}", n, n + 0.5) for n in seconds]

    def flush(self):
        return []

if sys.argv[2] == "-":
    main.load_engines = lambda args, offline=False: (WordPerSecond(), None)
code = main.main(["transcribe", sys.argv[1], "--model", sys.argv[2], "-o", sys.argv[3]])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
sys.exit(code)
"""


def write_speechlike_wav(path: Path, seconds: float, seed: int = 0) -> None:
    """Noise with a 4 Hz syllable envelope, written a minute at a time."""
    rng = np.random.default_rng(seed)
    block = FILE_RATE * 60
    with soundfile.SoundFile(path, "w", FILE_RATE, 1, "PCM_16") as out:
        for start in range(0, int(seconds * FILE_RATE), block):
            n = min(block, int(seconds * FILE_RATE) - start)
            t = (start + np.arange(n)) / FILE_RATE
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
            out.write((0.2 * rng.standard_normal(n) * envelope).astype(np.float32))


def measure(seconds: float, model: str = "-") -> dict:
    """Peak RSS (bytes) and wall time of one `transcribe` of `seconds` of audio."""
    with tempfile.TemporaryDirectory() as tmp:
        audio = Path(tmp) / "long.wav"
        write_speechlike_wav(audio, seconds)
        began = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-c", _RUN, str(audio), model, str(Path(tmp) / "out.txt")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - began
        words = len((Path(tmp) / "out.txt").read_text().split())
    return {
        "audio_minutes": seconds / 60,
        "peak_rss_mb": round(int(run.stdout.split()[-1]) / 1e6, 1),
        "wall_seconds": round(wall, 1),
        "words": words,
    }


def tiny_kyutai(folder: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from tests.kyutai_fixtures import SHAPES, build_tiny_model

    return str(build_tiny_model(folder, SHAPES["gqa"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 120.0])
    parser.add_argument("--tiny-kyutai", action="store_true", help="a tiny real model")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_kyutai(Path(tmp) / "tiny") if args.tiny_kyutai else "-"
        runs = [measure(minutes * 60, model) for minutes in args.minutes]
    peaks = [run["peak_rss_mb"] for run in runs]
    print(
        json.dumps(
            {
                "model": "tiny-kyutai" if args.tiny_kyutai else "stand-in",
                "runs": runs,
                "peak_growth": round(max(peaks) / min(peaks), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
