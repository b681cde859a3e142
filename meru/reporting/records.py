"""Metric records as the reporting layer sees them: loading, model kinds, display names, colours.

Reporting reads only the metric records that ``meru evaluate`` writes (:class:`meru.records.MetricRecord`,
loaded with :func:`meru.records.load_metric_records`; the clip-benchmark side files are skipped) and reads
their fields exactly. A model is identified by its name (``MetricRecord.model_name``: the kind, or a config variant
such as ``meru-noentail``) and shown by its display name (``MetricRecord.model_display``); colours come from its kind
(``meru.kinds.KINDS`` and others); what its distances from [ROOT] measure comes from each record's ``geometry``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from meru.kinds import BASELINE, KINDS
from meru.records import MetricRecord

KIND_NAMES = {k.name: k.display_name for k in KINDS.values()}
KIND_COLORS = {k.name: k.color for k in KINDS.values()}
_FALLBACK_COLORS = ("tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
# BASELINE (meru.kinds): comparisons are "KIND - CLIP" for every other kind present
SIZE_ORDER = ("tiny", "small-cpu", "vit-s16", "vit-b16", "vit-l16")
SEED_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SEED_LINESTYLES = ("-", "--", ":", "-.")


def metrics_dir_missing(directory: str | os.PathLike, command: str) -> bool:
    """True (after printing the fix to stderr) when ``--metrics`` is not a directory; for the CLIs."""
    if Path(directory).is_dir():
        return False
    print(
        f"meru {command}: error: --metrics {directory} is not a directory; run the evaluation rules first",
        file=sys.stderr,
    )
    return True


def kind_name(kind: str) -> str:
    return KIND_NAMES.get(kind, kind.upper())


def kind_order(kinds) -> list[str]:
    """The baseline (CLIP) first, then the other kinds alphabetically."""
    kinds = set(kinds)
    return ([BASELINE] if BASELINE in kinds else []) + sorted(kinds - {BASELINE})


def natural_key(name: str) -> tuple:
    """Sort key that orders the numbers inside a name by value (``meru-b64`` before ``meru-b128``)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)


def model_order(models) -> list[str]:
    """Model names in display order: the baseline (CLIP) first, then the others in natural order
    (:func:`natural_key`); for plain kinds the order of :func:`kind_order`."""
    models = set(models)
    return ([BASELINE] if BASELINE in models else []) + sorted(models - {BASELINE}, key=natural_key)


def model_displays(records) -> dict[str, str]:
    """``{model name: display name}`` of the records (the first record of each name decides)."""
    out: dict[str, str] = {}
    for r in records:
        out.setdefault(r.model_name, r.model_display)
    return out


def model_colors(records) -> dict[str, str]:
    """``{model name: colour}``: the colour of each model's kind (:func:`kind_colors`)."""
    kinds = {}
    for r in records:
        kinds.setdefault(r.model_name, r.kind)
    colors = kind_colors(kinds.values())
    return {m: colors[k] for m, k in kinds.items()}


def size_order(sizes) -> list[str]:
    return sorted(set(sizes), key=lambda s: (SIZE_ORDER.index(s) if s in SIZE_ORDER else len(SIZE_ORDER), s))


def kind_colors(kinds) -> dict[str, str]:
    """Fixed colour per known kind; unknown kinds get the fallback palette in sorted order."""
    out, spare = {}, iter(_FALLBACK_COLORS * 4)
    for k in sorted(set(kinds)):
        out[k] = KIND_COLORS.get(k) or next(spare)
    return out


def root_distance_label(rec: MetricRecord) -> str:
    """Axis label (with unit) of a record's "distance from [ROOT]": its ``geometry["root_distance"]``."""
    return rec.geometry["root_distance"]
