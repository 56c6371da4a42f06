"""Per-frame cost of our Kyutai STT engine against transformers, full size, random weights.

    flock /tmp/team/bench.lock .venv/bin/python tests/benchmarks/kyutai_vs_transformers.py \
        --config 1b --dtype int8

Builds the 1B or 2.6B shape with random weights (nothing is downloaded), saves it in the Hub
layout, times transformers' generate() per step on it, then (in a fresh process, so its peak
RSS is its own) loads the same files with our loader and times Mimi + LM per 80 ms frame.
Prints one JSON object: medians, p95s, the ratio ours / transformers, peak RSS against the
loaded weights' size. For int8 it also reports the deviation from our float32 on the same
weights: final hidden-state cosine and logit top-1 agreement, teacher-forced on one stream.
transformers has no int8 path here, so int8 is compared with transformers in bfloat16.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine import openmp  # noqa: E402

openmp.configure()  # as main.py, before torch loads

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.models.machine_cache import cpu_description  # noqa: E402
from tests.kyutai_fixtures import FULL_SIZE, held_bytes, randomize_codebooks  # noqa: E402

FRAME = 1920


def build_reference(config_name: str, dtype: torch.dtype, folder: Path):
    from transformers import KyutaiSpeechToTextConfig, KyutaiSpeechToTextForConditionalGeneration

    shape = FULL_SIZE[config_name]
    config = KyutaiSpeechToTextConfig(
        hidden_size=2048,
        ffn_dim=11264,
        max_position_embeddings=shape["sliding_window"],
        bos_token_id=shape["vocab_size"] - 1,
        audio_pad_token_id=shape["vocab_size"] + 32 * 2049,
        **shape,
    )
    torch.set_default_dtype(dtype)
    model = KyutaiSpeechToTextForConditionalGeneration(config).eval()
    torch.set_default_dtype(torch.float32)
    model.codec_model.float()  # transformers keeps the codec in float32
    randomize_codebooks(model, 0)  # random init leaves them zero: every code 0, every tie
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.0})
    )
    return model


def load_reference(folder: Path, dtype: torch.dtype):
    from transformers import KyutaiSpeechToTextForConditionalGeneration

    return KyutaiSpeechToTextForConditionalGeneration.from_pretrained(folder, dtype=dtype).eval()


def time_reference(model, audio: np.ndarray) -> list[float]:
    """Per-step wall time of generate() (its own codec and cache handling included)."""
    from transformers import StoppingCriteria

    stamps: list[float] = []

    class Stamp(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            stamps.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    values = torch.from_numpy(audio).view(1, 1, -1)
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(input_values=values, stopping_criteria=[Stamp()], do_sample=False)
    steps = np.diff([start, *stamps]) * 1000
    return steps[10:].tolist()  # the first steps include the whole-audio codec pass


def time_reference_codec(model, audio: np.ndarray) -> float:
    """generate() encodes the whole audio with Mimi once, inside its first step (excluded
    from the step times above): that pass per frame, so both sides count the codec."""
    values = torch.from_numpy(audio).view(1, 1, -1)
    with torch.inference_mode():
        model.codec_model.encode(values[..., : 10 * FRAME])  # warm-up
        start = time.perf_counter()
        model.codec_model.encode(values)
        seconds = time.perf_counter() - start
    return seconds * 1000 / (len(audio) // FRAME)


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def peak_resident_bytes() -> int:
    """This process's own high-water mark. Not ru_maxrss: Linux carries the parent's peak
    into a child across exec, which would charge transformers' model to ours."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def time_ours(folder: Path, dtype: str, frames: int, warmup: int, deviation: bool) -> dict:
    """Runs in its own process: load, stream frames, report timings and peak RSS."""
    from engine.models import kernel_choice
    from engine.models.kyutai.weights import load_model

    baseline = resident_bytes()
    started = time.perf_counter()
    model = load_model(folder, "cpu", dtype)
    load_seconds = time.perf_counter() - started
    audio = np.random.default_rng(0).standard_normal((frames + warmup) * FRAME).astype(np.float32)
    audio *= 0.1
    mimi_state, lm_state = model.mimi.new_state(), model.lm.new_state()
    token, codes = model.lm.start_inputs()
    times, mimi_times, tokens, hidden = [], [], [], []
    with torch.inference_mode():
        token = int(model.lm.step(token, codes, lm_state).argmax())
        for i in range(frames + warmup):
            t0 = time.perf_counter()
            frame = torch.from_numpy(audio[i * FRAME : (i + 1) * FRAME])
            codes = model.mimi.encode(frame, mimi_state)[0]
            t1 = time.perf_counter()
            state = model.lm.hidden(token, codes, lm_state)
            logits = model.lm.head(state).view(-1)
            tokens.append((token, codes))  # this step's inputs, for the int8 comparison
            token = int(logits.argmax())
            t2 = time.perf_counter()
            if i >= warmup:
                times.append((t2 - t0) * 1000)
                mimi_times.append((t1 - t0) * 1000)
            hidden.append((state.float().view(-1), logits.float()))
    result = {
        "ours_ms_median": float(np.median(times)),
        "ours_ms_p95": float(np.percentile(times, 95)),
        "ours_mimi_ms_median": float(np.median(mimi_times)),
        "load_seconds": round(load_seconds, 1),
        "weight_bytes": held_bytes(model),
    }
    result["peak_rss_bytes"] = peak_resident_bytes()
    result["rss_before_load_bytes"] = baseline  # interpreter, torch and libraries
    result["rss_over_weights"] = result["peak_rss_bytes"] / result["weight_bytes"]
    result["rss_growth_over_weights"] = (result["peak_rss_bytes"] - baseline) / result[
        "weight_bytes"
    ]
    if dtype in ("int8", "int4") and deviation:
        result |= quantized_deviation(folder, dtype, tokens, hidden)
    result["kernels"] = kernel_choice.chosen()
    return result


def quantized_deviation(folder: Path, dtype: str, inputs: list, int8_outputs: list) -> dict:
    """Our float32 on the same inputs (teacher-forced) against the int8 or int4 outputs."""
    from engine.models.kyutai.weights import load_model

    model = load_model(folder, "cpu", "float32")
    state = model.lm.new_state()
    token, codes = model.lm.start_inputs()
    cosines, agree = [], []
    with torch.inference_mode():
        model.lm.step(token, codes, state)
        for (text_token, frame_codes), (h8, logits8) in zip(inputs, int8_outputs, strict=True):
            h32 = model.lm.hidden(text_token, frame_codes, state)
            logits32 = model.lm.head(h32).view(-1)
            cosines.append(float(torch.nn.functional.cosine_similarity(h32.view(-1), h8, dim=0)))
            agree.append(int(logits32.argmax()) == int(logits8.argmax()))
    return {
        f"{dtype}_hidden_cosine_mean": float(np.mean(cosines)),
        f"{dtype}_hidden_cosine_min": float(np.min(cosines)),
        f"{dtype}_top1_agreement": float(np.mean(agree)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(FULL_SIZE), default="1b")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "int8", "int4"], default="float32"
    )
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--ours-only", metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-deviation", action="store_true", help="int8/int4: no float32")
    parser.add_argument("--keep", metavar="FOLDER", help="save (or reuse) the random model here")
    args = parser.parse_args()
    if args.ours_only:
        folder, deviation = Path(args.ours_only), not args.skip_deviation
        print(json.dumps(time_ours(folder, args.dtype, args.frames, args.warmup, deviation)))
        return

    reference_dtype = torch.float32 if args.dtype == "float32" else torch.bfloat16
    with tempfile.TemporaryDirectory(prefix="kyutai-bench-") as tmp:
        folder = Path(args.keep or tmp)
        if (folder / "config.json").exists():  # kept from an earlier run: same random weights
            model = load_reference(folder, reference_dtype)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            model = build_reference(args.config, reference_dtype, folder)
        result = {
            "cpu": cpu_description()["model"],
            "config": args.config,
            "dtype": args.dtype,
            "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
            "gomp_spincount": os.environ["GOMP_SPINCOUNT"],
        }
        audio = (np.random.default_rng(1).standard_normal(args.frames * FRAME) * 0.1).astype(
            np.float32
        )
        # The CPU is shared: transformers is timed before and after ours, and the ratio uses
        # both, so a change of load during the run shows instead of biasing the ratio.
        steps = [] if args.skip_reference else time_reference(model, audio)
        # Ours runs with transformers' copy released, so each side is timed with one model
        # resident (two float32 1B models take 9.4 GB of the development VM's 24).
        del model
        gc.collect()
        command = [sys.executable, __file__, "--ours-only", str(folder), "--dtype", args.dtype]
        command += ["--frames", str(args.frames), "--warmup", str(args.warmup)]
        command += ["--skip-deviation"] if args.skip_deviation else []
        ours = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
        result |= ours
        if steps:
            model = load_reference(folder, reference_dtype)
            after = time_reference(model, audio)
            result["transformers_dtype"] = str(reference_dtype).removeprefix("torch.")
            result["transformers_ms_median_before"] = float(np.median(steps))
            result["transformers_ms_median_after"] = float(np.median(after))
            result["transformers_ms_median"] = float(np.median(steps + after))
            result["transformers_ms_p95"] = float(np.percentile(steps + after, 95))
            codec = time_reference_codec(model, audio)
            result["transformers_codec_ms_per_frame"] = codec
            # Ours is Mimi + LM per frame; transformers' is its LM step plus its codec pass
            # spread over the frames. The steps-only ratio is the stricter one, shown too.
            per_frame = result["transformers_ms_median"] + codec
            result["transformers_ms_per_frame"] = per_frame
            result["ratio_median"] = result["ours_ms_median"] / per_frame
            result["ratio_vs_steps_only"] = (
                result["ours_ms_median"] / result["transformers_ms_median"]
            )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
