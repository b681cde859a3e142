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

from meru.io import atomic_path
from meru.models.clip_meru import CLIP, build_model

FORMAT = "meru-bench/checkpoint/1"
# Buffers our modules create that official files do not carry (recomputed at build time).
_NON_OFFICIAL = ("pixel_mean", "pixel_std", "text.attn_mask")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded into the requested architecture."""


class UnsafeFileError(CheckpointError):
    """A file is refused: it is not a plain tensor file (its pickle asks for code) or it is unreadable."""


class NonFiniteWeightsError(CheckpointError):
    """A checkpoint (or a state about to be saved) holds NaN or infinite values."""


class AbsurdWeightsError(NonFiniteWeightsError):
    """A checkpoint (or a state about to be saved) holds finite but exploded values (see :data:`ABSURD_FACTOR`)."""


# A tensor is absurd when max|x| > ABSURD_FACTOR * max(1, max|x| of the same tensor freshly initialised).
# Measured initial scales (every kind at tiny, cpu-conv, small-cpu, vit-s16): <= 1 for weights (trunc-normal std
# 0.02, LayerNorm/BatchNorm gains 1), up to 2 for timm's ViT init, 2.7 (logit_scale = log 1/0.07) and 3.1 (MERU's
# log alphas) for the scalars; the unit floor covers tensors initialised to 0 (biases). So the limit is 1e6 to
# 3e6. Trained CLIP-family weights stay within a few hundred (normalised activations, weight decay; no real
# checkpoint, e.g. the official ViT-L, is reachable here to measure, so the margin is kept wide, 1e4 over 1e2);
# a diverging run reaches 2e7 .. 1e30 before its loss turns NaN (issue 22): those are refused.
ABSURD_FACTOR = 1e6


def save_torch(path: str | os.PathLike, obj) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (:func:`meru.io.atomic_path`); ``obj`` must load with
    ``weights_only=True`` (tensors, numbers, strings, lists, dicts), as :func:`safe_load` reads it."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: a full disk surfaces as OSError
        torch.save(obj, f)
    return Path(path)


def safe_load(path: str | os.PathLike, map_location="cpu", what: str = "file"):
    """``torch.load(path, weights_only=True)``; any refusal becomes one line naming the file and the reason.

    ``weights_only=True`` only rebuilds tensors and plain containers/numbers/strings, so a file whose
    pickle names any other callable (``os.system``, ``builtins.exec``, ...) is refused before anything runs.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 (UnpicklingError, RuntimeError (not a zip/pickle), EOFError, ...
        text = str(e)
        lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if ln.strip()]
        specific = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln]
        other = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Check the documentation", "("))]
        reason = (specific or other or lines or [type(e).__name__])[0][:200]
        raise UnsafeFileError(
            f"{path}: refused to load this {what}: it is not a plain tensor file (weights_only load failed: {reason})"
        ) from None


def nonfinite_tensors(obj, prefix: str = "") -> list[str]:
    """Names of the floating tensors in ``obj`` (nested dicts/lists/tuples) that hold NaN or +-inf."""
    bad = []
    if torch.is_tensor(obj):
        if (obj.is_floating_point() or obj.is_complex()) and obj.numel() and not bool(torch.isfinite(obj).all()):
            bad.append(prefix or "<tensor>")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            bad += nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad += nonfinite_tensors(v, f"{prefix}[{i}]")
    return bad


def require_finite(obj, source: str, what: str = "weights") -> None:
    """Raise :class:`NonFiniteWeightsError` (one line, naming up to 3 tensors) if any tensor is non-finite."""
    bad = nonfinite_tensors(obj)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise NonFiniteWeightsError(
            f"{source}: non-finite (NaN/inf) {what} in {', '.join(bad[:3])}{more}; a diverged model is refused"
        )


def tensor_scales(state: dict) -> dict[str, float]:
    """``{name: max|x|}`` of the floating tensors of a state dict (the reference scales of :func:`absurd_tensors`)."""
    return {
        k: float(v.detach().abs().max()) if v.numel() else 0.0
        for k, v in state.items()
        if torch.is_tensor(v) and v.is_floating_point()
    }


def initial_scales(kind: str, size: str, **model_kwargs) -> dict[str, float]:
    """:func:`tensor_scales` of a freshly initialised ``kind``/``size`` model (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        return tensor_scales(build_model(kind, size, **model_kwargs).state_dict())


def absurd_tensors(state: dict, initial: dict[str, float]) -> list[str]:
    """``"name (max |x| = V)"`` for every tensor of ``state`` with max|x| > ABSURD_FACTOR * max(1, initial[name])."""
    scales = tensor_scales(state)
    return [f"{k} (max |x| = {v:.3g})" for k, v in scales.items() if v > ABSURD_FACTOR * max(1.0, initial.get(k, 1.0))]


def require_sane(state: dict, initial: dict[str, float], source: str, what: str = "weights") -> None:
    """:func:`require_finite`, then raise :class:`AbsurdWeightsError` (one line, up to 3 tensors) for exploded
    finite values (:func:`absurd_tensors`)."""
    require_finite(state, source, what)
    bad = absurd_tensors(state, initial)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise AbsurdWeightsError(
            f"{source}: exploded {what} in {', '.join(bad[:3])}{more}, beyond {ABSURD_FACTOR:.0e} x their initial "
            "scale; a diverged model is refused"
        )


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
    (:func:`meru.models.adapters.load_released` with format ``official``)."""
    from meru.models.adapters import load_released

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
    """Load our checkpoint (detected by its ``format`` field) or a released one (:func:`meru.models.adapters.
    load_released`; ``entry``: its ``pretrained.checkpoints`` entry, which names the format, kind, size and model
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
        from meru.models.adapters import load_released

        model = load_released(path, blob, entry or {})
    return model.eval()
