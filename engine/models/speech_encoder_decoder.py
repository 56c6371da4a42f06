"""Speech encoder-decoder models: a wav2vec2/HuBERT encoder joined to a text decoder.

The Hub layout is one composite `config.json` (model_type "speech-encoder-decoder") with an
`encoder` and a `decoder` section, one set of safetensors weights prefixed "encoder.",
"decoder." and, when the two widths differ, "enc_to_dec_proj.", a `preprocessor_config.json`
for the zero-mean/unit-variance step, and a tokenizer: `tokenizer.json` where present, else
the mBART-50 sentencepiece model (fairseq ids: pieces shifted by one, language codes after
the vocabulary).

`SpeechTranslator` implements engine/streaming/chunked_protocol.py's SpeechSeq2Seq: decode one
window of audio (optionally forcing a committed prefix) into token ids with their end times
(from the decoder's cross-attention), and ids into text.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelError
from engine.models import bart, bert, mbart
from engine.models import wav2vec2 as w2v
from engine.models.alignment import token_end_times
from engine.models.generation import GenerationConfig, Screened, generate
from engine.recognizer import LoadOptions, ModelInfo
from engine.streaming.chunked_protocol import Hypothesis

SAMPLE_RATE = 16000
FAMILY = "speech-encoder-decoder"

# mBART-50's language codes in id order: code i has id (sentencepiece size + 1 + i)
MBART50_CODES = (
    "ar_AR cs_CZ de_DE en_XX es_XX et_EE fi_FI fr_XX gu_IN hi_IN it_IT ja_XX kk_KZ ko_KR lt_LT "
    "lv_LV my_MM ne_NP nl_XX ro_RO ru_RU si_LK tr_TR vi_VN zh_CN af_ZA az_AZ bn_IN fa_IR he_IL "
    "hr_HR id_ID ka_GE km_KH mk_MK ml_IN mn_MN mr_IN pl_PL ps_AF pt_XX sv_SE sw_KE ta_IN te_IN "
    "th_TH tl_XX uk_UA ur_PK xh_ZA gl_ES sl_SI"
).split()

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


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors from model.safetensors or its shards (never pickles)."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        files = [folder / s for s in shards]
    else:
        files = [folder / "model.safetensors"]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise ModelError(
            f"{folder} has no safetensors weights ({', '.join(missing)} missing).",
            "Livecap loads weights from safetensors only; download the model again.",
        )
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(file))
    return tensors


def load_weights(model: SpeechEncoderDecoder, tensors: dict[str, torch.Tensor]) -> None:
    """Rename the Hub's tensors to ours, fold/fuse them, and assign them to `model`."""
    groups: dict[str, dict[str, torch.Tensor]] = {"encoder": {}, "decoder": {}, "proj": {}}
    renamers = {"encoder": w2v.rename_weight, "decoder": model.decoder_module.rename_weight}
    for name, tensor in tensors.items():
        part, _, rest = name.partition(".")
        if part == "enc_to_dec_proj":
            groups["proj"][rest] = tensor
        elif part in renamers and (ours := renamers[part](rest)) is not None:
            groups[part][ours] = tensor
    layers = model.encoder_config.num_hidden_layers
    state = {f"encoder.{k}": v for k, v in w2v.fold_weights(groups["encoder"], layers).items()}
    fused = model.decoder_module.fuse_projections(groups["decoder"], model.decoder.num_layers)
    state.update({f"decoder.{k}": v for k, v in fused.items()})
    state.update({f"enc_to_dec_proj.{k}": v for k, v in groups["proj"].items()})
    tied = _aliases(model)
    for names in tied:  # a tied weight is stored once, under any one of its names
        present = [n for n in names if n in state]
        if present:
            state.update({n: state[present[0]] for n in names})
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise ModelError(
            f"The model's weights are incomplete: {len(missing)} tensors missing "
            f"(first: {', '.join(missing[:3])}).",
            "Download the model again; the weights may be damaged or not match config.json.",
        )
    model.load_state_dict({k: state[k] for k in expected}, assign=True)
    for first, *others in tied:  # assign=True gave each name its own Parameter: share again
        shared = model.get_parameter(first)
        for name in others:
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, shared)


def _aliases(model: nn.Module) -> list[list[str]]:
    """Groups of state-dict names that are one tied parameter (e.g. lm_head = embeddings)."""
    by_id: dict[int, list[str]] = {}
    for name, value in model.state_dict(keep_vars=True).items():
        by_id.setdefault(id(value), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


# ---- tokenizer ------------------------------------------------------------------------------


class TextTokenizer:
    """Ids → text, and the language codes the vocabulary holds (code → id)."""

    def __init__(self, folder: Path) -> None:
        if (folder / "tokenizer.json").exists():
            self._init_tokenizers(folder)
        elif (folder / "sentencepiece.bpe.model").exists():
            self._init_sentencepiece(folder / "sentencepiece.bpe.model")
        else:
            raise ModelError(
                f"{folder} has no tokenizer (tokenizer.json or sentencepiece.bpe.model).",
                "Download the model again, or add its tokenizer files to the folder.",
            )

    def _init_tokenizers(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._sentencepiece = None
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        self.language_ids = {code: vocab[code] for code in MBART50_CODES if code in vocab}
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
        # transformers' decode tidies " ." → "." when asked, except for BPE vocabularies
        model_kind = json.loads(self._tokenizer.to_str())["model"]["type"]
        self._clean_up = bool(config.get("clean_up_tokenization_spaces")) and model_kind != "BPE"

    def _init_sentencepiece(self, path: Path) -> None:
        import sentencepiece

        self._tokenizer = None
        self._sentencepiece = sentencepiece.SentencePieceProcessor(model_file=str(path))
        # fairseq/mBART-50 ids: 0 <s>, 1 <pad>, 2 </s>, 3 <unk>, then piece p at p + 1
        # (sentencepiece's own first three pieces are its control tokens), then the codes
        first_code = self._sentencepiece.get_piece_size() + 1
        self.language_ids = {code: first_code + i for i, code in enumerate(MBART50_CODES)}
        self._clean_up = False

    def decode(self, ids: Sequence[int]) -> str:
        if self._tokenizer is not None:
            text = self._tokenizer.decode(list(ids), skip_special_tokens=True)
            return _clean_up_spaces(text) if self._clean_up else text
        size = self._sentencepiece.get_piece_size()
        # specials and language codes dropped; "▁" marks a space, except before the first piece
        pieces = [self._sentencepiece.id_to_piece(i - 1) for i in ids if 4 <= i <= size]
        text = "".join(pieces).replace("▁", " ")
        return text[1:] if pieces and pieces[0].startswith("▁") else text


def _clean_up_spaces(text: str) -> str:
    for spaced, tight in (
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
        (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ):  # fmt: skip
        text = text.replace(spaced, tight)
    return text


# ---- the SpeechSeq2Seq implementation ------------------------------------------------------


class SpeechTranslator:
    """One window of 16 kHz audio → token ids (greedy or beam search) → text."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: SpeechEncoderDecoder,
        tokenizer: TextTokenizer,
        generation: GenerationConfig,
        normalize: bool,
        language_id: int | None,
        device: torch.device,
    ) -> None:
        self.model, self.tokenizer, self.generation = model, tokenizer, generation
        self.normalize, self.language_id = normalize, language_id
        self.device = device
        self._min_samples = _min_samples(model.encoder_config)
        self._specials = {generation.decoder_start_token_id, generation.pad_token_id}
        self._specials.update(generation.eos_ids)

    def features(self, audio: np.ndarray) -> torch.Tensor:
        """Mono audio → the encoder's float32 input [1, N] (zero mean, unit variance)."""
        values = np.asarray(audio, dtype=np.float32)
        if self.normalize:
            values = (values - values.mean()) / np.sqrt(values.var() + 1e-7)
        return torch.from_numpy(values)[None].to(self.device)

    def decode(
        self, audio: np.ndarray, prefix: Sequence[int] = (), draft: Sequence[int] = ()
    ) -> Hypothesis:
        duration = len(audio) / SAMPLE_RATE
        if len(audio) < self._min_samples:  # no encoder frame to align to: the window's end
            return Hypothesis(ids=list(prefix), times=[duration] * len(prefix))
        with torch.inference_mode():
            cross = self.cross_kv(audio)
            sequence = self._search(cross, prefix, draft)
            rows = self.text_rows(sequence)
            if not rows:
                return Hypothesis(ids=[], times=[])
            tokens = torch.tensor([sequence], device=self.device)
            weights = bart.cross_attention(self.model.decoder, tokens, cross)[rows]
        seconds_per_frame = duration / self.model.encoder_config.output_frames(len(audio))
        times = token_end_times(weights, seconds_per_frame, duration)
        return Hypothesis(ids=[sequence[row] for row in rows], times=times)

    def text_rows(self, sequence: Sequence[int]) -> list[int]:
        """Where the text tokens sit in a generated sequence: after the start token and the
        language (if any), specials dropped."""
        first = 1
        if self.language_id is not None and sequence[1:2] == [self.language_id]:
            first = 2
        return [i for i in range(first, len(sequence)) if sequence[i] not in self._specials]

    @torch.inference_mode()
    def generate_ids(self, audio: np.ndarray, prefix: Sequence[int] = ()) -> list[int]:
        """The whole generated sequence, as transformers' generate() returns it."""
        return self._search(self.cross_kv(audio), prefix)

    def cross_kv(self, audio: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One window's cross-attention keys/values for every decoder layer."""
        return self.model.decoder.cross_kv(self.model.encode(self.features(audio)))

    def _search(
        self,
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        prefix: Sequence[int],
        draft: Sequence[int] = (),
    ) -> list[int]:
        def new_state(rows: int) -> bart.CachedDecoderState:
            return bart.CachedDecoderState(self.model.decoder, cross, rows, self._forced_lengths())

        language = [self.language_id] if self.language_id is not None else []
        if not prefix:  # the language, if any, is forced as the first token (forced_bos)
            return generate(new_state, self.generation, draft=[*language, *draft])
        # forced_bos only acts on the first step: name the language explicitly
        start = [self.generation.decoder_start_token_id, *language, *prefix]
        return generate(new_state, self.generation, start, draft)

    def _forced_lengths(self) -> frozenset[int]:
        """Sequence lengths after which generate() forces the next token whatever the logits
        say (forced_bos after the start token, forced_eos one short of max_length): the
        decoder skips its output layer there (a quarter of a float32 mBART-50 step)."""
        config, lengths = self.generation, set()
        if config.forced_bos_token_id is not None:
            lengths.add(1)
        if config.forced_eos_token_id is not None:
            lengths.add(config.max_length - 1)
        return frozenset(lengths)

    def text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)


def _min_samples(config: w2v.Wav2Vec2Config) -> int:
    """The shortest input giving at least one encoder frame."""
    samples = 1
    while config.output_frames(samples) < 1:
        samples *= 2
    return samples


# ---- int8 ---------------------------------------------------------------------------------


class Int8Linear(nn.Module):
    """Weight-only int8 Linear: one scale per output row, bfloat16 activations, on PyTorch's
    int8-weight matmul kernel (the rows are widened inside the kernel, never materialised).

    That kernel reads the weights once per 4 input rows, so a pass over many rows (the forced
    prefix of a live decode, the alignment pass over a whole hypothesis) widens the weights
    to bfloat16 once instead: measured on 2 cores per 4096x1024 matrix, 12 rows 1.84 →
    1.66 ms, 26 rows 3.66 → 2.27 ms (tests/benchmarks/cpu_kernels.py measures both).
    """

    _WIDEN_FROM_ROWS = 12

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        quantized, scale = int8_rows(linear.weight.detach().float())
        self.register_buffer("weight", quantized)
        self.register_buffer("scale", scale)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
        if flat.shape[0] >= self._WIDEN_FROM_ROWS:
            y = (F.linear(flat, self.weight.to(torch.bfloat16)) * self.scale).to(x.dtype)
        else:
            y = torch._weight_int8pack_mm(flat, self.weight, self.scale).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], -1)


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row for the int8-weight kernel: w ≈ codes * scale, codes in
    [-127, 127], scales [rows] in bfloat16 (as the kernel takes them)."""
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    codes = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return codes, scale.to(torch.bfloat16)


class PackedInt8Linear(nn.Module):
    """Int8Linear's codes on fbgemm's int8 × int8 kernel, for the output layer: 250k × 1024
    read on 2 cores in 20 against 31 ms for one row, 27 against 68 ms for 5 beams (the
    int8-weight kernel reads the weights once per 4 rows).

    The kernel takes activations as int8 too, but its integer sums are exact, so each row goes
    in twice: x = s·(h + l/254) + e with h = round(x/s), s = max|x|/127, l the rounded
    remainder scaled by 254, |e| ≤ s/508, about 16 bits per value. Both parts are sent as
    integers times s, which the kernel's own rounding returns unchanged. The result is ~10x
    closer to x · (codes · scale)ᵀ than bfloat16 activations give. The split costs a few
    small ops per call, more than it saves on a decoder layer's few-MB matrices."""

    _SPLIT = 254.0  # |l| ≤ 127: the remainder is at most s/2

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.packed = _fbgemm_pack(codes, scale)
        self.bias = bias

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> PackedInt8Linear:
        blocks = list(int8_blocks(linear.weight))
        codes, scale = torch.cat([b[1] for b in blocks]), torch.cat([b[2] for b in blocks])
        return cls(codes, scale, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _, _ = self.product(x.reshape(-1, x.shape[-1]).float())
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).view(*x.shape[:-1], -1)

    def product(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """flat [T, D] → x̂ · (codes · scale)ᵀ [T, V] without bias, the activations x̂ [T, D]
        the kernel multiplied, and |part 1| + |part 2|/254 [T, V], the size of the float
        results its rounding is relative to."""
        step = float(flat.abs().max()) / 127 or 1.0
        high = torch.round(flat / step)
        low = torch.round((flat - high * step) * (self._SPLIT / step))
        parts = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            torch.cat([high, low]) * step,
            step,
            128,
            self.packed,  # zero point 128: uint8
        )
        first, second = parts[: len(flat)], parts[len(flat) :] / self._SPLIT
        restored = (high + low / self._SPLIT) * step
        return first + second, restored, first.abs() + second.abs()


def int8_blocks(
    weight: torch.Tensor, rows: int = 16384
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """int8_rows over runs of `rows` rows, as (float32 block, codes, scales): no full-size
    float32 temporary for a 250k-row output layer."""
    for start in range(0, len(weight), rows):
        block = weight.detach()[start : start + rows].float()
        yield (block, *int8_rows(block))


def _fbgemm_pack(codes: torch.Tensor, scale: torch.Tensor) -> object:
    """fbgemm's packed form of int8 codes with one scale per row (no extra copy is kept)."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"  # "x86" may choose oneDNN, which lacks the op
    try:
        with warnings.catch_warnings():
            # quantized tensors are deprecated but still carry fbgemm's weights in the torch
            # this project pins; fbgemm_int8() checks for them before a model is loaded
            warnings.simplefilter("ignore", UserWarning)
            zero = torch.zeros(len(codes), dtype=torch.long)
            weight = torch._make_per_channel_quantized_tensor(codes, scale.double(), zero, 0)
            return torch.ops.quantized.linear_prepack(weight, None)
    finally:
        torch.backends.quantized.engine = previous


@functools.cache
def fbgemm_int8() -> bool:
    """Whether PackedInt8Linear is exact here: fbgemm's int8 × int8 kernel runs (x86 builds)
    and sums its integer products without overflow. Without AVX512-VNNI fbgemm adds pairs of
    u8 × s8 products in saturating int16 (AVX2's vpmaddubsw), which full-range activations
    overflow; the two-part activations and ScreenedHead's bound need exact sums, so this is
    measured once per process on the extreme codes instead of assumed."""
    try:
        return int8_products_exact(_fbgemm_integer_product)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def int8_products_exact(product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """Whether `product(activations, codes)` (integer-valued float32 [T, D], int8 [V, D]) gives
    the exact integer products for codes and activations at the ends of their range."""
    width = 64
    signs = torch.tensor([1.0, -1.0]).repeat(width // 2)
    edges = torch.stack([torch.ones(width), -torch.ones(width), signs, -signs]) * 127
    activations = torch.cat([edges, torch.randint(-127, 128, (4, width)).float()])
    codes = torch.cat([edges, torch.randint(-127, 128, (4, width)).float()])
    exact = activations.double() @ codes.double().T
    return torch.equal(product(activations, codes.to(torch.int8)).double(), exact)


def _fbgemm_integer_product(activations: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    packed = _fbgemm_pack(codes, torch.ones(len(codes), dtype=torch.bfloat16))
    quantized = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
    return quantized(activations, 1.0, 128, packed)  # step 1, zero point 128: codes as given


class ScreenedHead(nn.Module):
    """The output layer of a float32 decoder on a CPU, read at a sixth of the cost for greedy
    search, with the exact float32 argmax.

    A greedy step multiplies one row by the whole output layer (mBART-50: 250k × 1024, 1 GB in
    float32, 60% of the bytes a step reads) only to pick its best token. Here an int8 copy on
    PackedInt8Linear's kernel gives every logit approximately, with a bound on its error:
    |w·x - ŵ·x̂| ≤ ‖x‖‖w - ŵ‖ (the codes) + ‖x - x̂‖‖ŵ‖ (the activations' two int8 parts) +
    float32 rounding, of the kernel's results and of the exact logits themselves (≤ 2⁻¹²‖x‖‖w‖
    for widths up to 4096). Only tokens whose interval reaches the best lower bound can win
    (a handful); their logits are then computed from the float32 rows. Beam search, which
    needs every log-probability, gets the plain float32 layer's logits."""

    def __init__(self, linear: bart.RowLinear) -> None:
        super().__init__()
        self.linear = linear  # float32, its weight shared with the embeddings when tied
        codes, scales, error, norm = [], [], [], []
        for block, block_codes, block_scales in int8_blocks(self.weight):
            restored = block_codes.float() * block_scales.float()[:, None]
            codes.append(block_codes)
            scales.append(block_scales)
            error.append((block - restored).norm(dim=1))
            norm.append(restored.norm(dim=1))
        self.screen = PackedInt8Linear(torch.cat(codes), torch.cat(scales), self.bias)
        self.register_buffer("code_error", torch.cat(error))  # [V] ‖w - ŵ‖
        self.register_buffer("code_norm", torch.cat(norm))  # [V] ‖ŵ‖

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor | Screened:
        if x.shape[0] != 1:  # several beams
            return self.linear(x)
        rows = x[0]  # [T, D]
        kernel, restored, magnitude = self.screen.product(rows)  # [T, V], [T, D], [T, V]
        approx = kernel if self.bias is None else kernel + self.bias
        size = rows.norm(dim=1, keepdim=True)
        activations = (rows - restored).norm(dim=1, keepdim=True) + size * 2**-12
        rounding = (magnitude + approx.abs()) * 2**-20
        bound = size * self.code_error + activations * self.code_norm + rounding

        def exact(row: int, ids: torch.Tensor) -> torch.Tensor:
            bias = None if self.bias is None else self.bias[ids]
            return F.linear(rows[row], self.weight[ids], bias)

        return Screened(approx, bound, exact)


def quantize_linears(module: nn.Module) -> None:
    """Replace every nn.Linear below `module` by an Int8Linear (tied embeddings stay float).

    Only the decoder is quantized: its steps multiply one row (or a few beams) by each weight,
    so they are bound by reading weights, which int8 quarters. The encoder multiplies
    hundreds of frames at once, where this kernel was measured slower than float32; int8
    mode runs it in bfloat16 instead where the CPU computes bfloat16 natively."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and _fits_int8_kernel(child):
            setattr(module, name, Int8Linear(child))
        else:
            quantize_linears(child)


def _fits_int8_kernel(linear: nn.Linear) -> bool:
    return linear.in_features % 16 == 0  # the int8 kernel's blocks


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


# ---- loading ------------------------------------------------------------------------------


def load_model(folder: Path, name: str, options: LoadOptions) -> tuple[SpeechTranslator, ModelInfo]:
    """Build the SpeechSeq2Seq for a speech encoder-decoder model folder."""
    config = _read_json(folder / "config.json")
    if "encoder" not in config or "decoder" not in config:
        raise ModelError(
            f"{folder / 'config.json'} has no encoder/decoder sections.",
            "This is not a speech encoder-decoder model folder; download the model again.",
        )
    device = _device(options.device)
    precision = _precision(options, device)
    if precision == "int8" and device.type != "cpu":
        raise ModelError(
            "int8 weights run on the CPU only for speech encoder-decoder models.",
            "Use --dtype bfloat16 on the GPU, or --device cpu for int8.",
        )
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    with torch.device("meta"):
        model = SpeechEncoderDecoder(config)
    load_weights(model, read_weights(folder))
    model = model.to(device, dtype).eval()
    packed_int8 = device.type == "cpu" and fbgemm_int8()
    tokenizer = TextTokenizer(folder)
    targets = KNOWN_TARGETS.get(_repo_id(folder, name)) or _short_codes(tokenizer.language_ids)
    language = _choose_language(name, targets, options.target_lang)
    language_id = targets[language] if language else None
    generation = GenerationConfig.from_folder(
        folder, num_beams=options.beams, forced_bos_token_id=language_id
    )
    if precision == "float32" and packed_int8:
        model.decoder.lm_head = ScreenedHead(model.decoder.lm_head)
    if precision == "float32":
        bart.pack_for_beams(model.decoder, generation.num_beams)
    if precision == "int8":
        if packed_int8:
            model.decoder.lm_head = PackedInt8Linear.from_linear(model.decoder.lm_head)
        quantize_linears(model.decoder)
        if native_bfloat16():  # the encoder is compute-bound: AMX runs it ~2.5× faster
            model.encoder.to(torch.bfloat16)
    preprocessor = _read_json(folder / "preprocessor_config.json", missing_ok=True)
    translator = SpeechTranslator(
        model,
        tokenizer,
        generation,
        normalize=preprocessor.get("do_normalize", True),
        language_id=language_id,
        device=device,
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


def _precision(options: LoadOptions, device: torch.device) -> str:
    """`auto`: bfloat16 on a GPU. On a CPU, int8 for live use (live real-time factor 1.2
    against float32's 1.9 on 2 cores, tests/benchmarks/sed_vs_transformers.py) and float32
    for files (`--offline`), where quality matters more than keeping up."""
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


def _device(wanted: str) -> torch.device:
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ModelError("CUDA was asked for but no CUDA GPU is available.", "Use --device cpu.")
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(wanted)


def _read_json(path: Path, missing_ok: bool = False) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ModelError(f"{path} is missing.", "Download the model again.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"{path} is not valid JSON ({exc}).", "Download the model again."
        ) from None
