"""Released checkpoints of the MERU family: each file format read and mapped onto a kind and its space.

The formats (:data:`meru.kinds.formats.FORMATS`; a ``pretrained.checkpoints`` entry names its own, docs/CHECKPOINTS.md
has every layout):

* ``official``, ``hycoclip``, ``uncha``, ``atmg``: the official MERU layout, ``{"model": state_dict, ...}`` (a
  training run of these code bases adds ``optimizer``, ``scheduler``, ``scaler``, ``iteration``: ignored) with
  keys ``visual.*``, ``visual_proj.weight``, ``textual.*``, ``textual_proj.weight``, ``logit_scale``, MERU's
  ``curv`` / ``visual_alpha`` / ``textual_alpha`` and the buffers ``pixel_mean`` / ``pixel_std`` ``[3, 1, 1]``,
  ``textual.attn_mask``; UNCHA adds three logit scales and ``textual.min_radius_head.0.{weight,bias}``. The
  model normalises pixels with the file's own pixel buffers, ``(x - pixel_mean) / pixel_std``: HyCoCLIP's and
  UNCHA's constructors shift their pixel arguments by one slot, so their ``pixel_mean`` holds ImageNet's std.
  Kinds: ``official`` files are MERU with a ``curv`` key, CLIP without; ``hycoclip`` and ``uncha`` files are
  their own kinds (a HyCoCLIP file has a MERU file's keys, so only its entry can say what it is); ``atmg``
  files are MERU built with ATMG's ``curv_init = 0.1``, ``learn_curv = False``.
* ``openclip-train``: open_clip training checkpoints (:func:`meru.models.openclip.load_openclip_train`).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch

from meru.kinds import BASELINE, PAPER, get_kind
from meru.kinds import KINDS
from meru.kinds import uncha as uncha_kind
from meru.models.checkpoints import CheckpointError, convert_official_state_dict, load_strict, require_finite
from meru.models.clip_meru import CLIP, build_model
from meru.kinds.formats import DEFAULT_FORMAT, FORMATS, entry_problem, format_of_entry

OFFICIAL_VIT_WIDTH_TO_SIZE = {384: "vit-s16", 768: "vit-b16", 1024: "vit-l16"}
#: released file names (meru_vit_s.pth, clip_vit_l.pth, hycoclip_vit_b.pth, uncha_vit_s.pth, ...): kind, size letter
RELEASED_FILE_NAME = re.compile(rf"^({'|'.join(sorted({*KINDS, *FORMATS}))})_vit_([sbl])\b")
#: the keys a UNCHA file has beyond a MERU file's (official key names)
UNCHA_KEYS = (*uncha_kind.EXTRA_LOGIT_SCALES, "textual.min_radius_head.0.weight", "textual.min_radius_head.0.bias")
#: MERU's learned scalars in the official layout (a file without them is CLIP)
MERU_KEYS = ("curv", "visual_alpha", "textual_alpha")


def load_released(path: str | os.PathLike, blob, entry: dict) -> CLIP:
    """A released checkpoint ``blob`` (loaded from ``path``) as the model its ``entry`` names (``format``, ``kind``,
    ``size``, ``curv_init``, ``learn_curv``, ``arch``; all optional for an official file), in eval mode."""
    entry = {k: v for k, v in entry.items() if v is not None}
    problem = entry_problem(entry)
    if problem:
        raise CheckpointError(f"{path}: checkpoint entry: {problem}")
    fmt = format_of_entry(entry)
    if fmt == "openclip-train":
        from meru.models.openclip import load_openclip_train

        return load_openclip_train(path, blob, entry)
    sd = official_layout_state(path, blob, fmt)
    kind, size = _official_kind(path, sd, fmt, entry), entry.get("size") or _official_size(path, sd)
    _check_file_name(path, kind, size, fmt)
    kwargs = _model_kwargs(kind, fmt, entry)
    model = build_model(kind, size, **kwargs)
    load_strict(model, convert_official_state_dict(sd), str(path), _hint(sd, fmt))
    _check_curvature(model, path)
    use_file_pixels(model, sd, path)
    model.checkpoint_info = {
        "step": None,
        "config": {"released": {"format": fmt, "kind": kind, "size": size, **kwargs}},
    }
    return model.eval()


def official_layout_state(path, blob, fmt: str) -> dict:
    """``blob["model"]``, finite; else one line naming what the file is and the fix."""
    if isinstance(blob, dict) and "model" in blob and isinstance(blob["model"], dict):
        require_finite(blob["model"], str(path))
        return blob["model"]
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        raise CheckpointError(
            f"{path}: an open_clip training checkpoint ('state_dict' key), not the {fmt} layout ('model' key); set "
            "format: openclip-train and arch: (its open_clip architecture) in its checkpoint entry"
        )
    keys = sorted(blob)[:6] if isinstance(blob, dict) else type(blob).__name__
    raise CheckpointError(
        f"{path}: unknown checkpoint format (top-level {keys}; expected ours ('format' key), the official MERU "
        "layout ('model' key) or an open_clip training checkpoint ('state_dict' key))"
    )


def _official_kind(path, sd: dict, fmt: str, entry: dict) -> str:
    """The kind of an official-layout file: ``official`` files by their ``curv`` key, the others their format's."""
    has_meru = all(k in sd for k in MERU_KEYS)
    kind = (PAPER if "curv" in sd else BASELINE) if fmt == "official" else FORMATS[fmt].kinds[0]
    if entry.get("kind") not in (None, kind):
        raise CheckpointError(
            f"{path}: the checkpoint entry says kind {entry['kind']!r} but this {fmt} file holds {kind} "
            f"({'a' if 'curv' in sd else 'no'} 'curv' key); correct the entry's kind or format"
        )
    if get_kind(kind).space == "lorentz" and not has_meru:
        raise CheckpointError(
            f"{path}: a {fmt} file must have {', '.join(MERU_KEYS)} (a {kind} model); this one lacks "
            f"{[k for k in MERU_KEYS if k not in sd]}: a CLIP file? (kind: clip, format: official)"
        )
    return kind


def _official_size(path, sd: dict) -> str:
    """``vit-s16`` / ``vit-b16`` / ``vit-l16`` from the ViT width of ``visual.cls_token`` / ``visual.pos_embed``."""
    ref = sd.get("visual.cls_token", sd.get("visual.pos_embed"))
    if ref is None:
        raise CheckpointError(f"{path}: no 'visual.cls_token' / 'visual.pos_embed' key: not an official ViT checkpoint")
    width = ref.shape[-1]
    if width not in OFFICIAL_VIT_WIDTH_TO_SIZE:
        raise CheckpointError(f"{path}: ViT width {width} is not ViT-S/B/L (384/768/1024); give its size in the entry")
    return OFFICIAL_VIT_WIDTH_TO_SIZE[width]


def _check_file_name(path, kind: str, size: str, fmt: str) -> None:
    """A released file name (``meru_vit_s.pth``, ``hycoclip_vit_b.pth``, ...) must agree with the contents."""
    named = RELEASED_FILE_NAME.match(Path(path).name)
    if not named:
        return
    name_kind, name_size = named.group(1), f"vit-{named.group(2)}16"
    name_format = name_kind if name_kind in FORMATS else DEFAULT_FORMAT
    if name_format != fmt and not (name_format == DEFAULT_FORMAT and fmt == "atmg"):
        raise CheckpointError(
            f"{path}: the file name says a {name_kind} checkpoint but it is read as format {fmt!r}; set format: "
            f"{name_format} in its checkpoint entry (or rename the file)"
        )
    if name_size != size or (name_kind in (PAPER, BASELINE) and fmt == DEFAULT_FORMAT and name_kind != kind):
        raise CheckpointError(
            f"{path}: the file name says {name_kind}/{name_size} but its contents are {kind}/{size} (MERU files "
            "have a 'curv' key; ViT width 384/768/1024 = S/B/L); rename or re-download it"
        )


def _model_kwargs(kind: str, fmt: str, entry: dict) -> dict:
    """The model settings: the entry's ``curv_init`` / ``learn_curv``, else its format's, for kinds that take them."""
    settings = {**FORMATS[fmt].model_kwargs, **{k: entry[k] for k in ("curv_init", "learn_curv") if k in entry}}
    return {k: v for k, v in settings.items() if k in get_kind(kind).options}


def _hint(sd: dict, fmt: str) -> str:
    """The fix for a key mismatch: a UNCHA file read as another format names ``format: uncha``."""
    if fmt != uncha_kind.FORMAT and any(k in sd for k in UNCHA_KEYS):
        return f"The unexpected keys are UNCHA's: set format: {uncha_kind.FORMAT} in its checkpoint entry."
    return f"Check the entry's format ({fmt}), kind and size (docs/CHECKPOINTS.md lists each format's keys)."


def _check_curvature(model: CLIP, path) -> None:
    """A Lorentz model's loaded curvature must lie in its clamp range ``[c0/10, 10 c0]`` (``c0 = curv_init``): a
    value outside says the file was trained with another ``curv_init`` (ATMG: 0.1), so the entry must give it."""
    if not hasattr(model, "curv_min"):
        return
    log_c = float(model.curv.detach())
    if not model.curv_min - 1e-6 <= log_c <= model.curv_max + 1e-6:
        raise CheckpointError(
            f"{path}: curvature c = {math.exp(log_c):.4g} lies outside the clamp range [{math.exp(model.curv_min):.4g}, "
            f"{math.exp(model.curv_max):.4g}] of curv_init = {model.curv_init:g}; set the curv_init it was trained "
            "with in its checkpoint entry"
        )


def use_file_pixels(model: CLIP, sd: dict, path) -> None:
    """Normalise pixels as the file's model does: copy its ``pixel_mean`` / ``pixel_std`` buffers (3 finite values
    each, std > 0) into ``model``'s; a file without them keeps ImageNet's."""
    for name in ("pixel_mean", "pixel_std"):
        if name not in sd:
            continue
        value = sd[name].detach().float().reshape(-1)
        if (
            value.numel() != 3
            or not bool(torch.isfinite(value).all())
            or (name == "pixel_std" and bool((value <= 0).any()))
        ):
            raise CheckpointError(f"{path}: buffer {name!r} = {value.tolist()[:6]} is not 3 finite per-channel values")
        getattr(model, name).copy_(value.view(-1, 1, 1))


__all__ = ["OFFICIAL_VIT_WIDTH_TO_SIZE", "UNCHA_KEYS", "load_released", "official_layout_state", "use_file_pixels"]
