"""Strict JSON output for metrics: no NaN/inf ever reaches a file, and files appear atomically.

:func:`to_jsonable` converts numpy/torch scalars and arrays to plain Python; a non-finite float
either raises (``nonfinite="error"``, the default, naming the key path) or becomes ``null``
(``nonfinite="null"``). :func:`write_json` serialises with ``allow_nan=False`` into a temporary
file in the same directory and renames it over the target, so a crash leaves no finished-looking file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["to_jsonable", "write_json", "read_json"]


def to_jsonable(obj: Any, nonfinite: str = "error", _path: str = "$") -> Any:
    """Recursively convert ``obj`` to JSON-safe Python (dict/list/str/int/float/bool/None).

    Tensors and arrays become (nested) lists, numpy/torch scalars Python scalars, tuples lists, dict
    keys strings. Non-finite floats: ``"error"`` raises ``ValueError`` naming the key path
    (e.g. ``$.metrics.top1``); ``"null"`` writes ``None``.
    """
    if nonfinite not in ("error", "null"):
        raise ValueError(f"nonfinite={nonfinite!r}; choose 'error' or 'null'")
    import torch

    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        obj = obj.tolist() if obj.ndim else obj.item()
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        if nonfinite == "null":
            return None
        raise ValueError(f"non-finite value {obj!r} at {_path}: metric JSON must be strict (no NaN/inf)")
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, nonfinite, f"{_path}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, nonfinite, f"{_path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} at {_path} to JSON")


def write_json(path: str | os.PathLike, obj: Any, nonfinite: str = "error", indent: int | None = 1) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically (temp file in the same directory + rename)."""
    path = Path(path)
    data = json.dumps(to_jsonable(obj, nonfinite), allow_nan=False, indent=indent) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Read strict JSON (``NaN``/``Infinity`` literals are rejected with the file name)."""

    def _bad(tok):
        raise ValueError(f"{path}: contains {tok}, which strict JSON forbids")

    return json.loads(Path(path).read_text(), parse_constant=_bad)
