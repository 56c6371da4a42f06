#!/usr/bin/env bash
# Kyutai on a CUDA GPU in under 10 minutes: the parity tests on "cuda"; the batched engine's
# tick at 1, 200 and 400 streams with full rings (issue 16: Kyutai's figure is 400
# real-time 1B streams on an H100); then the 1B benchmark in bfloat16 (Mimi + LM per 80 ms
# frame, with transformers' figure from the same run) and `livecap bench` step times. Run
# from the repository root on a machine with a CUDA GPU:
#     bash tests/benchmarks/gpu_check.sh [FOLDER]
# FOLDER keeps the random full-size 1B model between runs (default /tmp/livecap-kyutai-1b).
# PYTHON names the interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
folder=${1:-/tmp/livecap-kyutai-1b}
if ! "$python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); nothing to check." >&2
    exit 2
fi
"$python" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"

echo "== Kyutai parity tests on cuda"
LIVECAP_TEST_DEVICE=cuda QT_QPA_PLATFORM=offscreen timeout 120 "$python" -m pytest -q \
    -p no:cacheprovider tests/test_kyutai.py -k "mimi_codes or tokens_and_text or bfloat16"

echo "== the random full-size 1B model"
timeout 90 "$python" - "$folder" <<'PY'
import sys
from pathlib import Path
import torch
sys.path.insert(0, ".")
from tests.benchmarks.kyutai_vs_transformers import build_reference
from tests.kyutai_fixtures import _tokenizer_json

folder = Path(sys.argv[1])
if not (folder / "config.json").exists():
    folder.mkdir(parents=True, exist_ok=True)
    build_reference("1b", torch.bfloat16, folder)  # saved; the copy returned is dropped
    (folder / "tokenizer.json").write_text(_tokenizer_json(8001), encoding="utf-8")
print("saved in", folder)
PY

echo "== batched 1B streams, bfloat16, rings full (760 ticks first): tick by batch size"
# a batch of B keeps real time while its tick stays under 80 ms (realtime_streams >= B)
timeout 240 "$python" tests/benchmarks/kyutai_slots_throughput.py --device cuda \
    --folder "$folder" --batches 1,200,400 --warmup 760 --ticks 40 || true

echo "== 1B, bfloat16, ours against transformers (random weights)"
timeout 150 "$python" - "$folder" <<'PY'
import json, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, ".")
from engine.bench import run_bench

folder = Path(sys.argv[1])
from transformers import KyutaiSpeechToTextForConditionalGeneration as Reference
reference = Reference.from_pretrained(folder, dtype=torch.bfloat16).to("cuda").eval()
audio = (np.random.default_rng(1).standard_normal(100 * 1920) * 0.1).astype(np.float32)
values = torch.from_numpy(audio).view(1, 1, -1).to("cuda")
stamps = []
from transformers import StoppingCriteria
class Stamp(StoppingCriteria):
    def __call__(self, ids, scores, **kw):
        torch.cuda.synchronize(); stamps.append(time.perf_counter())
        return torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
with torch.inference_mode():
    reference.generate(input_values=values, stopping_criteria=[Stamp()], do_sample=False)
steps = np.diff(stamps)[10:] * 1000
del reference; torch.cuda.empty_cache()
ours = run_bench(str(folder), "cuda", "bfloat16", 20.0)
print(json.dumps({
    "transformers_step_ms_median": float(np.median(steps)),
    "ours_frame_ms_median": ours["frame_ms_median"], "ours_frame_ms_p95": ours["frame_ms_p95"],
    "ratio": ours["frame_ms_median"] / float(np.median(steps)), "keeps_up": ours["keeps_up"],
}, indent=1))
PY
