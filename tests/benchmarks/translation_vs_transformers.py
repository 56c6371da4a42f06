"""Text translation: one 20-word sentence, greedy, ours against transformers' generate().

Full-size configs (Helsinki-NLP/opus-mt-en-de; facebook/m2m100_418M with --m2m100) with
random weights: the cost is that of the real checkpoints. Random weights say nothing useful,
so both are made to write the same realistic amount of text: a 20-word English sentence is
about 27 encoder tokens with its end token in these vocabularies, and its German translation
about 31 tokens, so both run with min_length = max_length. Both run in the same process on
the same weights and ids, alternately (other jobs share the cores: the ratio of the same
run is what counts), and must produce the same tokens. Times are medians; ours includes the
encoder, as theirs does.

`--live S` also replays S seconds of captions as a streaming caption model commits them (a
word every 0.3 s, sentences of 6-20 words, a 0.8 s pause after some) through the live
session's translation thread, in real time, and reports how long after a caption segment
closes its final translation arrives (provisionals are worked out too, as live).

Run (2 cores):
    .venv/bin/python tests/benchmarks/translation_vs_transformers.py [--m2m100] [--repeats N]
        [--live S [--live-dtype int8]]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as main.py: idle threads must sleep

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.models import marian  # noqa: E402
from engine.models.contract import LoadOptions  # noqa: E402
from engine.models.text_encoder import build_network  # noqa: E402
from engine.models.text_tokenizer import M2M100_CODES  # noqa: E402
from engine.models.translator import load_text_model  # noqa: E402

M2M100_VOCAB = 128004  # facebook/m2m100_418M's vocab.json: its language tokens follow
SOURCE_TOKENS = 27  # a 20-word sentence and its end token
TARGET_LENGTH = 32  # the start token and ~31 of German
FULL_SIZE = {
    "opus-mt-en-de": dict(
        vocab_size=58101, d_model=512, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048,
        decoder_ffn_dim=2048, max_position_embeddings=512, activation_function="swish",
        scale_embedding=True, pad_token_id=58100, decoder_start_token_id=58100,
        eos_token_id=0, forced_eos_token_id=0,
    ),
    "m2m100_418M": dict(
        vocab_size=128112, d_model=1024, encoder_layers=12, decoder_layers=12,
        encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
        decoder_ffn_dim=4096, max_position_embeddings=1024,
    ),
}  # fmt: skip


class FixedIds:
    """A tokenizer stand-in giving the benchmark's ids (random weights: text means nothing)."""

    sources, targets = ("en",), ("de",)

    def __init__(self, ids: list[int], language: int | None) -> None:
        self.ids, self.language = ids, language

    def encode(self, text: str, source: str) -> list[int]:
        return self.ids

    def target_token(self, target: str) -> int | None:
        return self.language

    def decode(self, ids) -> str:
        return " ".join(map(str, ids))


def build(name: str, folder: Path):
    from transformers import (
        M2M100Config,
        M2M100ForConditionalGeneration,
        MarianConfig,
        MarianMTModel,
    )

    kinds = {
        "opus-mt-en-de": (MarianConfig, MarianMTModel),
        "m2m100_418M": (M2M100Config, M2M100ForConditionalGeneration),
    }
    config_class, model_class = kinds[name]
    torch.manual_seed(0)
    model = model_class(config_class(**FULL_SIZE[name])).eval()
    model.save_pretrained(folder)
    return model


def ours(name: str, folder: Path, ids: list[int], language: int | None, dtype: str = "float32"):
    if name == "opus-mt-en-de":
        build_model = marian.build_model
    else:

        def build_model(values: dict, path: Path):
            return build_network(
                values, path, True, "relu", True, sinusoidal_positions=True, pad_token_id=1
            )

    options = LoadOptions(device="cpu", dtype=dtype, beams=1)
    translator = load_text_model(
        folder, name, options, FixedIds(ids, language), build_model, name.split("_")[0]
    )
    translator.generation = replace(
        translator.generation, min_length=TARGET_LENGTH, max_length=TARGET_LENGTH
    )
    return translator


def cpu() -> dict:
    info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    simd = [f for f in flags if f.startswith(("avx", "amx", "fma"))]
    return {"model": fields.get("Model name", platform.processor()).strip(), "simd": simd}


def compare(name: str, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reference = build(name, folder)
        generator = torch.Generator().manual_seed(1)
        ids = torch.randint(10, 50000, (SOURCE_TOKENS - 1,), generator=generator).tolist()
        ids.append(reference.config.eos_token_id)
        language = None
        if name == "m2m100_418M":  # [__en__] text </s> in, __de__ forced first
            language = M2M100_VOCAB + M2M100_CODES.index("de")
            ids[0] = M2M100_VOCAB + M2M100_CODES.index("en")
        translator = ours(name, folder, ids, language)
        int8 = ours(name, folder, ids, language, "int8")  # ours only: weights quantised
        forced = {"forced_bos_token_id": language} if language is not None else {}

        def theirs():
            with torch.inference_mode():
                return reference.generate(
                    torch.tensor([ids]),
                    num_beams=1,
                    do_sample=False,
                    min_length=TARGET_LENGTH,
                    max_length=TARGET_LENGTH,
                    **forced,
                )[0].tolist()

        expected = theirs()[1:]
        got = list(translator.translate("", "en").ids)
        ours_times, theirs_times, int8_times = [], [], []
        for _ in range(repeats):
            for run, times in ((lambda: translator.translate("", "en"), ours_times),
                               (theirs, theirs_times),
                               (lambda: int8.translate("", "en"), int8_times)):  # fmt: skip
                began = time.perf_counter()
                run()
                times.append(time.perf_counter() - began)
        ours_s, theirs_s = statistics.median(ours_times), statistics.median(theirs_times)
        return {
            "model": name,
            "source_tokens": len(ids),
            "generated_tokens": len(got),
            "same_tokens": got == expected,
            "ours_ms": round(ours_s * 1000, 1),
            "transformers_ms": round(theirs_s * 1000, 1),
            "ratio": round(ours_s / theirs_s, 3),
            "ours_int8_ms": round(statistics.median(int8_times) * 1000, 1),
            "int8_same_tokens": list(int8.translate("", "en").ids) == expected,
            "ours_ms_each": [round(t * 1000) for t in ours_times],
            "transformers_ms_each": [round(t * 1000) for t in theirs_times],
        }


def live(seconds: float, dtype: str) -> dict:
    """The translation thread behind captions replayed in real time: lag of each final."""
    import numpy as np

    from engine.events import Commit, EndOfTurn
    from engine.models.contract import ModelInfo
    from engine.session import _Follower
    from engine.streaming.text_translator import CaptionTranslator

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build("opus-mt-en-de", folder)
        translator = ours("opus-mt-en-de", folder, [0], None, dtype)
        tokenizer = translator.tokenizer
        base = translator.generation
        plain_translate = translator.translate

        def translate(text: str, source: str, draft=()):
            words = len(text.split())  # ~1.3 tokens a word in, ~1.5 out
            tokenizer.ids = [7 + i for i in range(max(1, round(1.3 * words)))] + [0]
            length = 1 + max(2, round(1.5 * words))
            translator.generation = replace(base, min_length=length, max_length=length)
            return plain_translate(text, source, draft)

        translator.translate = translate
        caption = ModelInfo("captions", "double", ("en",), "en", 0.0, "cpu", "float32")
        lags, began = [], time.perf_counter()

        def on_event(event) -> None:  # caption time is wall time in this replay
            if isinstance(event, Commit):
                lags.append(time.perf_counter() - began - event.end)

        follower = _Follower(CaptionTranslator(translator, caption), on_event)
        follower.start()
        rng, at, word = np.random.default_rng(0), 0.0, 0
        while at < seconds:
            length = int(rng.integers(6, 21))
            for n in range(length):
                time.sleep(max(0.0, at + 0.3 - (time.perf_counter() - began)))
                text = f"w{word}" + ("." if n == length - 1 else "")
                at, word = at + 0.3, word + 1
                follower.put(Commit(text, at - 0.3, at))
            if rng.random() < 0.5:
                at += 0.8
                time.sleep(max(0.0, at - (time.perf_counter() - began)))
                follower.put(EndOfTurn(at))
        follower.finish()
        return {
            "caption_seconds": round(at, 1),
            "finals": len(lags),
            "lag_median_s": round(statistics.median(lags), 3),
            "lag_p95_s": round(float(np.percentile(lags, 95)), 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--m2m100", action="store_true", help="also facebook/m2m100_418M")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--live", type=float, default=0.0, metavar="S")
    parser.add_argument("--live-dtype", choices=("float32", "int8"), default="float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = ["opus-mt-en-de"] + (["m2m100_418M"] if args.m2m100 else [])
    result = {
        "cpu": cpu(),
        "threads": args.threads,
        "torch": torch.__version__,
        "runs": [compare(name, args.repeats) for name in names],
    }
    if args.live:
        result["live"] = {"dtype": args.live_dtype, **live(args.live, args.live_dtype)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
