"""`meru track --config CONFIG --metrics DIR --out TSV`: every metric record's values to the experiment
trackers of the config's ``tracking:`` section (:mod:`meru.training.tracking`), in the run of the record's
label, the one its training logged ``train/*`` to. Tags ``eval/<task>/<dataset>/<metric>``, one value per run,
at step 0 (a metric record evaluates one final checkpoint). ``--out`` lists what was logged (label, tag, value)."""

from __future__ import annotations

import argparse
import math
from collections import defaultdict

from meru.config import load_tracking_config
from meru.io import write_text
from meru.records import MetricRecord, load_metric_records
from meru.reporting.records import metrics_dir_missing
from meru.training.tracking import open_trackers
from meru.arguments import add_track_arguments as add_arguments  # noqa: F401  (light: fast --help)


def metric_scalars(rec: MetricRecord) -> dict[str, float]:
    """``{eval/<task>/<dataset>/<metric>: value}`` of a record's finite headline metrics."""
    return {
        f"eval/{rec.task}/{rec.dataset}/{key}": float(value)
        for key, value in rec.metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def track_metrics(section: dict | None, records: list[MetricRecord]) -> list[tuple[str, str, float]]:
    """Log ``records`` to the trackers of ``section``, one tracker run per label; returns (label, tag, value)."""
    by_label: dict[str, list[MetricRecord]] = defaultdict(list)
    for rec in records:
        by_label[rec.label].append(rec)
    logged = []
    for label, recs in sorted(by_label.items()):
        trackers = open_trackers(section, label)
        try:
            for rec in recs:
                values = metric_scalars(rec)
                trackers.log(values, 0)
                logged += [(label, tag, value) for tag, value in values.items()]
        finally:
            trackers.close()
    return logged


def run(args: argparse.Namespace) -> int:
    section = load_tracking_config(args.config)
    if metrics_dir_missing(args.metrics, "track"):
        return 2
    logged = track_metrics(section, load_metric_records(args.metrics)) if section and section["backends"] else []
    rows = ["label\ttag\tvalue"] + [f"{label}\t{tag}\t{value!r}" for label, tag, value in logged]
    write_text(args.out, "\n".join(rows) + "\n")
    backends = ", ".join(section["backends"]) if section and section["backends"] else "none configured"
    print(f"meru track: {len(logged)} values of {len({r[0] for r in logged})} runs -> {backends}")
    return 0
