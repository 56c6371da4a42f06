"""Benchmark: our speech encoder-decoder vs transformers' generate() on full-size weights.

The shape of facebook/wav2vec2-xls-r-300m-en-to-15 (XLS-R 300M encoder with adapter, mBART-50
decoder, 250k vocabulary) with random weights, saved once in the Hub layout. In one run:
  1. one window decode, ours vs SpeechEncoderDecoderModel.generate() on the same weights
     (greedy and beam search, German forced first), interleaved, medians and the ratio, in
     float32 against float32, bfloat16 against bfloat16 and int8 against bfloat16;
     random weights never say end-of-sentence, so both run to `--tokens` tokens;
  2. the live real-time factor: the recognizer `live` builds (LocalAgreement, its step) over
     a stream of speech-like noise without pauses, compute seconds per audio second at its
     fixed step and, replayed at the audio's pace, how far behind its captions run, in
     float32, bfloat16 and int8 (weight-only int8 decoder, bfloat16 encoder where the CPU has
     native bfloat16), each decode answering what speech would (words that agree between
     windows, see `AgreeingSpeech`) at the real model's cost, plus the parts it is made of:
     encoder seconds per window and decoder milliseconds per token;
  3. bfloat16's and int8's deviation from float32 (encoder states, first-step logits, greedy
     token agreement).

Full-size: run it alone, `flock /tmp/team/bench.lock .venv/bin/python
tests/benchmarks/sed_vs_transformers.py` (≈ 7 GB of memory, several minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.bench import replay_live  # noqa: E402
from engine.events import Commit  # noqa: E402
from engine.models.generation import Screened  # noqa: E402
from engine.models.speech_encoder_decoder import load_model  # noqa: E402
from engine.models.text_tokenizer import MBART50_CODES  # noqa: E402
from engine.recognizer import LoadOptions  # noqa: E402
from engine.streaming.chunked import load_speech_encoder_decoder  # noqa: E402

NAME = "facebook/wav2vec2-xls-r-300m-en-to-15"  # its language table; weights are random
GERMAN = 250003
RATE = 16000


def build_full_size(folder: Path) -> Path:
    """Random-weight xls-r-300m + mBART-50 in the Hub layout (built once, then reused)."""
    if (folder / "model.safetensors").exists():
        return folder
    from transformers import (
        MBartConfig,
        SpeechEncoderDecoderConfig,
        SpeechEncoderDecoderModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
    )

    encoder = Wav2Vec2Config(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        add_adapter=True,
        adapter_kernel_size=3,
        adapter_stride=2,
        num_adapter_layers=3,
        output_hidden_size=1024,
        mask_time_prob=0.0,
    )
    vocab = 250000 + 1 + len(MBART50_CODES) + 1  # pieces, <s>/<pad>/</s>/<unk>, codes, <mask>
    decoder = MBartConfig(
        vocab_size=vocab,
        d_model=1024,
        encoder_layers=12,
        decoder_layers=12,
        decoder_attention_heads=16,
        decoder_ffn_dim=4096,
        max_position_embeddings=1024,
        scale_embedding=True,
        is_decoder=True,
        add_cross_attention=True,
    )
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = 2, 2, 1
    model = SpeechEncoderDecoderModel(config=config).eval()
    model.generation_config.update(decoder_start_token_id=2, eos_token_id=2, pad_token_id=1)
    model.save_pretrained(folder, safe_serialization=True)
    _write_tokenizer(folder, vocab)
    Wav2Vec2FeatureExtractor(
        sampling_rate=RATE, do_normalize=True, return_attention_mask=True
    ).save_pretrained(folder)
    return folder


def _write_tokenizer(folder: Path, vocab: int) -> None:
    """A tokenizer.json with the mBART-50 id layout (placeholder pieces: text is not judged)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    pieces = [(t, 0.0) for t in specials] + [(f"▁p{i}", -1.0) for i in range(249997)]
    pieces += [(code, 0.0) for code in MBART50_CODES] + [("<mask>", 0.0)]
    assert len(pieces) == vocab
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=3))
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True) for t in specials + MBART50_CODES + ["<mask>"]]
    )
    tokenizer.save(str(folder / "tokenizer.json"))


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise with a syllable-rate loudness wobble and no pauses (so no turn ends early)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)
    return (0.2 * envelope * rng.standard_normal(t.size)).astype(np.float32)


def interleaved(runs: dict, repeats: int) -> dict[str, tuple[float, object]]:
    """Median seconds and last result of each callable, run in turn so that load from other
    processes on a shared machine falls on all of them alike; one untimed warm-up each."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    results: dict[str, object] = {name: fn() for name, fn in runs.items()}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in runs}


# (ours, transformers') precision for the window decode: same weights; int8 is set against
# transformers' fastest CPU mode, bfloat16, as no int8 generate() exists to compare with
PAIRINGS = (("float32", "float32"), ("bfloat16", "bfloat16"), ("int8", "bfloat16"))


def window_decode(
    folder: Path, audio: np.ndarray, tokens: int, beams: int, repeats: int, pairing: tuple
):
    from transformers import AutoFeatureExtractor, SpeechEncoderDecoderModel

    dtype, reference_dtype = pairing
    options = LoadOptions(target_lang="de", device="cpu", dtype=dtype, beams=beams)
    ours, _ = load_model(folder, NAME, options)
    ours.generation = replace(ours.generation, max_length=tokens + 2)
    reference = SpeechEncoderDecoderModel.from_pretrained(
        folder, dtype=getattr(torch, reference_dtype)
    ).eval()
    extractor = AutoFeatureExtractor.from_pretrained(folder)

    def run_reference() -> list[int]:
        with torch.inference_mode():
            inputs = extractor(audio, sampling_rate=RATE, return_tensors="pt")
            out = reference.generate(
                inputs.input_values.to(reference.dtype),
                attention_mask=inputs.attention_mask,
                forced_bos_token_id=GERMAN,
                max_length=tokens + 2,
                num_beams=beams,
            )
        return out[0].tolist()

    timings = interleaved(
        {"ours": lambda: ours.generate_ids(audio), "reference": run_reference}, repeats
    )
    (ours_s, ours_ids), (ref_s, ref_ids) = timings["ours"], timings["reference"]
    same = [a == b for a, b in zip(ours_ids, ref_ids, strict=False)]
    return {
        "dtype": dtype,
        "transformers_dtype": reference_dtype,
        "beams": beams,
        "window_s": len(audio) / RATE,
        "generated_tokens": len(ours_ids) - 1,
        "ours_s": round(ours_s, 3),
        "transformers_s": round(ref_s, 3),
        "ratio": round(ours_s / ref_s, 3),
        "same_tokens": ours_ids == ref_ids,
        "leading_tokens_agreeing": same.index(False) if False in same else len(same),
    }


class AgreeingSpeech:
    """The live benchmark's stand-in for what a real model says about real speech. Each
    decode runs the real model on the real window with the real forced prefix and draft, and
    generates as many new tokens as the scripted answer has (so it costs what a real decode
    costs), but returns the script: one word every 1/`rate` s of stream time, the same word for
    the same moment in every window, and a different guess each time for a word less than
    `settle` s before the window's end (still being spoken). So consecutive decodes agree,
    the policy commits and trims its window as on speech; random weights never agree with
    themselves, and would keep every window growing to the 20 s cap.
    Pessimistic in one way: the real model never produces the draft, so none is accepted."""

    def __init__(self, model, recognizer, rate: float = 3.5, settle: float = 0.3) -> None:
        self.model, self.recognizer = model, recognizer
        self.rate, self.settle = rate, settle
        self.sample_rate = model.sample_rate
        self.decodes = 0

    @staticmethod
    def word(k: int) -> int:
        return 4 + k % 200_000  # "▁p…" pieces: every token is a word

    def decode(self, audio: np.ndarray, prefix=(), draft=()):
        from engine.models.contract import Hypothesis

        self.decodes += 1
        start = self.recognizer.window.start / RATE  # stream seconds of audio[0]
        end = start + len(audio) / RATE
        first = math.ceil(start * self.rate)  # the first word wholly inside the window
        if prefix and prefix[-1] - 4 < 100_000:  # the last committed word (not a guess)
            first = max(first, prefix[-1] - 4 + 1)
        last = math.floor(end * self.rate)  # words first..last-1 end inside the window
        new = []
        for k in range(first, last):
            unsettled = (k + 1) / self.rate > end - self.settle
            new.append(self.word(k + 100_000 + self.decodes) if unsettled else self.word(k))
        length = 2 + len(prefix) + len(new)
        self.model.generation = replace(
            self.model.generation, max_length=length, min_length=length, num_beams=1
        )
        self.model.decode(audio, prefix, draft)  # the cost; its random tokens are dropped
        ids = [*prefix, *new]
        times = [min(end, ((i - 4) + 1) / self.rate) - start for i in prefix]
        times += [(k + 1) / self.rate - start for k in range(first, last)]
        return Hypothesis(ids=ids, times=times)

    def text(self, ids) -> str:
        return self.model.text(ids)


def components(model, audio: np.ndarray, steps: int = 20) -> dict:
    """Encoder seconds per window, decoder milliseconds per greedy token (one row)."""
    from engine.models.bart import CachedDecoderState

    with torch.inference_mode():
        features = model.features(audio)
        model.model.encode(features)  # warm-up
        start = time.perf_counter()
        memory = model.model.encode(features)
        encoder_s = time.perf_counter() - start
        state = CachedDecoderState(model.model.decoder, model.model.decoder.cross_kv(memory), 1)
        state.step(torch.tensor([[2, GERMAN]]))
        token = torch.tensor([[GERMAN]])
        start = time.perf_counter()
        for _ in range(steps):
            token = torch.tensor([[best_token(state.step(token))]])
        step_ms = (time.perf_counter() - start) / steps * 1000
        drafted_ms = drafted_ms_per_token(model, memory, steps)
    return {
        "encoder_s_per_window": round(encoder_s, 3),
        "decoder_ms_per_token": round(step_ms, 1),
        "decoder_ms_per_token_right_draft": round(drafted_ms, 1),
    }


def best_token(logits: torch.Tensor | Screened) -> int:
    """Greedy's choice from a one-row step's last position."""
    if isinstance(logits, Screened):
        return logits.best(-1)
    return int(logits[0, -1].argmax())


def drafted_ms_per_token(model, memory: torch.Tensor, steps: int) -> float:
    """Greedy decoding of a window whose text the previous decode already had (the draft
    live decodes pass): the best case, as random weights never say the same thing twice."""
    cross = model.model.decoder.cross_kv(memory)
    saved = model.generation
    model.generation = replace(saved, max_length=steps + 2, min_length=steps + 2, num_beams=1)
    text = model._search(cross, ())[2:]  # after the start token and the language
    start = time.perf_counter()
    assert model._search(cross, (), text)[2:] == text
    seconds = time.perf_counter() - start
    model.generation = saved
    return seconds / steps * 1000


def live_rtf(folder: Path, dtype: str, seconds: float, window: np.ndarray) -> dict:
    """The live policy over a stream without pauses, with speech-like agreement between
    decodes (`AgreeingSpeech`): fed in 0.5 s chunks with no regard for time, compute seconds
    per audio second at the fixed 2 s step; then replayed as the audio arrives
    (`engine.bench.replay_live`: each feed takes what came in during the last one), how late
    captions run and how long the steps become."""
    recognizer = load_speech_encoder_decoder(
        folder, NAME, LoadOptions(target_lang="de", dtype=dtype)
    )
    model = recognizer.model
    parts = components(model, window)
    audio = speechlike(seconds, seed=1)
    recognizer.model = AgreeingSpeech(model, recognizer)
    chunk = RATE // 2
    busy, words = [], 0
    for at in range(0, len(audio), chunk):
        start = time.perf_counter()
        events = recognizer.feed(audio[at : at + chunk])
        words += sum(len(e.words) for e in events if isinstance(e, Commit))
        busy.append(time.perf_counter() - start)
    recognizer.reset()
    recognizer.model = replayed = AgreeingSpeech(model, recognizer)
    frame_ms, lag_ms = replay_live(recognizer, audio)
    return {
        "dtype": dtype,
        "stream_s": seconds,
        "step_s": recognizer.step / RATE,
        "realtime_factor": round(sum(busy) / seconds, 3),
        "worst_chunk_s": round(max(busy), 3),
        "words_committed": words,
        "replayed_realtime_factor": round(sum(frame_ms) / 1000 / seconds, 3),
        "replayed_seconds_per_decode": round(seconds / max(1, replayed.decodes), 2),
        "replayed_lag_s_median": round(float(np.median(lag_ms)) / 1000, 2),
        "replayed_lag_s_p95": round(float(np.percentile(lag_ms, 95)) / 1000, 2),
        "replayed_lag_s_last": round(lag_ms[-1] / 1000, 2),
        **parts,
    }


def deviation(folder: Path, audio: np.ndarray, tokens: int, dtype: str) -> dict:
    """`dtype`'s departure from float32 on one window."""
    from engine.models.bart import CachedDecoderState

    results = []
    for kind in ("float32", dtype):
        model, _ = load_model(folder, NAME, LoadOptions(target_lang="de", dtype=kind))
        model.generation = replace(model.generation, max_length=tokens + 2, num_beams=1)
        with torch.inference_mode():
            memory = model.model.encode(model.features(audio))
            cross = model.model.decoder.cross_kv(memory)
            state = CachedDecoderState(model.model.decoder, cross, 1)
            logits = state.step(torch.tensor([[2, GERMAN]]))
            if isinstance(logits, Screened):  # float32 on a CPU: every logit, exactly
                logits = logits.exact(-1, torch.arange(logits.approx.shape[-1]))
        results.append((memory.float(), logits.float(), model.generate_ids(audio)))
        del model
    (m32, l32, ids32), (m, logits, ids) = results
    same = [a == b for a, b in zip(ids32, ids, strict=True)]
    return {
        "dtype": dtype,
        "encoder_rel_error": round(((m - m32).norm() / m32.norm()).item(), 4),
        "logits_max_abs_diff": round((logits - l32).abs().max().item(), 4),
        "logits_std": round(l32.std().item(), 4),
        "same_first_token": bool(logits.argmax() == l32.argmax()),
        "greedy_token_agreement": round(sum(same) / len(same), 3),
        "first_different_token": same.index(False) if False in same else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--folder", type=Path, default=Path("/tmp/livecap-bench/xls-r-300m-en-to-15")
    )
    parser.add_argument("--window", type=float, default=10.0, help="window seconds")
    parser.add_argument("--tokens", type=int, default=40, help="generated tokens per window")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beams", default="1,5", help="beam widths of the window part")
    parser.add_argument("--live-seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--parts", default="window,live,deviation", help="which of window, live, deviation"
    )
    parser.add_argument(
        "--dtypes", default="float32,bfloat16,int8", help="ours, in the window and live parts"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    torch.set_num_threads(args.threads)
    folder = build_full_size(args.folder)
    audio = speechlike(args.window)
    report: dict = {"threads": args.threads, "window_decode": [], "live": []}
    dtypes = args.dtypes.split(",")
    for pairing in [p for p in PAIRINGS if p[0] in dtypes] if "window" in parts else ():
        for beams in map(int, args.beams.split(",")):
            row = window_decode(folder, audio, args.tokens, beams, args.repeats, pairing)
            report["window_decode"].append(row)
            print(json.dumps(row), flush=True)
    for dtype in dtypes if "live" in parts else ():
        row = live_rtf(folder, dtype, args.live_seconds, audio)
        report["live"].append(row)
        print(json.dumps(row), flush=True)
    if "deviation" in parts:
        kinds = ("bfloat16", "int8")
        report["deviation"] = [deviation(folder, audio, args.tokens, d) for d in kinds]
        print(json.dumps(report["deviation"]), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
