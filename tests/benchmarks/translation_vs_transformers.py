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
closes its final translation arrives (provisionals are worked out too, as live; no drafts,
the worst case, since random weights would make every draft match). Beside it runs a
caption engine: with `--caption-model FOLDER` a real Kyutai model (for example the
full-size random one `kyutai_vs_transformers.py --keep FOLDER` saves) stepping Mimi and its
LM one 80 ms frame at a time, back to back where it is slower than real time; otherwise a
stand-in, every 80 ms a frame of one-row int8 products over 100 MB of weights,
bandwidth-bound like a streaming LM step. Its mean frame time alone (10 s before the replay)
against beside the translator is the cost of translation to the captions. Each of
LIVE_SETUPS (`--live-setups`) is replayed in turn: engine.session's follower before finals
could preempt provisionals ("plain": follow() sees only the events queued when it begins),
the follower as it is, handing CaptionTranslator the events that arrive meanwhile
("incoming"), and that with the translation thread on 1 torch thread or at nice 10.

Run (2 cores):
    .venv/bin/python tests/benchmarks/translation_vs_transformers.py [--m2m100] [--repeats N]
        [--live S [--live-dtype int8] [--live-setups plain,incoming,...]
         [--caption-model FOLDER [--caption-dtype int8]]]
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
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine import openmp  # noqa: E402

openmp.configure()  # as main.py, before torch loads

import torch  # noqa: E402

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
            "where_ours_goes": {"float32": stages(translator, ids), "int8": stages(int8, ids)},
        }


def stages(translator, ids: list[int], repeats: int = 5) -> dict:
    """Where our time for one sentence goes: the encoder, the cross-attention keys and values,
    a decoder step without and with its output layer (each a median), the rest (search,
    Python, small ops); the weight bytes a greedy step reads and the rate that implies."""
    from engine.models import bart, kernels

    model, decoder = translator.model, translator.model.decoder
    source = torch.tensor([ids])

    def steps(head: bool) -> None:  # as the search steps them (in one call where it can)
        state = bart.CachedDecoderState(translator.decoder, cross, 1)
        for token in range(TARGET_LENGTH - 1):
            translator.decoder.step(torch.tensor([[7 + token]]), state.caches, state.cross, head)

    with torch.inference_mode():
        memory = model.encode(source)
        cross = decoder.cross_kv(memory)
        runs = {
            "encoder": lambda: model.encode(source),
            "cross": lambda: decoder.cross_kv(memory),
            "body": lambda: steps(False),
            "step": lambda: steps(True),
            "total": lambda: translator.translate("", "en"),
        }
        times = {name: [] for name in runs}
        for _ in range(repeats):  # in turn, so that each stage sees the same load
            for name, run in runs.items():
                began = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - began)
    encoder, cross_ms, body, step, total = (statistics.median(t) * 1000 for t in times.values())
    body, step = body / (TARGET_LENGTH - 1), step / (TARGET_LENGTH - 1)
    once = {id(layer.cross_attn.kv) for layer in decoder.layers}  # the memory's, per sentence
    forms = (kernels.RowLinear, kernels.Int8Linear, kernels.PanelsLinear)
    matrices = [m for m in decoder.layers.modules() if isinstance(m, forms) and id(m) not in once]
    body_bytes = sum(weight_bytes(m) for m in matrices)
    head = decoder.lm_head
    int8_head = isinstance(head, kernels.ScreenedHead | kernels.PackedInt8Linear)
    head_bytes = decoder.embed_tokens.weight.numel() if int8_head else weight_bytes(head)
    generated = len(translator.translate("", "en").ids)
    return {
        "total_ms": round(total, 1),
        "encoder_ms": round(encoder, 1),
        "cross_kv_ms": round(cross_ms, 1),
        "step_without_head_ms": round(body, 2),
        "head_ms": round(step - body, 2),
        "steps": generated,
        "rest_ms": round(total - encoder - cross_ms - generated * step, 1),
        "step_weight_mb": round((body_bytes + head_bytes) / 1e6, 1),
        "step_read_gb_s": round((body_bytes + head_bytes) / step / 1e6, 1),
    }


def weight_bytes(linear) -> int:
    """What a step reads of one matrix: its weights, or its panels' codes and scales."""
    from engine.models import kernels

    if isinstance(linear, kernels.PanelsLinear):
        return linear.held.values.nbytes + linear.held.scales.nbytes
    return linear.weight.nbytes


LIVE_SETUPS = {  # name: (follower, the translation thread's torch threads, its nice)
    "plain": ("plain", None, 0),  # follow(batch) alone, as before
    "incoming": ("incoming", None, 0),  # engine.session's: finals preempt provisionals
    "incoming-1-thread": ("incoming", 1, 0),
    "incoming-nice": ("incoming", None, 10),
}
CAPTION_FRAME_S = 0.08  # Kyutai's frame: 80 ms of audio
CAPTION_FRAME_MATRICES = 24  # int8 2048 x 2048 each: 100 MB read per frame


def stand_in_frame():
    """One frame of a stand-in caption engine: one-row int8 products over 100 MB of weights
    (bandwidth-bound like a streaming LM step)."""
    from engine.models.kernels import int8_weight_mm, quantize_rows

    generator = torch.Generator().manual_seed(0)
    weights = []
    for _ in range(CAPTION_FRAME_MATRICES):
        codes, scales = quantize_rows(torch.randn(2048, 2048, generator=generator))
        weights.append((codes, scales.to(torch.bfloat16)))
    x = torch.randn(1, 2048).to(torch.bfloat16)

    def frame() -> None:
        for codes, scales in weights:
            int8_weight_mm(x, codes, scales)

    return frame


def kyutai_frame(folder: Path, dtype: str):
    """One frame of a real Kyutai engine: Mimi encodes 80 ms of noise, the LM steps once."""
    import numpy as np

    from engine.models.kyutai.weights import load_model

    model = load_model(folder, "cpu", dtype)
    mimi_state, lm_state = model.mimi.new_state(), model.lm.new_state()
    token, codes = model.lm.start_inputs()
    noise = np.random.default_rng(0).standard_normal(1920).astype(np.float32) * 0.1
    audio = torch.from_numpy(noise)
    with torch.inference_mode():
        model.lm.step(token, codes, lm_state)

    def frame() -> None:
        model.lm.step(token, model.mimi.encode(audio, mimi_state)[0], lm_state)

    return frame


def caption_engine(stop, frames: list[float], frame) -> None:
    """A caption engine: a frame every 80 ms (at once when behind), its time recorded."""
    due = time.perf_counter()
    with torch.inference_mode():
        while not stop.is_set():
            began = time.perf_counter()
            frame()
            frames.append(time.perf_counter() - began)
            due = max(due + CAPTION_FRAME_S, time.perf_counter())
            time.sleep(max(0.0, due - time.perf_counter()))


def live_follower(setup: str, translator, on_event):
    """The translation thread for one of LIVE_SETUPS."""
    from engine.session import _Follower

    kind, threads, nice = LIVE_SETUPS[setup]

    class Follower(_Follower):
        def _run(self) -> None:
            if threads is not None:
                torch.set_num_threads(threads)
            if nice:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
            if kind == "incoming":
                return super()._run()  # engine.session's follower as it is
            # as it was before: follow() saw only the events queued when it began
            self._ended = False
            while not self._ended:
                self._emit(self.translator.follow(self._take([self._queue.get()])))
            self._emit(self.translator.flush())

    return Follower(translator, on_event)


def live(seconds: float, dtype: str, setups: list[str], frame, baseline_s: float = 10.0) -> dict:
    """The translation thread behind captions replayed in real time, beside a caption
    engine stepping `frame`: lag of each final behind its caption segment, and the engine's
    frame time alone (before the replay) and with the translator beside it."""
    import numpy as np

    from engine.events import Commit, EndOfTurn
    from engine.models.contract import ModelInfo
    from engine.streaming.text_translator import CaptionTranslator

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build("opus-mt-en-de", folder)
        translator = ours("opus-mt-en-de", folder, [0], None, dtype)
    tokenizer = translator.tokenizer
    base = translator.generation
    plain_translate = translator.translate

    def translate(text: str, source: str, draft=(), stop=None):
        words = len(text.split())  # ~1.3 tokens a word in, ~1.5 out
        tokenizer.ids = [7 + i for i in range(max(1, round(1.3 * words)))] + [0]
        length = 1 + max(2, round(1.5 * words))
        translator.generation = replace(base, min_length=length, max_length=length)
        # no draft: random weights repeat one token, so every draft would match (a real
        # translation's seldom does): the replay takes the worst case, every step searched
        return plain_translate(text, source, (), stop)

    translator.translate = translate
    caption = ModelInfo("captions", "double", ("en",), "en", 0.0, "cpu", "float32")
    results = {}
    for setup in setups:
        stop, frames = threading.Event(), []
        engine = threading.Thread(target=caption_engine, args=(stop, frames, frame), daemon=True)
        engine.start()
        time.sleep(baseline_s)
        alone = len(frames)
        lags, began = [], time.perf_counter()

        def on_event(event, began=began, lags=lags) -> None:  # caption time is wall time
            if isinstance(event, Commit):
                lags.append(time.perf_counter() - began - event.end)

        follower = live_follower(setup, CaptionTranslator(translator, caption), on_event)
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
        stop.set()
        engine.join()
        beside = frames[alone:]
        frame_alone, frame_beside = statistics.mean(frames[:alone]), statistics.mean(beside)
        results[setup] = {
            "caption_seconds": round(at, 1),
            "finals": len(lags),
            "lag_median_s": round(statistics.median(lags), 3),
            "lag_p95_s": round(float(np.percentile(lags, 95)), 3),
            "caption_frame_ms_alone": round(frame_alone * 1000, 1),
            "caption_frame_ms_beside_translator": round(frame_beside * 1000, 1),
            "caption_frame_ms_median_alone": round(statistics.median(frames[:alone]) * 1000, 1),
            "caption_frame_ms_median_beside": round(statistics.median(beside) * 1000, 1),
            "caption_cost": round(frame_beside / frame_alone - 1, 3),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--m2m100", action="store_true", help="also facebook/m2m100_418M")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--live", type=float, default=0.0, metavar="S")
    parser.add_argument("--live-dtype", choices=("float32", "int8"), default="float32")
    parser.add_argument(
        "--live-setups", default=",".join(LIVE_SETUPS), help="of " + ", ".join(LIVE_SETUPS)
    )
    parser.add_argument("--caption-model", metavar="FOLDER", help="a Kyutai model folder")
    parser.add_argument("--caption-dtype", default="int8")
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
        setups = args.live_setups.split(",")
        if args.caption_model:
            frame = kyutai_frame(Path(args.caption_model), args.caption_dtype)
            engine = {"caption_engine": f"Kyutai {args.caption_model} {args.caption_dtype}"}
        else:
            frame, engine = stand_in_frame(), {"caption_engine": "stand-in"}
        runs = live(args.live, args.live_dtype, setups, frame)
        result["live"] = {"dtype": args.live_dtype, **engine, **runs}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
