"""Models: named sizes, open_clip towers, CLIP, MERU and EuCLIP, checkpoints."""

from meru.models.clip_meru import (
    CLIP,
    MERU,
    EuCLIP,
    build_model,
    fp32_head,
    get_tokenizer,
)
from meru.models.registry import MODEL_SIZES, ModelSize, get_size

__all__ = ["CLIP", "MERU", "MODEL_SIZES", "EuCLIP", "ModelSize", "build_model", "fp32_head", "get_size", "get_tokenizer"]
