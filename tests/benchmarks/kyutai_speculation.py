"""Speculative LM passes against one step per frame, full-size Kyutai, random weights.

    .venv/bin/python tests/benchmarks/kyutai_vs_transformers.py --keep /tmp/kyutai1b \
        --dtype bfloat16 --frames 20 --skip-reference          # once: save a random 1B model
    flock /tmp/team/bench.lock .venv/bin/python tests/benchmarks/kyutai_speculation.py \
        --folder /tmp/kyutai1b --dtype int8 --pad-fraction 0.6

When frames wait (a file, or a live stream that fell behind), the recognizer steps up to N of
them in one LM pass with pads guessed as their text inputs, and rolls back after the first
non-pad token (engine/streaming/kyutai_stream.py). Its gain depends on how often the model
emits pads, and random weights emit almost none: so the pad logit gets a constant bias,
calibrated so that `--pad-fraction` of the steps pick it (real speech at 2.5 words/s, with one
word-start marker and ~1.3 pieces per word, is about 0.55 pads; pauses raise it).

Prints one JSON object: per-frame milliseconds of both runs over the same audio (medians of
`--repeats`), their ratio, how many rows were rolled back, and how long the tokens agree.
`--live` also replays the audio as it would arrive live (as `livecap bench` does: each feed
takes all audio that has arrived) and reports how far the captions lag behind the audio.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine import openmp  # noqa: E402

openmp.configure()  # as main.py, before torch loads

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from engine.bench import replay_live, synthetic_speech  # noqa: E402
from engine.models.kyutai.config import SAMPLE_RATE  # noqa: E402
from engine.models.kyutai.weights import KyutaiModel, load_model  # noqa: E402
from engine.recognizer import ModelInfo  # noqa: E402
from engine.streaming.kyutai_stream import KyutaiRecognizer, speculative_rows  # noqa: E402
from tests.kyutai_fixtures import _tokenizer_json  # noqa: E402


class PadBiasedHead:
    """The model's text head with a constant added to the pad logit."""

    def __init__(self, head, pad: int) -> None:
        self.head, self.pad, self.bias = head, pad, 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(x)
        logits[..., self.pad] += self.bias
        return logits


def calibrate(model: KyutaiModel, head: PadBiasedHead, audio: np.ndarray, fraction: float):
    """The bias that makes `fraction` of the steps over `audio` pick the pad."""
    recognizer = _recognizer(model, 1)
    margins = []
    step = model.lm.step

    def record(token, codes, state):
        logits = step(token, codes, state)
        others = torch.cat((logits[: head.pad], logits[head.pad + 1 :]))
        margins.append(float(others.max() - logits[head.pad]))
        return logits

    model.lm.step = record
    recognizer.feed(audio)
    del model.lm.step
    head.bias = float(np.quantile(margins, fraction))


def _recognizer(model: KyutaiModel, rows: int) -> KyutaiRecognizer:
    tokenizer = Tokenizer.from_str(_tokenizer_json(model.config.vocab_size))
    info = ModelInfo("random", "kyutai", ("en",), None, 0.5, "cpu", "")
    return KyutaiRecognizer(model, tokenizer, info, pause_flush=False, max_rows=rows)


def transcribe(model: KyutaiModel, rows: int, audio: np.ndarray) -> tuple[float, list, int, int]:
    """The whole audio in one feed: seconds, tokens, rows stepped ahead, rows rolled back."""
    recognizer = _recognizer(model, rows)
    tokens: list[int] = []
    push = recognizer._front.words.push
    recognizer._front.words.push = lambda token, at: tokens.append(token) or push(token, at)
    start = time.perf_counter()
    recognizer.feed(audio)
    return time.perf_counter() - start, tokens, recognizer.speculated, recognizer.rejected


def live(model: KyutaiModel, rows: int, audio: np.ndarray) -> dict:
    """Replay `audio` as it arrives live (`livecap bench`'s replay): per frame, how late
    after its arrival it was processed."""
    _, lag_ms = replay_live(_recognizer(model, rows), audio)
    return {
        "lag_ms_median": float(np.median(lag_ms)),
        "lag_ms_p95": float(np.percentile(lag_ms, 95)),
        "lag_ms_last": lag_ms[-1],
    }


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True, help="a saved full-size model")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "int8"], default="int8")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--pad-fraction", type=float, default=0.6)
    parser.add_argument("--rows", type=int, help="rows per pass (default: the engine's choice)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--live", action="store_true", help="also replay at real pace")
    args = parser.parse_args()
    model = load_model(args.folder, "cpu", args.dtype)
    head = model.lm.head = PadBiasedHead(model.lm.head, model.config.pad_token_id)
    audio = synthetic_speech(args.seconds, SAMPLE_RATE, seed=3)
    calibrate(model, head, audio, args.pad_fraction)
    rows = args.rows or speculative_rows("cpu", args.dtype)
    frames = len(audio) // 1920
    with torch.inference_mode():
        transcribe(model, rows, audio[: 5 * 1920])  # warm-up
        single, ahead = [], []
        for _ in range(args.repeats):  # alternate, so a change of load hits both
            seconds, tokens_single, *_ = transcribe(model, 1, audio)
            single.append(seconds * 1000 / frames)
            seconds, tokens, speculated, rejected = transcribe(model, rows, audio)
            ahead.append(seconds * 1000 / frames)
        result = {
            "dtype": args.dtype,
            "threads": torch.get_num_threads(),
            "rows_per_pass": rows,
            "frames": frames,
            "pad_fraction": tokens_single.count(model.config.pad_token_id) / len(tokens_single),
            "single_ms_per_frame": statistics.median(single),
            "speculative_ms_per_frame": statistics.median(ahead),
            "ratio": statistics.median(ahead) / statistics.median(single),
            "rows_stepped_ahead": speculated,
            "rows_rolled_back": rejected,
            # bfloat16 and int8 round a many-row pass differently from one row: near ties in
            # a random model can then flip, and the streams part from there on
            "tokens_same_until_frame": _common_prefix(tokens, tokens_single),
        }
        if args.live:
            result["live_single"] = live(model, 1, audio)
            result["live_speculative"] = live(model, rows, audio)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
