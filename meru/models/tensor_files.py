"""Tensor files without models: the safe loader, the atomic writer, and the checks on the weights they carry.

Imports only torch and :mod:`meru.io` (no timm, open_clip or model code), so readers of embedding caches and
metric records (``meru evaluate``) stay light; :mod:`meru.models.checkpoints` re-exports every name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from meru.io import atomic_path


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
