"""Checkpoints: our format, and the released official MERU/CLIP files (facebookresearch/meru).

Our format (``torch.save`` of a plain dict; loads with ``weights_only=True``)::

    {"format": "meru-bench/checkpoint/1", "kind": "meru"|"clip", "size": str,
     "model_kwargs": dict, "state_dict": dict[str, Tensor], "step": int, "config": dict}

Official files (``meru_vit_{s,b,l}.pth``, ``clip_vit_{s,b,l}.pth``) are ``{"model": state_dict}`` with
keys ``visual.*`` (timm ViT), ``textual.{token_embed,posit_embed,resblocks.N.*,ln_final}``,
``visual_proj.weight``, ``textual_proj.weight``, ``logit_scale`` and for MERU ``curv``,
``visual_alpha``, ``textual_alpha``. They are converted key by key with strict checking.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from meru.kinds import BASELINE, PAPER
from meru.models.clip_meru import CLIP, build_model
from meru.models.tensor_files import (  # noqa: F401  (their home is the light meru.models.tensor_files)
    ABSURD_FACTOR,
    AbsurdWeightsError,
    CheckpointError,
    NonFiniteWeightsError,
    UnsafeFileError,
    absurd_tensors,
    nonfinite_tensors,
    require_finite,
    require_sane,
    safe_load,
    save_torch,
    tensor_scales,
)

FORMAT = "meru-bench/checkpoint/1"
OFFICIAL_VIT_WIDTH_TO_SIZE = {384: "vit-s16", 768: "vit-b16", 1024: "vit-l16"}
OFFICIAL_FILE_NAME = re.compile(r"^(meru|clip)_vit_([sbl])\b")  # meru_vit_s.pth, clip_vit_l.pth, ...
# Buffers our modules create that official files do not carry (recomputed at build time).
_NON_OFFICIAL = ("pixel_mean", "pixel_std", "text.attn_mask")


def initial_scales(kind: str, size: str, **model_kwargs) -> dict[str, float]:
    """:func:`tensor_scales` of a freshly initialised ``kind``/``size`` model (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        return tensor_scales(build_model(kind, size, **model_kwargs).state_dict())


def save_model(
    model: CLIP,
    path: str | os.PathLike,
    step: int = 0,
    config: dict | None = None,
    initial: dict[str, float] | None = None,
    **extra,
) -> None:
    """Write ``model`` in our format atomically (temp file + rename); refuses non-finite or exploded weights
    (:func:`require_sane`; ``initial``: the tensors' initial scales, else those of a fresh model)."""
    path = Path(path)
    if initial is None:
        initial = initial_scales(model.kind, model.size, **model.model_kwargs())
    require_sane(model.state_dict(), initial, f"{path} (not written)")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "kind": model.kind,
        "size": model.size,
        "model_kwargs": model.model_kwargs(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": int(step),
        "config": config or {},
        **extra,
    }
    save_torch(path, payload)


def convert_official_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official key names -> ours. ``visual.X -> visual.trunk.X``, ``visual_proj -> visual.head.proj``,
    ``textual.token_embed -> text.token_embedding``, ``textual.posit_embed -> text.positional_embedding``,
    ``textual.resblocks -> text.transformer.resblocks``, ``textual_proj.weight [D,W] -> text.text_projection [W,D]``."""
    out = {}
    for key, value in sd.items():
        if key in ("pixel_mean", "pixel_std"):
            continue
        if key.startswith("visual_proj."):
            new = "visual.head.proj." + key[len("visual_proj.") :]
        elif key.startswith("visual."):
            new = "visual.trunk." + key[len("visual.") :]
        elif key == "textual_proj.weight":
            new, value = "text.text_projection", value.T.contiguous()
        elif key.startswith("textual."):
            rest = key[len("textual.") :]
            rest = rest.replace("token_embed.", "token_embedding.", 1) if rest.startswith("token_embed.") else rest
            rest = "positional_embedding" if rest == "posit_embed" else rest
            rest = "transformer." + rest if rest.startswith("resblocks.") else rest
            if rest == "attn_mask":
                continue
            new = "text." + rest
        else:
            new = key
        out[new] = value
    return out


def _load_strict(model: CLIP, sd: dict[str, torch.Tensor], source: str) -> CLIP:
    own = {k: v for k, v in model.state_dict().items() if not k.endswith(_NON_OFFICIAL)}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: does not match {model.kind}/{model.size}: "
            f"missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}. "
            "Check the model kind/size (MERU files have 'curv'; CLIP files do not)."
        )
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{source}: key {k!r} has shape {tuple(sd[k].shape)}, "
                f"but {model.kind}/{model.size} expects {tuple(v.shape)}: wrong architecture."
            )
    require_sane(sd, tensor_scales(own), source)  # ``own``: the freshly initialised model's tensors
    model.load_state_dict(sd, strict=False)  # strictness checked above; non-persistent buffers excluded
    return model


def load_official(
    path: str | os.PathLike, kind: str | None = None, size: str | None = None, map_location="cpu"
) -> CLIP:
    """Load a released official checkpoint; ``kind``/``size`` are inferred from keys and shapes if not given."""
    blob = safe_load(path, map_location, "checkpoint")
    if not isinstance(blob, dict) or "model" not in blob:
        raise CheckpointError(f"{path}: not an official MERU/CLIP checkpoint (no 'model' key)")
    sd = blob["model"]
    require_finite(sd, str(path))
    inferred_kind = PAPER if "curv" in sd else BASELINE  # the official release: MERU files have 'curv'; CLIP not
    ref = sd.get("visual.cls_token", sd.get("visual.pos_embed"))
    if ref is None:
        raise CheckpointError(f"{path}: no 'visual.cls_token' / 'visual.pos_embed' key: not an official ViT checkpoint")
    width = ref.shape[-1]
    if width not in OFFICIAL_VIT_WIDTH_TO_SIZE:
        raise CheckpointError(f"{path}: ViT width {width} is not ViT-S/B/L (384/768/1024)")
    inferred_size = OFFICIAL_VIT_WIDTH_TO_SIZE[width]
    named = OFFICIAL_FILE_NAME.match(Path(path).name)
    if named:  # the released names say what the file is; contents must agree
        name_kind, name_size = named.group(1), f"vit-{named.group(2)}16"
        if (name_kind, name_size) != (inferred_kind, inferred_size):
            raise CheckpointError(
                f"{path}: the file name says {name_kind}/{name_size} but its contents are {inferred_kind}/"
                f"{inferred_size} (MERU files have a 'curv' key; ViT width {width}); rename or re-download it."
            )
    kind, size = kind or inferred_kind, size or inferred_size
    return _load_strict(build_model(kind, size), convert_official_state_dict(sd), str(path))


def _check_metadata(blob: dict, path: Path) -> None:
    """Our checkpoint's metadata: ``kind``/``size`` strings, ``model_kwargs``/``state_dict`` mappings, ``step`` an
    int >= 0 (or None), ``config`` a mapping (or None); else :class:`CheckpointError` naming the field."""
    want = {"kind": str, "size": str, "model_kwargs": dict, "state_dict": dict, "step": int, "config": dict}
    optional = ("model_kwargs", "step", "config")
    for key, kind in want.items():
        value = blob.get(key)
        if (value is None and key in optional) or (isinstance(value, kind) and not isinstance(value, bool)):
            if key != "step" or value is None or value >= 0:
                continue
        raise CheckpointError(
            f"{path}: checkpoint field {key!r} is {type(value).__name__} {str(value)[:40]!r}, expected "
            f"{'an int >= 0' if key == 'step' else kind.__name__}; the file is corrupt or not from `meru train`"
        )


def load_model(path: str | os.PathLike, map_location="cpu") -> CLIP:
    """Load our checkpoint or an official one (detected by format). Returns the model in eval mode."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    blob = safe_load(path, map_location, "checkpoint")
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        _check_metadata(blob, path)
        require_finite(blob["state_dict"], str(path))
        model = build_model(blob["kind"], blob["size"], **blob.get("model_kwargs", {}))
        model = _load_strict(model, blob["state_dict"], str(path))
        model.checkpoint_info = {k: blob.get(k) for k in ("step", "config")}
    elif isinstance(blob, dict) and "model" in blob:
        model = load_official(path, map_location=map_location)
        model.checkpoint_info = {"step": None, "config": {}}
    else:
        raise CheckpointError(f"{path}: unknown checkpoint format (expected {FORMAT!r} or an official MERU file)")
    return model.eval()
