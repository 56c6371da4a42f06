"""mBART decoder: BART's decoder with pre-norm layers and a final LayerNorm.

mBART-50 checkpoints also scale token embeddings by √width (config `scale_embedding`) and
tie the output projection to the token embeddings; both come from the config. The weight
names are BART's, so the loading map is shared with engine/models/bart.py.
"""

from __future__ import annotations

from engine.models.bart import BartDecoder, BartDecoderConfig, fuse_projections, rename_weight

__all__ = ["build_decoder", "fuse_projections", "rename_weight"]


def build_decoder(values: dict, memory_width: int) -> BartDecoder:
    """An mBART decoder from the `decoder` section of a composite config.json."""
    return BartDecoder(BartDecoderConfig.from_dict(values, pre_norm=True), memory_width)
