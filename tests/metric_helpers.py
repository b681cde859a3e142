"""Helpers for the reporting tests: metric records built in code and written as ``meru evaluate`` writes them."""

from __future__ import annotations

from pathlib import Path

from meru.records import MetricRecord

GEOMETRY = {
    "meru": {"space": "lorentz", "root_distance": "geodesic distance from the origin"},
    "clip": {"space": "sphere", "root_distance": "angle to the mean text direction (rad)"},
    "euclip": {"space": "euclidean", "root_distance": "Euclidean norm"},
}


def record(
    kind: str, seed: int = 0, task: str = "zeroshot", dataset: str = "synthhier-shape", size: str = "tiny", **fields
):
    """A :class:`MetricRecord` with label ``{kind}-{size}-s{seed}`` and the kind's geometry (overridable)."""
    fields.setdefault("metrics", {})
    fields.setdefault("geometry", GEOMETRY.get(kind, {"space": kind, "root_distance": "distance (a.u.)"}))
    fields.setdefault("label", f"{kind}-{size}-s{seed}")
    return MetricRecord(kind=kind, size=size, seed=seed, dataset=dataset, task=task, **fields)


def write(directory: Path, rec: MetricRecord, name: str | None = None) -> Path:
    """Write ``rec`` to ``directory/LABEL/NAME`` (default ``TASK-DATASET.json``) and return the path."""
    return rec.write(Path(directory) / rec.label / (name or f"{rec.task}-{rec.dataset}.json"))
