"""Test helper: write one of our models as a released official MERU/CLIP file (facebookresearch/meru format).

The inverse of :func:`meru.models.checkpoints.convert_official_state_dict`: ``{"model": state_dict}`` with the
official key names (``visual.*``, ``visual_proj.weight``, ``textual.{token_embed,posit_embed,resblocks.N.*,
ln_final}``, ``textual_proj.weight [D, W]``, ``logit_scale``, for MERU ``curv``/``visual_alpha``/``textual_alpha``)
plus the buffers the official classes save (``pixel_mean``, ``pixel_std`` ``[3, 1, 1]``, ``textual.attn_mask``
``[L, L]`` bool, True above the diagonal). Used to build small random official-format checkpoints offline.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from meru.models.clip_meru import IMAGENET_MEAN, IMAGENET_STD


def official_state_dict(model) -> dict[str, torch.Tensor]:
    """Our ``model.state_dict()`` under the official key names (tensors copied to CPU)."""
    out = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu().clone()
        if key == "text.attn_mask":
            continue  # written below in the official dtype (bool)
        if key.startswith("visual.head.proj."):
            new = "visual_proj." + key[len("visual.head.proj.") :]
        elif key.startswith("visual.trunk."):
            new = "visual." + key[len("visual.trunk.") :]
        elif key == "text.text_projection":
            new, value = "textual_proj.weight", value.T.contiguous()
        elif key.startswith("text."):
            rest = key[len("text.") :]
            if rest.startswith("token_embedding."):
                rest = "token_embed." + rest[len("token_embedding.") :]
            elif rest == "positional_embedding":
                rest = "posit_embed"
            elif rest.startswith("transformer.resblocks."):
                rest = rest[len("transformer.") :]
            new = "textual." + rest
        elif "." not in key:  # learned scalars keep their names (logit_scale, curv, visual_alpha, textual_alpha)
            new = key
        else:
            raise KeyError(f"no official name for our key {key!r}")
        out[new] = value
    n = out["textual.posit_embed"].shape[0]
    out["textual.attn_mask"] = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    out["pixel_mean"] = torch.tensor(IMAGENET_MEAN).view(-1, 1, 1)
    out["pixel_std"] = torch.tensor(IMAGENET_STD).view(-1, 1, 1)
    return out


def save_official(model, path: str | os.PathLike) -> Path:
    """``torch.save({"model": official_state_dict(model)}, path)``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": official_state_dict(model)}, path)
    return path
