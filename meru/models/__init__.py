"""Models: named sizes, open_clip towers, the CLIP baseline (every kind's model extends it, ``meru/kinds/``),
checkpoints.

The names below are imported on first use (PEP 562), so ``meru.models.registry`` / ``meru info`` do not
import torch, timm or open_clip."""

from importlib import import_module

_EXPORTS = {
    "CLIP": "meru.models.clip_meru",
    "build_model": "meru.models.clip_meru",
    "fp32_head": "meru.models.clip_meru",
    "get_tokenizer": "meru.models.clip_meru",
    "MODEL_SIZES": "meru.models.registry",
    "ModelSize": "meru.models.registry",
    "get_size": "meru.models.registry",
}
__all__ = [
    "CLIP",
    "MODEL_SIZES",
    "ModelSize",
    "build_model",
    "fp32_head",
    "get_size",
    "get_tokenizer",
]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'meru.models' has no attribute {name!r}")
