"""Tiny random speech encoder-decoder models saved by transformers in the Hub layout.

Three pairings cover the family: wav2vec2 (stable layer norm, adapter) + mBART with a
sentencepiece mBART-50 tokenizer; wav2vec2 (group norm, post-norm) + BART whose width differs
(so `enc_to_dec_proj` exists) with a byte-level BPE tokenizer.json; HuBERT + BERT (a causal LM
with cross-attention) with a WordPiece tokenizer.json. Weights are random but scaled up so
that the logits are spread out: generated tokens vary and beam ties cannot hinge on rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TEXT = (
    "the quick brown fox jumps over the lazy dog. a stitch in time saves nine! "
    "speech turns into captions as it is spoken, and a translation appears beside them. "
    "every session is kept as a transcript that can be searched and exported? "
    "der schnelle braune fuchs springt über den faulen hund. guten morgen, wie geht es dir? "
)
SAMPLE_RATE = 16000
POSITION_STD = 3.0
TARGET_LANG = "de"
TARGET_CODE = "de_DE"


def clip(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Noise whose loudness jumps every 50 ms: frames differ, so the decoder has work to do."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * SAMPLE_RATE)
    envelope = np.repeat(rng.uniform(0.0, 1.0, samples // 800 + 1), 800)[:samples]
    return (0.3 * envelope * rng.standard_normal(samples)).astype(np.float32)


def _spread_weights(model: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    """Re-draw every weight matrix wider than the default init, keeping norms at 1/0."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                fan_in = param[0].numel()
                scale = fan_in**-0.5
                if "embed" in name:
                    # with tied embeddings a token's own embedding would dominate its next
                    # logits and the output would repeat it: let positions dominate instead
                    scale = POSITION_STD if "position" in name else std
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
            elif "bias" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def _mbart50_tokenizer(folder: Path):
    import sentencepiece as spm
    from transformers import MBart50TokenizerFast

    corpus = folder / "corpus.txt"
    corpus.write_text(TEXT.replace(". ", ".\n").replace("? ", "?\n"), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "sentencepiece.bpe"),
        vocab_size=60,
        model_type="unigram",
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        minloglevel=2,
    )
    corpus.unlink()
    (folder / "sentencepiece.bpe.vocab").unlink()
    return MBart50TokenizerFast.from_pretrained(folder)  # converts the sentencepiece model


def _bart_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TEXT], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def _bert_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials)
    tok.train_from_iterator([TEXT], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        clean_up_tokenization_spaces=True,
    )


def _wav2vec2_config(**overrides):
    from transformers import Wav2Vec2Config

    base = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        conv_dim=(16, 16, 16, 16, 16, 16, 16),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
        vocab_size=8,
    )
    base.update(overrides)
    return Wav2Vec2Config(**base)


def _decoder_common(vocab: int, **overrides) -> dict:
    common = dict(
        vocab_size=vocab,
        is_decoder=True,
        add_cross_attention=True,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        max_position_embeddings=64,
    )
    common.update(overrides)
    return common


def build(kind: str, folder: Path) -> Path:
    """Build and save one tiny model: kind in "mbart", "bart", "bert". Returns the folder."""
    from transformers import (
        BartConfig,
        BertConfig,
        HubertConfig,
        MBartConfig,
        SpeechEncoderDecoderConfig,
        SpeechEncoderDecoderModel,
    )

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if kind == "mbart":
        tokenizer = _mbart50_tokenizer(folder)
        encoder = _wav2vec2_config(
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            conv_bias=True,
            add_adapter=True,
            output_hidden_size=24,
            adapter_kernel_size=3,
            adapter_stride=2,
            num_adapter_layers=2,
        )
        decoder = MBartConfig(
            **_decoder_common(len(tokenizer)),
            d_model=24,
            decoder_layers=2,
            decoder_attention_heads=4,
            decoder_ffn_dim=40,
            encoder_layers=2,  # the generation cache is sized by num_hidden_layers = this
            scale_embedding=True,
            activation_function="gelu",
        )
        start, eos, pad = 2, 2, 1
    elif kind == "bart":
        tokenizer = _bart_tokenizer()
        encoder = _wav2vec2_config(feat_extract_norm="group", do_stable_layer_norm=False)
        decoder = BartConfig(
            **_decoder_common(len(tokenizer)),
            d_model=20,
            decoder_layers=2,
            decoder_attention_heads=2,
            decoder_ffn_dim=36,
            encoder_layers=2,  # the generation cache is sized by num_hidden_layers = this
            activation_function="gelu",
        )
        start, eos, pad = 2, 2, 1
    elif kind == "bert":
        tokenizer = _bert_tokenizer()
        encoder = HubertConfig(**_wav2vec2_config(feat_extract_norm="group").to_dict())
        encoder.feat_proj_layer_norm = True
        decoder = BertConfig(
            vocab_size=len(tokenizer),
            is_decoder=True,
            add_cross_attention=True,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            max_position_embeddings=64,
        )
        start, eos, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    else:
        raise ValueError(kind)
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = start, eos, pad
    model = SpeechEncoderDecoderModel(config=config).eval()
    _spread_weights(model, seed=len(kind))
    generation = model.generation_config
    generation.decoder_start_token_id, generation.eos_token_id = start, eos
    generation.pad_token_id, generation.max_length = pad, 24
    generation.num_beams, generation.early_stopping = 1, False
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    _feature_extractor(encoder).save_pretrained(folder)
    return folder


def _feature_extractor(encoder_config):
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=encoder_config.feat_extract_norm == "layer",
    )


def reference(folder: Path):
    """transformers' model, tokenizer and feature extractor loaded back from `folder`."""
    from transformers import AutoFeatureExtractor, AutoTokenizer, SpeechEncoderDecoderModel

    model = SpeechEncoderDecoderModel.from_pretrained(folder).eval()
    return (
        model,
        AutoTokenizer.from_pretrained(folder),
        AutoFeatureExtractor.from_pretrained(folder),
    )
