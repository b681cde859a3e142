"""A run's headline metrics against a reference (``meru reproduce``), and the committed reference run
itself (``meru reference refresh``, :mod:`meru.reporting.reference`).

A *reference* is one of two things, compared by one code path (:func:`compare`):

* a reference run — a directory with a finished run's ``metrics/`` (``results/reference/default``,
  written by ``meru reference refresh``): for every headline metric (``resources/headline_metrics.csv``)
  and (kind, size), the S seed values r_1..r_S with their 95% bootstrap intervals;
* published values — rows of ``resources/reference_values.csv`` (one value each: S = 1, no interval),
  for the released checkpoints (``configs/pretrained.yaml``) or a paper-scale run.

Decision rule (docs/METRICS.md, "Reproduction"). For one key with reference values r_s and the fresh
run's seed values f_t (mean f̄):

    tol    = max( sd(r_s) [S > 1], mean half-width of the reference seeds' bootstrap intervals,
                  mean half-width of the fresh seeds' bootstrap intervals, floor(metric) )
    within <=> min_s r_s - tol <= f̄ <= max_s r_s + tol

with floor = 1 point for metrics in %, 0.01 for metrics in [0, 1] or [-1, 1], and 1% of |mean r|
otherwise (distances, tree-induced error). A run is "reproduced" when every compared key is within.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from meru.io import write_text
from meru.kinds import BASELINE, PAPER
from meru.records import MetricRecord, load_metric_records
from meru.reporting.outputs import released_run, trained_run
from meru.reporting.records import metrics_dir_missing
from meru.reporting.tables import metric_scale
from meru.arguments import add_reproduce_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru.arguments import PUBLISHED_CSV  # noqa: F401  (light: fast --help)

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
HEADLINE_CSV = RESOURCES / "headline_metrics.csv"
PUBLISHED_COLUMNS = ["model", "size", "training_data", "task", "dataset", "metric", "value", "source", "notes"]
# one published number's identity; optional columns: protocol (what the source measured differently from us),
# conflict (how its value disagrees with another source's for the same checkpoint: required where values differ)
PUBLISHED_KEY = ("model", "size", "training_data", "task", "dataset", "metric")
COLUMNS = [
    "kind",
    "size",
    "training_data",
    "task",
    "dataset",
    "metric",
    "reference",
    "ref_min",
    "ref_max",
    "ref_n",
    "fresh",
    "fresh_n",
    "diff",
    "tol",
    "low",
    "high",
    "within",
    "source",
    "notes",
]
# what `meru reference refresh` copies from a finished run (tables/reproduction.* excluded: a reference
# is compared against, it does not carry its own comparison)
REFERENCE_CONTENT = (
    "PROVENANCE.md",
    "metrics",
    "tables",
    "plots",
    "data",
    "logs",
    "benchmarks/train",
    "benchmarks/embed",
    "study",  # a study config's tables and figure (meru study); absent in other runs
)
REQUIRED_TABLES = ("zeroshot.csv", "claims.csv", "reproduction.csv")
_PERCENT = ("top1", "top5", "mean_per_class", "acc1", "acc5", "accuracy", "acc")


class ReferenceError(ValueError):
    """A reference that cannot be used (missing, incomplete); the message names the path and the fix."""


# --------------------------------------------------------------------------- metric records


def kinds_of(records: list[MetricRecord]) -> list[str]:
    """Model names present (``MetricRecord.model_name``: a kind or a config variant of one), MERU first, CLIP second,
    any others alphabetically. Models are not filtered: whatever the run has is compared."""
    present = {r.model_name for r in records}
    order = [k for k in (PAPER, BASELINE) if k in present]
    return order + sorted(present - set(order))


def headline_metrics(path: str | os.PathLike = HEADLINE_CSV) -> pd.DataFrame:
    """The headline list with its floors: task, dataset, metric, floor_kinds ('all' | kinds | ''), floor_op, floor."""
    df = pd.read_csv(path, dtype={"floor_kinds": str, "floor_op": str}, keep_default_na=False)
    df["floor"] = pd.to_numeric(df["floor"].replace("", np.nan))
    return df


def floors(path: str | os.PathLike = HEADLINE_CSV) -> list[dict]:
    """The minimum bars on a reference run's metrics: ``{task, dataset, metric, kinds, op, floor}`` (op '>=' or '<=')."""
    out = []
    for r in headline_metrics(path).itertuples(index=False):
        if r.floor_op:
            kinds = None if r.floor_kinds in ("", "all") else r.floor_kinds.split("|")
            out.append(
                {
                    "task": r.task,
                    "dataset": r.dataset,
                    "metric": r.metric,
                    "kinds": kinds,
                    "op": r.floor_op,
                    "floor": float(r.floor),
                }
            )
    return out


def seed_values(records: list[MetricRecord], keys: set[tuple[str, str, str]] | None = None) -> dict:
    """``{(model name, size, task, dataset, metric): [(seed, value, lo, hi), ...]}`` for numeric metrics.

    keys: ``{(task, dataset, metric)}`` to keep (None = all). ``lo``/``hi`` are the record's bootstrap
    interval (None when it has none). A repeated (key, seed) raises naming both files.
    """
    out: dict = {}
    seen: dict = {}
    for rec in records:
        for metric, value in rec.metrics.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                continue
            if keys is not None and (rec.task, rec.dataset, metric) not in keys:
                continue
            key = (rec.model_name, rec.size, rec.task, rec.dataset, metric)
            seed = rec.seed
            if (key, seed) in seen:
                raise ValueError(
                    f"two metric files for one seed: {seen[(key, seed)]} and {rec.path}; remove the stale one"
                )
            seen[(key, seed)] = rec.path
            lo, hi = rec.intervals.get(metric, [None, None])  # not every metric has an interval
            out.setdefault(key, []).append((seed, float(value), lo, hi))
    return out


# --------------------------------------------------------------------------- references


def reference_from_run(directory: str | os.PathLike, training_data: str = "") -> pd.DataFrame:
    """Reference rows from a reference run's ``metrics/``: headline metrics, per (kind, size), all seeds."""
    metrics = Path(directory) / "metrics"
    if not metrics.is_dir():
        raise ReferenceError(
            f"reference run {directory}: no metrics/ directory; "
            f"fill it with `meru reference refresh --from RESULTS --to {directory}`"
        )
    head = headline_metrics()
    keys = set(zip(head.task, head.dataset, head.metric))
    rows = []
    for (kind, size, task, dataset, metric), vals in sorted(seed_values(load_metric_records(metrics), keys).items()):
        rows.append(
            {
                "kind": kind,
                "size": size,
                "training_data": training_data,
                "task": task,
                "dataset": dataset,
                "metric": metric,
                "values": [v for _, v, _, _ in vals],
                "halfwidths": _halfwidths(vals),
                "source": f"{directory} ({len(vals)} seeds)",
                "notes": "",
            }
        )
    if not rows:
        raise ReferenceError(
            f"reference run {directory}: no headline metric in {metrics}; refresh it from a finished run"
        )
    return pd.DataFrame(rows)


def read_published(path: str | os.PathLike = PUBLISHED_CSV) -> pd.DataFrame:
    """resources/reference_values.csv, checked: every row has a value and a source."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in PUBLISHED_COLUMNS if c not in df.columns]
    if missing:
        raise ReferenceError(f"{path}: missing columns {missing}; expected {','.join(PUBLISHED_COLUMNS)}")
    for i, r in df.iterrows():
        if not r["source"].strip():
            raise ReferenceError(f"{path}, row {i + 2}: no source; every published value must name where it was read")
        try:
            finite = math.isfinite(float(r["value"]))
        except ValueError:
            finite = False
        if not finite:
            raise ReferenceError(f"{path}, row {i + 2}: value {r['value'][:80]!r} is not a finite number") from None
    _check_disagreements(df, path)
    return df


def _check_disagreements(df: pd.DataFrame, path) -> None:
    """One row per (key, source); rows of one key whose values differ each say so in ``conflict``."""
    seen: dict = {}
    for i, r in df.iterrows():
        key = tuple(r[c] for c in PUBLISHED_KEY)
        if (key, r["source"]) in seen:
            raise ReferenceError(
                f"{path}, rows {seen[(key, r['source'])] + 2} and {i + 2}: the same value key from the same source "
                "twice; keep one"
            )
        seen[(key, r["source"])] = i
    conflict = df["conflict"] if "conflict" in df.columns else pd.Series("", index=df.index)
    values = df.groupby(list(PUBLISHED_KEY))["value"].transform(lambda v: v.astype(float).nunique())
    unsaid = df.index[(values > 1) & (conflict.str.strip() == "")]
    if len(unsaid):
        r = df.loc[unsaid[0]]
        raise ReferenceError(
            f"{path}, row {unsaid[0] + 2}: {r['model']} {r['size']} {r['dataset']} {r['metric']} = {r['value']} "
            "disagrees with another source's row; say so in its conflict column"
        )


def run_size(size: str, training_data: str, run_training_data: str) -> str:
    """The ``size`` field our records carry for a published (size, training data): released checkpoints
    trained on other data than the run's are evaluated as ``{size}-{data}`` (label ``{kind}-{size}-{data}-released``)."""
    return size if training_data in ("", run_training_data) else f"{size}-{training_data}"


def reference_from_published(
    path: str | os.PathLike = PUBLISHED_CSV, run_training_data: str = "redcaps"
) -> pd.DataFrame:
    """Reference rows from published values (S = 1, no interval); sizes mapped by :func:`run_size`."""
    rows = []
    for r in read_published(path).itertuples(index=False):
        rows.append(
            {
                "kind": r.model,
                "size": run_size(r.size, r.training_data, run_training_data),
                "training_data": r.training_data,
                "task": r.task,
                "dataset": r.dataset,
                "metric": r.metric,
                "values": [float(r.value)],
                "halfwidths": [],
                "source": r.source,
                "notes": r.notes,
            }
        )
    return pd.DataFrame(rows)


def _halfwidths(vals) -> list[float]:
    return [(hi - lo) / 2 for _, _, lo, hi in vals if lo is not None and hi is not None]


def metric_floor(task: str, metric: str, ref_mean: float) -> float:
    """Smallest tolerance (module docstring): 1 point in %, 0.01 on [0, 1] / [-1, 1] scales, else 1% of |ref|.
    The scale is the unit of the table that shows the metric (:func:`meru.reporting.tables.metric_scale`);
    metrics no table shows (published clip-benchmark names, HierarCaps) go by their names."""
    scale = metric_scale(task, metric)
    if scale == (0.0, 100.0) or (scale is None and (metric in _PERCENT or re.fullmatch(r"(i2t|t2i)_r\d+", metric))):
        return 1.0
    if scale is not None or metric.endswith(("_frac", "_auc")) or metric.startswith(("spearman", "kendall")):
        return 0.01
    return 0.01 * abs(ref_mean)


# --------------------------------------------------------------------------- comparison


def compare(reference: pd.DataFrame, records: list[MetricRecord]) -> pd.DataFrame:
    """One row per reference key: reference, fresh, diff, tolerance, within (None = not evaluated)."""
    fresh = seed_values(records)
    rows = []
    for ref in reference.itertuples(index=False):
        r = np.asarray(ref.values, float)
        ref_mean = float(r.mean())
        vals = fresh.get((ref.kind, ref.size, ref.task, ref.dataset, ref.metric), [])
        row = {
            "kind": ref.kind,
            "size": ref.size,
            "training_data": ref.training_data,
            "task": ref.task,
            "dataset": ref.dataset,
            "metric": ref.metric,
            "reference": ref_mean,
            "ref_min": float(r.min()),
            "ref_max": float(r.max()),
            "ref_n": len(r),
            "fresh": None,
            "fresh_n": len(vals),
            "diff": None,
            "tol": None,
            "low": None,
            "high": None,
            "within": None,
            "source": ref.source,
            "notes": ref.notes,
        }
        if vals:
            f = float(np.mean([v for _, v, _, _ in vals]))
            tol = max(
                [float(r.std(ddof=1)) if len(r) > 1 else 0.0, metric_floor(ref.task, ref.metric, ref_mean)]
                + [float(np.mean(h)) for h in (ref.halfwidths, _halfwidths(vals)) if len(h)]
            )
            low, high = float(r.min()) - tol, float(r.max()) + tol
            row.update(fresh=f, diff=f - ref_mean, tol=tol, low=low, high=high, within=bool(low <= f <= high))
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _name(r) -> str:
    return f"{r['kind']}-{r['size']} {r['task']} {r['dataset']} {r['metric']}"


def summary(df: pd.DataFrame, what: str) -> str:
    """One line: 'reproduced ...' or 'differs, N of M metrics outside the spread: ...' (+ not evaluated)."""
    if df is None:
        return f"no reference for this config ({what}): nothing compared"
    done = df[df.within.notna()]
    missing = len(df) - len(done)
    tail = f"; {missing} reference value(s) not evaluated by this run" if missing else ""
    if not len(done):
        return f"nothing compared: none of the {len(df)} reference values has a counterpart in this run ({what}){tail}"
    out = done[~done.within.astype(bool)]
    if not len(out):
        return f"reproduced: all {len(done)} metrics within the reference's spread ({what}){tail}"
    names = ", ".join(_name(r) for _, r in out.head(8).iterrows()) + (", ..." if len(out) > 8 else "")
    return f"differs, {len(out)} of {len(done)} metrics outside the spread ({what}): {names}{tail}"


def _num(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def markdown(df: pd.DataFrame | None, line: str, what: str) -> str:
    head = (
        f"## reproduction\n\nReference: {what}. Rule: within = the fresh seed mean lies in "
        '[min(reference) − tol, max(reference) + tol] (docs/METRICS.md, "Reproduction").\n\n'
        f"Summary: {line}\n"
    )
    if df is None or not len(df):
        return head
    disp = pd.DataFrame(
        {
            "model": df.kind,
            "size": df["size"],
            "data": df.training_data,
            "task": df.task,
            "dataset": df.dataset,
            "metric": df.metric,
            "reference": [
                _num(m) if n == 1 else f"{_num(m)} [{_num(lo)}, {_num(hi)}]"
                for m, lo, hi, n in zip(df.reference, df.ref_min, df.ref_max, df.ref_n)
            ],
            "fresh": [_num(v) for v in df.fresh],
            "diff": [_num(v) for v in df["diff"]],
            "allowed": [
                "" if lo is None or pd.isna(lo) else f"[{_num(lo)}, {_num(hi)}]" for lo, hi in zip(df.low, df.high)
            ],
            "within": ["not evaluated" if w is None or pd.isna(w) else ("yes" if w else "**no**") for w in df.within],
            "source": df.source,
            "notes": df.notes,
        }
    )
    return head + "\n" + disp.to_markdown(index=False) + "\n"


def reproduce(
    metrics_dir,
    reference: str | None,
    out_dir,
    training_data: str = "",
    published_csv: str | os.PathLike = PUBLISHED_CSV,
) -> tuple[pd.DataFrame | None, str]:
    """Write ``reproduction.{csv,md}`` under ``out_dir``; return (table or None, summary line).

    reference: a reference-run directory, ``"published"`` (resources/reference_values.csv) or None/"none".
    """
    records = load_metric_records(metrics_dir)
    if reference in (None, "", "none"):
        df, what = None, "none configured"
    elif reference == "published":
        what = f"published values, {Path(published_csv).name}"
        df = compare(reference_from_published(published_csv, training_data or "redcaps"), records)
    else:
        what = f"reference run {reference}"
        df = compare(reference_from_run(reference, training_data), records)
    line = summary(df, what)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "reproduction.csv", (df if df is not None else pd.DataFrame(columns=COLUMNS)).to_csv(index=False))
    write_text(out / "reproduction.md", markdown(df, line, what))
    return df, line


# --------------------------------------------------------------------------- refreshing the reference


def _provenance_config(run: Path) -> dict:
    text = (run / "PROVENANCE.md").read_text()
    m = re.search(r"```json\n(.*?)\n```", text, re.DOTALL)
    if not m:
        raise ReferenceError(f"{run}/PROVENANCE.md: no ```json config block; re-run the provenance rule")
    return json.loads(m.group(1))


def expected_labels(cfg: dict) -> list[str]:
    """Run labels a config evaluates (the same rule as workflow/rules/common.smk's ``runs``)."""
    if cfg.get("pretrained"):
        return [released_run(c)["label"] for c in cfg["pretrained"]["checkpoints"]]
    return [trained_run(k, s, n)["label"] for s in cfg["sizes"] for k in cfg["models"] for n in cfg["seeds"]]


def check_complete(run: str | os.PathLike) -> list[str]:
    """Problems that make ``run`` (a results directory) unfit as a reference; empty when complete."""
    run = Path(run)
    if not (run / "PROVENANCE.md").is_file():
        return [f"{run}/PROVENANCE.md missing (the run did not finish)"]
    problems = []
    cfg = _provenance_config(run)
    names = {}
    for label in expected_labels(cfg):
        files = sorted(p.name for p in (run / "metrics" / label).glob("*.json"))
        if not files:
            problems.append(f"{run}/metrics/{label}/ has no metric JSON")
        names[label] = files
    if len({tuple(v) for v in names.values() if v}) > 1:
        problems.append(
            f"{run}/metrics: runs have different evaluations: "
            + "; ".join(f"{k}: {len(v)} files" for k, v in names.items())
        )
    problems += [f"{run}/tables/{t} missing" for t in REQUIRED_TABLES if not (run / "tables" / t).is_file()]
    if not list((run / "plots").glob("*.png")):
        problems.append(f"{run}/plots/ has no PNG")
    return problems


# --------------------------------------------------------------------------- CLIs


def run(args) -> int:
    if metrics_dir_missing(args.metrics, "reproduce"):
        return 2
    try:
        _, line = reproduce(args.metrics, args.reference, args.out, args.training_data, args.published)
    except (ReferenceError, ValueError) as err:
        print(f"meru reproduce: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}/reproduction.md: {line}")
    return 0
