"""Metric records as the reporting layer sees them: loading, model kinds, display names, colours.

Reporting reads only the metric JSON files that ``meru evaluate`` writes (``*.json`` with ``"kind"``,
``"task"`` and ``"metrics"``; the clip-benchmark side files ``*.clip_benchmark.json`` are skipped). Model
kinds are whatever the records say (meru, clip, euclip, ...); nothing here knows a kind's geometry
beyond a default axis label used when a record carries no ``"geometry"`` field.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

KIND_NAMES = {"meru": "MERU", "clip": "CLIP", "euclip": "EuCLIP"}
KIND_COLORS = {"clip": "tab:blue", "meru": "tab:red", "euclip": "tab:green"}
_FALLBACK_COLORS = ("tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
BASELINE = "clip"  # comparisons are "KIND - CLIP" for every other kind present
SIZE_ORDER = ("tiny", "small-cpu", "vit-s16", "vit-b16", "vit-l16")
SEED_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SEED_LINESTYLES = ("-", "--", ":", "-.")
# default "distance from [ROOT]" label by kind, used only when a record has no "geometry" field
DEFAULT_ROOT_DISTANCE = {
    "meru": "geodesic distance from the origin (hyperboloid)",
    "clip": "angle to the mean caption direction (rad)",
    "euclip": "Euclidean distance from the origin",
}
LABEL_RE = re.compile(r"^(?P<kind>[a-z]+)-(?P<size>[a-z0-9-]+)-(?:s(?P<seed>\d+)|released)$")


def load_metrics(directory: str | os.PathLike) -> list[dict]:
    """Metric records under ``directory`` (recursive, sorted by path), each with ``_path`` added.

    A record needs ``kind`` (str), ``task`` and ``metrics``; files without them (clip-benchmark side
    files, other JSON) are skipped. Bad JSON raises naming the file.
    """
    records = []
    for path in sorted(Path(directory).rglob("*.json")):
        if path.name.endswith(".clip_benchmark.json"):
            continue
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); delete it and re-run the rule that wrote it") from err
        if not isinstance(rec, dict) or "metrics" not in rec or "task" not in rec:
            continue
        kind = rec.get("kind", rec.get("model"))  # records written before "kind" existed name it "model"
        if not isinstance(kind, str) or not kind:
            continue
        rec = dict(rec, kind=kind, _path=str(path))
        rec.setdefault("size", "?")
        rec["seed"] = int(rec.get("seed") or 0)
        records.append(rec)
    return records


def metrics_dir_missing(directory: str | os.PathLike, command: str) -> bool:
    """True (after printing the fix to stderr) when ``--metrics`` is not a directory; for the CLIs."""
    if Path(directory).is_dir():
        return False
    print(f"meru {command}: --metrics {directory} is not a directory; run the evaluation rules first", file=sys.stderr)
    return True


def kind_name(kind: str) -> str:
    return KIND_NAMES.get(kind, kind.upper())


def kind_order(kinds) -> list[str]:
    """The baseline (CLIP) first, then the other kinds alphabetically."""
    kinds = set(kinds)
    return ([BASELINE] if BASELINE in kinds else []) + sorted(kinds - {BASELINE})


def size_order(sizes) -> list[str]:
    return sorted(set(sizes), key=lambda s: (SIZE_ORDER.index(s) if s in SIZE_ORDER else len(SIZE_ORDER), s))


def kind_colors(kinds) -> dict[str, str]:
    """Fixed colour per known kind; unknown kinds get the fallback palette in sorted order."""
    out, spare = {}, iter(_FALLBACK_COLORS * 4)
    for k in sorted(set(kinds)):
        out[k] = KIND_COLORS.get(k) or next(spare)
    return out


def root_distance_label(rec: dict) -> str:
    """Axis label (with unit) of a record's "distance from [ROOT]": ``geometry.root_distance`` when the
    record carries it, else the kind's default, else a generic label naming the record's ``root``."""
    geometry = rec.get("geometry")
    if isinstance(geometry, dict) and isinstance(geometry.get("root_distance"), str):
        return geometry["root_distance"]
    return DEFAULT_ROOT_DISTANCE.get(rec["kind"], f"distance from [ROOT] ({rec.get('root', 'unknown root')})")


def parse_label(label: str) -> dict | None:
    """``{kind}-{size}-s{seed}`` / ``{kind}-{size}-released`` -> ``{"kind", "size", "seed"}`` (None if not a label)."""
    m = LABEL_RE.match(label)
    if not m:
        return None
    return {"kind": m["kind"], "size": m["size"], "seed": int(m["seed"] or 0)}
