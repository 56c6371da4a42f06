"""Speech2Text: our per-window decode against transformers' generate(), and the live policy.

Full-size configs (s2t-small-librispeech-asr, s2t-medium-mustc-multilingual-st) with random
weights — the cost is that of the real checkpoints. Random weights say nothing useful, so
both implementations are made to produce the same realistic amount of text: ~3 tokens per
second of audio (the rate of real English transcripts in these vocabularies), by setting
min_length = max_length. Both run in the same process, on the same weights and audio, and
must produce the same tokens. The live part runs `ChunkedRecognizer` in real-time order and
reports its real-time factor and the average commit latency (from the end of a commit's
audio to the moment it is delivered, compute included).

Run (2 cores, serialised with the team's other heavy jobs):
    flock /tmp/team/bench.lock .venv/bin/python tests/benchmarks/s2t_vs_transformers.py
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.events import Commit, EndOfTurn  # noqa: E402
from engine.models.speech2text import load_model  # noqa: E402
from engine.recognizer import LoadOptions  # noqa: E402
from engine.streaming.chunked import ChunkedRecognizer  # noqa: E402
from tests.s2t_fixtures import MUSTC_LANGS, speech_like  # noqa: E402

RATE = 16000
TOKENS_PER_SECOND = 3.0
CONFIGS = {
    "small": dict(d_model=256, encoder_attention_heads=4, decoder_attention_heads=4),
    "medium": dict(d_model=512, encoder_attention_heads=8, decoder_attention_heads=8),
}


def build(size: str, folder: Path) -> Path:
    """A full-size random checkpoint in the Hub layout (vocab.json with placeholder pieces)."""
    from transformers import Speech2TextConfig, Speech2TextForConditionalGeneration

    translate = size == "medium"
    config = Speech2TextConfig(
        vocab_size=10000,
        encoder_layers=12,
        decoder_layers=6,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        conv_channels=1024,
        tie_word_embeddings=not translate,
        **CONFIGS[size],
    )
    torch.manual_seed(0)
    model = Speech2TextForConditionalGeneration(config).eval()
    model.generation_config.num_beams = 5
    model.generation_config.max_length = 200
    model.generation_config.early_stopping = True
    model.save_pretrained(folder)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    if translate:
        vocab.update({f"<lang:{lang}>": 4 + i for i, lang in enumerate(MUSTC_LANGS)})
    while len(vocab) < config.vocab_size:
        vocab[f"▁p{len(vocab)}"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    return folder


def text_budget(seconds: float, prefix: int, start: int) -> int:
    """Whole sequence length for a window: start tokens, prefix, then the new text."""
    return start + prefix + max(2, math.ceil(TOKENS_PER_SECOND * seconds) - prefix)


class FixedLengthModel:
    """Our model, made to write exactly `text_budget` tokens per window (random weights)."""

    def __init__(self, model) -> None:
        self.model = model
        self.sample_rate = model.sample_rate
        self.base = model.generation
        self.start = 1 + (model.language_id is not None)

    def decode(self, audio: np.ndarray, prefix=(), draft=()):
        length = text_budget(len(audio) / RATE, len(prefix), self.start)
        # generate() adds the prefix to max_length itself
        self.model.generation = replace(
            self.base, max_length=length - len(prefix), min_length=length
        )
        return self.model.decode(audio, prefix, draft)

    def text(self, ids):
        return self.model.text(ids)


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def compare_windows(size: str, folder: Path, windows: list[float], repeats: int) -> list[dict]:
    from transformers import Speech2TextFeatureExtractor, Speech2TextForConditionalGeneration

    reference = Speech2TextForConditionalGeneration.from_pretrained(folder).eval()
    extractor = Speech2TextFeatureExtractor()
    target = "de" if size == "medium" else None
    ours, _ = load_model(folder, size, LoadOptions(target_lang=target, device="cpu"))
    fixed = FixedLengthModel(ours)
    forced = {"forced_bos_token_id": ours.language_id} if target else {}
    rows = []
    for seconds in windows:
        audio = speech_like(seconds, seed=int(seconds))
        length = text_budget(seconds, 0, fixed.start)

        def theirs(audio=audio, length=length):
            feats = extractor(audio, sampling_rate=RATE, return_tensors="pt")
            with torch.no_grad():
                return reference.generate(
                    feats.input_features,
                    num_beams=5,
                    min_length=length,
                    max_length=length,
                    **forced,
                )[0].tolist()

        ids = fixed.decode(audio).ids
        expected = [i for i in theirs()[fixed.start :] if i not in ours.tokenizer.special_ids]
        ours_s = median_seconds(lambda audio=audio: fixed.decode(audio), repeats)
        theirs_s = median_seconds(theirs, repeats)
        rows.append(
            {
                "window_s": seconds,
                "tokens": length,
                "same_tokens": ids == expected,
                "ours_s": round(ours_s, 4),
                "transformers_s": round(theirs_s, 4),
                "ratio": round(ours_s / theirs_s, 3),
            }
        )
    return rows


def live(size: str, folder: Path, seconds: float) -> dict:
    """Sentences of 3-12 s separated by 0.8 s pauses, fed in 0.1 s frames in stream order."""
    target = "de" if size == "medium" else None
    ours, info = load_model(folder, size, LoadOptions(target_lang=target, device="cpu"))
    recognizer = ChunkedRecognizer(FixedLengthModel(ours), info)
    rng = np.random.default_rng(0)
    parts = []
    while sum(map(len, parts)) < seconds * RATE:
        parts.append(speech_like(float(rng.uniform(3, 12)), seed=len(parts)))
        parts.append(np.zeros(int(0.8 * RATE), np.float32))
    audio = np.concatenate(parts)
    compute, latencies, commits, turns = 0.0, [], 0, 0
    for at in range(0, len(audio), 1600):
        began = time.perf_counter()
        events = recognizer.feed(audio[at : at + 1600])
        spent = time.perf_counter() - began
        compute += spent
        delivered = (at + 1600) / RATE + spent
        for event in events:
            if isinstance(event, Commit):
                commits += 1
                latencies.append(delivered - event.end)
            turns += isinstance(event, EndOfTurn)
    return {
        "audio_s": round(len(audio) / RATE, 1),
        "realtime_factor": round(compute / (len(audio) / RATE), 3),
        "commit_latency_mean_s": round(statistics.fmean(latencies), 3) if latencies else None,
        "commit_latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
        "commits": commits,
        "end_of_turns": turns,
    }


def policy_latency(seconds: float = 600.0) -> dict:
    """The policy's own delay, with a model that is never wrong (tests/test_chunked.py's
    scripted model): from the end of each word's audio to the moment its commit is made."""
    from tests.test_chunked import INFO, ScriptedModel, script

    audio, _ = script(seconds, seed=7)
    ends = {f"w{k}s": end / RATE for k, end, _ in ScriptedModel.words_in(audio)}
    recognizer = ChunkedRecognizer(ScriptedModel(), INFO)
    delays = []
    for at in range(0, len(audio), 1600):
        for event in recognizer.feed(audio[at : at + 1600]):
            if isinstance(event, Commit):
                delays += [(at + 1600) / RATE - ends[word] for word in event.text.split()]
    return {
        "audio_s": round(len(audio) / RATE, 1),
        "word_latency_mean_s": round(statistics.fmean(delays), 3),
        "word_latency_median_s": round(statistics.median(delays), 3),
        "word_latency_p95_s": round(float(np.percentile(delays, 95)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium")
    parser.add_argument("--windows", default="5,10,20", help="window lengths in seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--live-seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    windows = [float(w) for w in args.windows.split(",")]
    result: dict = {"threads": args.threads, "torch": torch.__version__, "sizes": {}}
    result["policy_with_a_perfect_model"] = policy_latency()
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            folder = build(size, Path(tmp) / size)
            rows = compare_windows(size, folder, windows, args.repeats)
            result["sizes"][size] = {
                "windows": rows,
                "median_ratio": statistics.median(r["ratio"] for r in rows),
                "live": live(size, folder, args.live_seconds) if args.live_seconds else None,
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
