"""The records stages hand each other, with one owner: this module.

``meru embed`` -> :class:`EmbeddingCache` -> ``meru evaluate`` -> :class:`MetricRecord` -> ``meru tables`` /
``plots`` / ``claims`` / ``reproduce``. Each record has explicit typed fields, one file format (named by
``FORMAT``), one writer (atomic, :mod:`meru.io`) and one reader that checks the format and names the file
and the fix when it is wrong. The dataset name and the run label travel as fields; nothing downstream
parses them back from file names.

This module sits below the models (it imports only :mod:`meru.io` and :mod:`meru.spaces`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meru.io import read_json, write_json

# ----------------------------------------------------------------------------------------- embedding cache
# EmbeddingCache: written by meru.evaluation.embed, read by every evaluator (section owned by the
# embedding-cache change).


# ------------------------------------------------------------------------------------------- metric record
# MetricRecord: returned (as parts) by every evaluator, assembled and written by meru.evaluation.run,
# read by meru.reporting (section owned by the metric-record change).

METRIC_FORMAT = "meru-bench/metrics/1"
CLIP_BENCHMARK_SUFFIX = ".clip_benchmark.json"  # clip-benchmark's result file beside each record: not a record


class RecordError(ValueError):
    """A record file that cannot be read; the message (one line) names the file and the fix."""


@dataclass
class Measurement:
    """What every evaluator returns (one shape for every task).

    * ``metrics``: ``{name: float | None}``, the headline numbers (None: undefined on this data);
    * ``intervals``: ``{name: [lo, hi]}``, 95% percentile bootstrap intervals over the test items;
    * ``n``: number of test items (images);
    * ``per_item``: ``{name: list}``, per-item outcomes for paired statistics, each over the task's items
      (images; retrieval ``t2i_rank``: captions; HierarCaps ``depth_tau``: hierarchies); reporting pairs them
      only where their mean (of ``correct``, ``correct_topK``, ``rank < K`` or the list named after the
      metric) reproduces the metric;
    * ``plot``: what the figures need (structure: ``histogram``, ``text_root_by_specificity`` / ``_by_depth``;
      traversal: ``paths`` and ``per_step``);
    * ``details``: other facts of the task (``n_texts``, ``n_classes``, ``n_mistakes``, ``root``, pair counts,
      p-values, probe cost, prompt-set descriptions, ...).
    """

    metrics: dict[str, float | None]
    intervals: dict[str, list] = field(default_factory=dict)
    n: int = 0
    per_item: dict[str, list] = field(default_factory=dict)
    plot: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def update(self, other: Measurement) -> Measurement:
        """Add ``other``'s metrics, intervals, per-item data, plot data and details (``n`` stays); returns self."""
        for name in ("metrics", "intervals", "per_item", "plot", "details"):
            getattr(self, name).update(getattr(other, name))
        return self


@dataclass
class Provenance:
    """Input files of a metric record (None where the task has no such input)."""

    checkpoint: str | None = None
    embeddings: str | None = None
    text_pool: str | None = None
    tree: str | None = None
    train_embeddings: str | None = None


IDENTITY = ("kind", "size", "seed", "label", "dataset", "task", "geometry")
MEASUREMENT = tuple(f.name for f in dataclasses.fields(Measurement))


@dataclass
class MetricRecord:
    """One evaluation of one model on one dataset: the file ``meru evaluate --out M.json`` writes.

    Identity: ``kind`` (meru, clip, euclip, ...), ``size``, ``seed`` (training seed; 0 for released
    checkpoints), ``label`` (the run name, e.g. ``meru-cpu-conv-s0``), ``dataset`` (the embedding cache's
    dataset name, e.g. ``synthhier-shape``), ``task`` (``meru evaluate --task``), ``geometry``
    (``{"space", "root_distance"}``: what distances from [ROOT] measure, with unit); the :class:`Measurement`
    fields; ``provenance`` (:class:`Provenance`). ``path``: where it was read from (not written).
    """

    kind: str
    size: str
    seed: int
    label: str
    dataset: str
    task: str
    geometry: dict[str, str]
    metrics: dict[str, float | None]
    intervals: dict[str, list] = field(default_factory=dict)
    n: int = 0
    per_item: dict[str, list] = field(default_factory=dict)
    plot: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    format: str = METRIC_FORMAT
    path: Path | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, measurement: Measurement, provenance: Provenance | None = None, **identity) -> MetricRecord:
        """A record from an evaluator's :class:`Measurement`, the identity fields and the inputs."""
        return cls(**identity, **dataclasses.asdict(measurement), provenance=provenance or Provenance())

    def to_dict(self) -> dict:
        out = {"format": self.format}
        out.update({k: getattr(self, k) for k in IDENTITY + MEASUREMENT})
        out["provenance"] = dataclasses.asdict(self.provenance)
        return out

    def write(self, path: str | os.PathLike) -> Path:
        """Strict JSON (non-finite numbers -> null), written atomically."""
        return write_json(path, self.to_dict(), nonfinite="null")

    @classmethod
    def from_dict(cls, data: Any, path: str | os.PathLike = "<record>") -> MetricRecord:
        if not isinstance(data, dict) or data.get("format") != METRIC_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise RecordError(
                f"{path}: not a metric record (format {found!r}, expected {METRIC_FORMAT!r}); "
                "delete it and re-run the `meru evaluate` rule that writes it"
            )
        fields = {f.name for f in dataclasses.fields(cls)} - {"path"}
        missing = sorted(set(IDENTITY) - set(data) | ({"metrics", "provenance"} - set(data)))
        unknown = sorted(set(data) - fields)
        if missing or unknown:
            raise RecordError(
                f"{path}: metric record with missing {missing} / unknown {unknown} fields; "
                "re-run the `meru evaluate` rule that writes it"
            )
        prov = data["provenance"]
        try:
            provenance = Provenance(**prov)
        except TypeError as err:
            raise RecordError(f"{path}: bad provenance {prov!r} ({err}); re-run `meru evaluate`") from None
        return cls(**{**data, "provenance": provenance}, path=Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> MetricRecord:
        """Read one record; :class:`RecordError` (one line naming the file and the fix) when it is not one."""
        try:
            data = read_json(path)
        except ValueError as err:  # json.JSONDecodeError, NaN/Infinity literals, bad UTF-8
            msg = str(err).splitlines()[0]
            raise RecordError(
                f"{path}: not valid strict JSON ({msg}); delete it and re-run the rule that wrote it"
            ) from None
        return cls.from_dict(data, path)


def load_metric_records(directory: str | os.PathLike) -> list[MetricRecord]:
    """Every metric record under ``directory`` (``*.json``, recursive, sorted by path; clip-benchmark side
    files ``*.clip_benchmark.json`` skipped). Any other JSON is an error naming the file."""
    return [
        MetricRecord.load(p)
        for p in sorted(Path(directory).rglob("*.json"))
        if not p.name.endswith(CLIP_BENCHMARK_SUFFIX) and not p.name.startswith(".")
    ]
