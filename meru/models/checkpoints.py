"""Checkpoints: our format, and the released official MERU/CLIP files (facebookresearch/meru).

Our format (``torch.save`` of a plain dict; loads with ``weights_only=True``)::

    {"format": "meru-bench/checkpoint/1", "kind": "meru"|"clip", "size": str,
     "model_kwargs": dict, "state_dict": dict[str, Tensor], "step": int, "config": dict}

Official files (``meru_vit_{s,b,l}.pth``, ``clip_vit_{s,b,l}.pth``) are ``{"model": state_dict}`` with
keys ``visual.*`` (timm ViT), ``textual.{token_embed,posit_embed,resblocks.N.*,ln_final}``,
``visual_proj.weight``, ``textual_proj.weight``, ``logit_scale`` and for MERU ``curv``,
``visual_alpha``, ``textual_alpha``. They are converted key by key with strict checking.

Released checkpoints of the MERU family (:func:`load_released`; formats in :data:`meru.kinds.formats.FORMATS`,
layouts in docs/CHECKPOINTS.md): ``official``, ``hycoclip``, ``uncha``, ``atmg`` files are the official layout
(``{"model": state_dict, ...}``; a training run's ``optimizer`` / ``scheduler`` / ``scaler`` / ``iteration`` are
ignored), read as the entry's kind with the file's own ``pixel_mean`` / ``pixel_std`` (HyCoCLIP's and UNCHA's
constructors shift their pixel arguments by one slot, so their ``pixel_mean`` holds ImageNet's std); a HyCoCLIP
file has a MERU file's keys, so only its entry (or a ``hycoclip_vit_*`` file name) says what it is; ``atmg`` files
are MERU with ATMG's ``curv_init = 0.1``, ``learn_curv = False``. ``openclip-train`` files are open_clip training
checkpoints of the EuCLIP paper's branch (:func:`load_openclip_train`).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch

from meru.kinds import BASELINE, KINDS, PAPER, get_kind
from meru.kinds.formats import DEFAULT_FORMAT, FORMATS, entry_problem, format_of_entry
from meru.models.clip_meru import CLIP, build_model
from meru.spaces import get_space
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


def load_strict(model: CLIP, sd: dict[str, torch.Tensor], source: str, hint: str = "") -> CLIP:
    """Load ``sd`` (our key names) into ``model``: the same keys and shapes as ``model``'s own (its non-persistent
    buffers and the pixel buffers excluded), finite and not exploded; else :class:`CheckpointError` naming the
    keys and ``hint`` (the fix; default: check the kind/size)."""
    own = {k: v for k, v in model.state_dict().items() if not k.endswith(_NON_OFFICIAL)}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: does not match {model.kind}/{model.size}: "
            f"missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}. "
            + (hint or "Check the model kind/size (MERU files have 'curv'; CLIP files do not).")
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
    """Load a released official checkpoint; ``kind``/``size`` are inferred from keys and shapes if not given
    (:func:`load_released` with format ``official``)."""
    blob = safe_load(path, map_location, "checkpoint")
    return load_released(path, blob, {"format": "official", "kind": kind, "size": size})


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


def load_model(path: str | os.PathLike, map_location="cpu", entry: dict | None = None) -> CLIP:
    """Load our checkpoint (detected by its ``format`` field) or a released one (:func:`load_released`; ``entry``:
    its ``pretrained.checkpoints`` entry, which names the format, kind, size and model
    settings; default: an official MERU/CLIP file). Returns the model in eval mode."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    blob = safe_load(path, map_location, "checkpoint")
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        _check_metadata(blob, path)
        require_finite(blob["state_dict"], str(path))
        model = build_model(blob["kind"], blob["size"], **blob.get("model_kwargs", {}))
        model = load_strict(model, blob["state_dict"], str(path))
        model.checkpoint_info = {k: blob.get(k) for k in ("step", "config")}
    else:
        model = load_released(path, blob, entry or {})
    return model.eval()


# ------------------------------------------------------------------------------ released checkpoints of the family
OFFICIAL_VIT_WIDTH_TO_SIZE = {384: "vit-s16", 768: "vit-b16", 1024: "vit-l16"}
#: released file names (meru_vit_s.pth, clip_vit_l.pth, hycoclip_vit_b.pth, uncha_vit_s.pth, ...): kind, size letter
RELEASED_FILE_NAME = re.compile(rf"^({'|'.join(sorted({*KINDS, *FORMATS}))})_vit_([sbl])\b")
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
    if FORMATS[fmt].needs_arch:
        return _named(load_openclip_train(path, blob, entry), entry)
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
    return _named(model, entry).eval()


def _named(model: CLIP, entry: dict) -> CLIP:
    """The entry's model ``name`` (ATMG read as MERU: ``atmg``) and ``display`` name on the loaded model, where its
    records read them (``MetricRecord.model_fields``: ``config.model.name`` / ``display``)."""
    named = {k: entry[k] for k in ("name", "display") if entry.get(k)}
    if named:
        model.checkpoint_info["config"]["model"] = named
    return model


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
    keys = sorted(map(str, blob))[:6] if isinstance(blob, dict) else type(blob).__name__
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
    if get_kind(kind).space == get_kind(PAPER).space and not has_meru:  # kinds in MERU's space have its scalars
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
    if name_kind != fmt and name_kind not in FORMATS[fmt].kinds:  # e.g. hycoclip_vit_s.pth read as official
        name_format = name_kind if name_kind in FORMATS else next(f for f in FORMATS if name_kind in FORMATS[f].kinds)
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
    """The fix for a key mismatch: a file with another format's own keys (UNCHA's) names that format."""
    other = next((f for f in FORMATS.values() if f.name != fmt and any(k in sd for k in f.extra_keys)), None)
    if other is not None:
        return (
            f"The unexpected keys are those of format {other.name}: set format: {other.name} in its checkpoint entry."
        )
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


# ------------------------------------------------------------------------------ open_clip training checkpoints
#: the learned scalars of the EuCLIP branch's hyperbolic geometry (``--geometry hyperbolic*``: MERU)
HYPERBOLIC_KEYS = ("alpha_img", "alpha_txt", "curvature")
#: its curvature ``c = clamp(exp(curvature), 0.1, 10)`` (``CLIP.forward`` of the branch)
CURVATURE_RANGE = (0.1, 10.0)


def _train_kind(path, sd: dict, kind: str | None) -> str:
    """The kind of an EuCLIP-branch state dict: MERU when it has :data:`HYPERBOLIC_KEYS`; EuCLIP and CLIP have
    the same keys (the geometry flag is not saved), so the entry's ``kind`` says which."""
    present = [k for k in HYPERBOLIC_KEYS if k in sd]
    if present and len(present) < len(HYPERBOLIC_KEYS):
        raise CheckpointError(f"{path}: has {present} but not all of {list(HYPERBOLIC_KEYS)}: a damaged checkpoint")
    if present and kind not in (None, PAPER):
        raise CheckpointError(
            f"{path}: has {list(HYPERBOLIC_KEYS)} (--geometry hyperbolic: kind {PAPER}) but the entry says kind {kind!r}"
        )
    if not present and kind in (None, PAPER):
        raise CheckpointError(
            f"{path}: no {list(HYPERBOLIC_KEYS)} keys, so not hyperbolic; its keys cannot tell EuCLIP from CLIP "
            "(--geometry euclidean* or clip): set kind: euclip or kind: clip in its checkpoint entry"
        )
    return PAPER if present else kind


def _train_geometry(kind: str, sd: dict, embed_dim: int) -> dict:
    """``space`` and ``alphas`` of the kind (the branch's ``CLIP.forward``): MERU ``exp(alpha_img/txt)`` and
    ``Lorentz(clamp(exp(curvature), 0.1, 10))``; EuCLIP the fixed ``1/sqrt(D)`` in the Euclidean space; CLIP none."""
    if kind == BASELINE:
        return {"kind": kind}
    if all(k in sd for k in HYPERBOLIC_KEYS):
        curv = float(sd["curvature"].float().exp().clamp(*CURVATURE_RANGE))
        alphas = (float(sd["alpha_img"].float().exp()), float(sd["alpha_txt"].float().exp()))
        return {"kind": kind, "space": get_space(kind, curv), "alphas": alphas}
    return {"kind": kind, "space": get_space(kind), "alphas": (embed_dim**-0.5, embed_dim**-0.5)}


def load_openclip_train(path, blob, entry: dict):
    """An open_clip training checkpoint (``{"epoch", "name", "state_dict", "optimizer", "scaler"?}``, keys maybe
    ``module.``-prefixed) of the EuCLIP paper's branch (EIFY/open_clip@euclip) as ``entry``'s kind on the open_clip
    architecture ``entry["arch"]`` (:func:`meru.models.openclip.build_openclip`); the optimiser state is ignored."""
    from meru.models.openclip import ExternalModelError, build_openclip

    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict):
        top = sorted(map(str, blob))[:6] if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(f"{path}: not an open_clip training checkpoint (no 'state_dict'; top-level {top})")
    sd = {k.removeprefix("module."): v for k, v in blob["state_dict"].items()}
    require_finite(sd, str(path))
    kind = _train_kind(path, sd, entry.get("kind"))
    towers = {k: v for k, v in sd.items() if k not in HYPERBOLIC_KEYS}
    embed_dim = int(towers["text_projection"].shape[-1]) if "text_projection" in towers else 0
    try:
        model = build_openclip(str(entry["arch"]), towers, str(path), **_train_geometry(kind, sd, embed_dim))
    except ExternalModelError as e:
        raise CheckpointError(str(e)) from None
    released = {"format": "openclip-train", "kind": kind, "arch": str(entry["arch"]), "epoch": blob.get("epoch")}
    model.checkpoint_info = {"step": None, "config": {"released": released}}
    return model
