"""Speech encoder-decoder models: a wav2vec2/HuBERT encoder joined to a text decoder.

The Hub layout is one composite `config.json` (model_type "speech-encoder-decoder") with an
`encoder` and a `decoder` section, one set of safetensors weights prefixed "encoder.",
"decoder." and, when the two widths differ, "enc_to_dec_proj.", a `preprocessor_config.json`
for the zero-mean/unit-variance step, and a tokenizer (engine/models/text_tokenizer.py).

`load_model` gives a seq2seq.WindowDecoder: one window of audio (optionally forcing a
committed prefix) → token ids with their end times (from the decoder's cross-attention) → text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.errors import ModelError
from engine.models import bart, bert, kernel_choice, kernels, loading, mbart
from engine.models import wav2vec2 as w2v
from engine.models.contract import LoadOptions, ModelInfo
from engine.models.generation import GenerationConfig
from engine.models.seq2seq import SAMPLE_RATE, WindowDecoder
from engine.models.text_tokenizer import TextTokenizer

FAMILY = "speech-encoder-decoder"

# The XLS-R en-to-15 models were fine-tuned on CoVoST 2; their model cards map each target
# language to the mBART-50 token it was trained with (ca and cy reuse the es and fi slots).
_EN_TO_15 = {
    "de": 250003, "tr": 250023, "fa": 250029, "sv": 250042, "mn": 250037, "zh": 250025,
    "cy": 250007, "ca": 250005, "sl": 250052, "et": 250006, "id": 250032, "ar": 250001,
    "ta": 250044, "lv": 250017, "ja": 250012,
}  # fmt: skip
KNOWN_TARGETS = {
    f"facebook/wav2vec2-xls-r-{size}-en-to-15": _EN_TO_15 for size in ("300m", "1b", "2b")
}

_DECODERS = {"mbart": mbart, "bart": bart, "bert": bert}
_ENCODERS = ("wav2vec2", "hubert")


class SpeechEncoderDecoder(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        enc_values, dec_values = config["encoder"], config["decoder"]
        if enc_values.get("model_type") not in _ENCODERS:
            raise _unsupported("encoder", enc_values.get("model_type"), _ENCODERS)
        decoder_module = _DECODERS.get(dec_values.get("model_type"))
        if decoder_module is None:
            raise _unsupported("decoder", dec_values.get("model_type"), tuple(_DECODERS))
        self.encoder_config = w2v.Wav2Vec2Config.from_dict(enc_values)
        self.encoder = w2v.Wav2Vec2Encoder(self.encoder_config)
        width = dec_values.get("d_model") or dec_values["hidden_size"]
        enc_width = self.encoder_config.output_size
        self.enc_to_dec_proj = nn.Linear(enc_width, width) if enc_width != width else None
        self.decoder = decoder_module.build_decoder(dec_values, width)
        self.decoder_module = decoder_module

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        """Normalised audio [1, N] → decoder-width memory [1, S, D], each half in its own
        dtype (int8 mode runs the encoder in bfloat16 and the decoder on float activations)."""
        memory = self.encoder(values.to(self.encoder.dtype)).to(self.decoder_dtype)
        return self.enc_to_dec_proj(memory) if self.enc_to_dec_proj is not None else memory

    @property
    def decoder_dtype(self) -> torch.dtype:
        return self.decoder.embed_norm.weight.dtype


def _unsupported(part: str, kind: object, known: Sequence[str]) -> ModelError:
    return ModelError(
        f"This speech encoder-decoder model's {part} is '{kind}', which Livecap does not run.",
        f"Supported {part}s: {', '.join(known)}.",
    )


# ---- weights --------------------------------------------------------------------------------


def load_weights(model: SpeechEncoderDecoder, checkpoint: loading.Checkpoint) -> None:
    """Rename the Hub's tensors to ours, fold/fuse them, and assign them to `model`."""
    groups: dict[str, dict[str, torch.Tensor]] = {"encoder": {}, "decoder": {}, "proj": {}}
    renamers = {"encoder": w2v.rename_weight, "decoder": model.decoder_module.rename_weight}
    sources = {}  # our name → the checkpoint's, for messages
    for name, tensor in checkpoint.tensors().items():
        part, _, rest = name.partition(".")
        if part == "enc_to_dec_proj":
            groups["proj"][rest] = tensor
        elif part not in renamers:
            checkpoint.unexpected(name)
        elif (ours := renamers[part](rest)) is not None:  # None: unused on purpose
            groups[part][ours] = tensor
            sources[f"{part}.{ours}"] = name
    layers = model.encoder_config.num_hidden_layers
    try:
        encoder = w2v.fold_weights(groups["encoder"], layers)
        decoder = model.decoder_module.fuse_projections(groups["decoder"], model.decoder.num_layers)
    except RuntimeError as exc:  # parts of one fused matrix that do not fit together
        checkpoint.fail(f"tensors of one layer do not fit together ({exc})")
    state = {f"encoder.{k}": v for k, v in encoder.items()}
    state.update({f"decoder.{k}": v for k, v in decoder.items()})
    state.update({f"enc_to_dec_proj.{k}": v for k, v in groups["proj"].items()})
    loading.assign(model, state, checkpoint, sources)


# ---- loading ------------------------------------------------------------------------------

_COUNTS = (
    "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
    "decoder_layers", "d_model", "decoder_attention_heads", "decoder_ffn_dim", "vocab_size",
)  # fmt: skip


@loading.returning_freed_blocks()
def load_model(folder: Path, name: str, options: LoadOptions) -> tuple[WindowDecoder, ModelInfo]:
    """Build the SpeechSeq2Seq for a speech encoder-decoder model folder."""
    config = loading.read_config(folder)
    sections = [config.get(part) for part in ("encoder", "decoder")]
    if not all(isinstance(section, dict) for section in sections):
        raise ModelError(
            f"{folder / 'config.json'} has no encoder/decoder sections.",
            f"This is not a speech encoder-decoder model folder. {loading.damaged_hint(folder)}",
        )
    for section in sections:
        loading.require_counts(section, _COUNTS, folder / "config.json")
    device = loading.resolve_device(options.device)
    precision = _precision(options, device)
    if precision == "int8" and device.type != "cpu":
        raise ModelError(
            "int8 weights run on the CPU only for speech encoder-decoder models.",
            "Use --dtype bfloat16 on the GPU, or --device cpu for int8.",
        )
    model = loading.build(lambda: SpeechEncoderDecoder(config), folder)
    load_weights(model, loading.Checkpoint(folder))
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    model = model.to(device, dtype).eval()
    tokenizer = TextTokenizer(folder)
    targets = KNOWN_TARGETS.get(_repo_id(folder, name)) or _short_codes(tokenizer.language_ids)
    language = _choose_language(name, targets, options.target_lang)
    language_id = targets[language] if language else None
    generation = GenerationConfig.from_folder(
        folder, num_beams=options.beams, forced_bos_token_id=language_id
    )
    kernel_choice.prepare_decoder(model.decoder, precision, generation.num_beams)
    if precision == "int8" and kernels.native_bfloat16():
        model.encoder.to(torch.bfloat16)  # compute-bound: where bfloat16 is native it is faster
    preprocessor = loading.read_json(folder / "preprocessor_config.json", missing_ok=True)
    normalize = preprocessor.get("do_normalize", True)
    translator = WindowDecoder(
        model,
        features=lambda audio: _features(audio, normalize, device),
        tokenizer=tokenizer,
        generation=generation,
        language_id=language_id,
        specials={generation.decoder_start_token_id, generation.pad_token_id, *generation.eos_ids},
        min_samples=_min_samples(model.encoder_config),
        seconds_per_frame=lambda samples: _seconds_per_frame(model.encoder_config, samples),
    )
    info = ModelInfo(
        name=name,
        family=FAMILY,
        languages=tuple(targets),
        language=language,
        delay_seconds=0.0,
        device=device.type,
        dtype=precision,
        task="translate" if targets else "transcribe",
    )
    return translator, info


def _features(audio: np.ndarray, normalize: bool, device: torch.device) -> torch.Tensor:
    """Mono audio → the encoder's float32 input [1, N] (zero mean, unit variance)."""
    values = np.asarray(audio, dtype=np.float32)
    if normalize:
        values = (values - values.mean()) / np.sqrt(values.var() + 1e-7)
    return torch.from_numpy(values)[None].to(device)


def _seconds_per_frame(config: w2v.Wav2Vec2Config, samples: int) -> float:
    return samples / SAMPLE_RATE / config.output_frames(samples)


def _min_samples(config: w2v.Wav2Vec2Config) -> int:
    """The shortest input giving at least one encoder frame."""
    samples = 1
    while config.output_frames(samples) < 1:
        samples *= 2
    return samples


def _precision(options: LoadOptions, device: torch.device) -> str:
    """`auto`: bfloat16 on a GPU. On a CPU, int8 for live use, where keeping up matters most
    (int8 keeps a 2-core CPU near real time where float32 falls behind:
    tests/benchmarks/sed_vs_transformers.py), and float32 for files (`--offline`), where
    quality matters more than speed."""
    if options.dtype not in ("auto", "float32", "bfloat16", "int8"):
        raise ModelError(
            f"Speech encoder-decoder models cannot run in {options.dtype}.",
            "Choose --dtype float32, bfloat16 or int8 (int8 on the CPU).",
        )
    if options.dtype != "auto":
        return options.dtype
    if device.type == "cuda":
        return "bfloat16"
    return "float32" if options.offline else "int8"


def _repo_id(folder: Path, name: str) -> str:
    """The Hub repo id: `name`, or read off a Hub cache path (models--org--name/snapshots/x)."""
    for part in folder.resolve().parts:
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    return name


def _short_codes(language_ids: dict[str, int]) -> dict[str, int]:
    """mBART-50 codes by their language part: "de_DE" → "de"."""
    return {code.split("_")[0]: token for code, token in language_ids.items()}


def _choose_language(name: str, targets: dict[str, int], wanted: str | None) -> str | None:
    if not targets:
        if wanted:
            raise ModelError(
                f"{name} writes one language only, so a target language cannot be chosen.",
                "Leave out the target language for this model.",
            )
        return None
    valid = ", ".join(sorted(targets))
    if wanted is None:
        raise ModelError(
            f"{name} translates into several languages; choose one.",
            f"Pass a target language, one of: {valid}.",
        )
    code = wanted.replace("-", "_").split("_")[0].lower()
    if code not in targets:
        raise ModelError(f"{name} cannot translate into '{wanted}'.", f"Choose one of: {valid}.")
    return code
