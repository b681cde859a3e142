"""Paper-layout tables from metric records (``meru tables --metrics DIR --out DIR [--n-boot B]``).

Every table in :data:`SPECS` has one unit. Rows are models x sizes (CLIP first; a model is a model name:
its kind, or a config variant of it), followed by one comparison row ``NAME - CLIP`` per other model present;
columns are datasets (SynthHier: taxonomy levels) or, for the per-dataset metric groups, metrics; blocks
(``\\midrule`` in LaTeX) separate metrics or datasets. For each table ``T`` it writes, atomically:

- ``T.csv``: the wide table with the central numbers (seed mean; difference for comparison rows);
- ``T.md``: the wide table with the statistics below, its notes, and a per-seed section;
- ``T.tex``: the same wide table as a LaTeX ``table`` (booktabs ``\\toprule/\\midrule/\\bottomrule``);
- ``T.html``: the Markdown content as a standalone page (shown in ``snakemake --report``);
- ``T_stats.csv``: every statistic, one row per (block, column, model row or comparison).

Statistics (all from :mod:`meru.stats`; definitions in docs/METRICS.md, "Tables"):

- a model cell with S >= 2 seeds: ``mean ± sd (min–max)`` over seeds (:func:`meru.stats.aggregate_seeds`);
  with S = 1 the seed's value and its 95% bootstrap interval over test items (the metric record's
  ``intervals``). Each seed's bootstrap interval is listed in the per-seed section and ``T_stats.csv``;
  an interval covering the metric's whole range is not printed.
- a comparison cell ``A - B``: the difference of seed means over the seeds both have, a paired bootstrap
  (:func:`meru.stats.paired_bootstrap`, B resamples, p floored at 1/B and printed ``< 1/B``) over the
  items of those seeds pooled (A's seed s item i paired with B's seed s item i), and ``(k/S)``, the seeds
  where A is higher. The test needs per-item data whose mean reproduces the metric (zero-shot and
  linear-probe top-1/top-5, retrieval recall@K, per-item hierarchical metrics); otherwise no test.
- cells where the metric is trivially 100% (top-K accuracy with K >= the number of classes) are dropped.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from meru.arguments import DEFAULT_N_BOOT
from meru.arguments import add_tables_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru import stats
from meru.io import read_json, write_text
from meru.records import CLIP_BENCHMARK_SUFFIX, METRIC_FORMAT, MetricRecord, load_metric_records
from meru.reporting import outputs
from meru.reporting.records import (
    BASELINE,
    metrics_dir_missing,
    model_order,
    root_distance_label,
    size_order,
)

SYNTH_LEVELS = ("category", "family", "shape")
SYNTH_ATTRIBUTES = ("colour", "count", "size", "texture")  # flat zero-shot tasks, columns after the levels

METRIC_LABELS = {
    "top1": "Top-1",
    "top5": "Top-5",
    "mean_per_class": "Mean per-class recall",
    "jaccard": "Jaccard",
    "h_precision": "hP",
    "h_recall": "hR",
    "jaccard_full": "Jaccard (full)",
    "h_precision_full": "hP (full)",
    "h_recall_full": "hR (full)",
    "h_f1_full": "hF1 (full)",
    "tie": "TIE",
    "lca": "LCA",
    "lca_height": "LCA height",
    "mistake_severity": "Mistake severity",
    "spearman_specificity": "Spearman, specificity",
    "kendall_specificity": "Kendall, specificity",
    "spearman_depth": "Spearman, depth",
    "kendall_depth": "Kendall, depth",
    "image_farther_frac": "Image farther than caption",
    "cone_true_frac": "In cone, true pairs",
    "cone_false_frac": "In cone, false pairs",
    "cone_auc": "Cone AUC",
    "image_root_mean": "Image mean",
    "image_root_median": "Image median",
    "text_root_mean": "Caption mean",
    "text_root_median": "Caption median",
    "modality_gap": "Modality gap",
    "monotonic_frac": "Monotonic",
    "precision": "Precision",
    "acc": "Accuracy",
    "acc_macro": "Macro accuracy over groups",
}
_RECALL = re.compile(r"(i2t|t2i)_r(\d+)")
_TOPK = re.compile(r"top(\d+)")


def metric_label(metric: str) -> str:
    m = _RECALL.fullmatch(metric)
    if m:
        return f"R@{m[2]} {'image→text' if m[1] == 'i2t' else 'text→image'}"
    return METRIC_LABELS.get(metric, metric)


def dataset_label(dataset: str) -> str:
    """``synthhier-shape`` -> ``shape`` (SynthHier level), ``synthhier-size`` -> ``size (attribute)`` (a SynthHier
    attribute task; never a bare ``size``, the tables' model-size column), ``synthhier-retrieval`` -> ``synthhier``;
    other names unchanged."""
    if dataset == "synthhier-retrieval":
        return "synthhier"
    name = dataset.removeprefix("synthhier-")
    return f"{name} (attribute)" if name != dataset and name in SYNTH_ATTRIBUTES else name


def _dataset_key(dataset: str):
    """Column order: SynthHier levels coarse to leaf, then its attribute tasks, then other datasets by name."""
    name = dataset.removeprefix("synthhier-") if dataset.startswith("synthhier-") else None
    synth = SYNTH_LEVELS + SYNTH_ATTRIBUTES
    return (synth.index(name), "") if name in synth else (len(synth), dataset_label(dataset))


@dataclass(frozen=True)
class TableSpec:
    """One table: the metrics of one task and one unit; ``by_dataset``: columns = datasets, blocks = metrics
    (else columns = metrics, blocks = datasets)."""

    name: str
    title: str
    unit: str
    task: str
    metrics: tuple[str, ...]
    by_dataset: bool
    digits: int
    comparable: bool = True
    column: Callable[[str, str], str] | None = None  # (dataset, metric) -> column label (overrides by_dataset)
    block: Callable[[str, str], str] | None = None


def _retrieval_column(dataset, metric):
    return f"{dataset_label(dataset)} {'image→text' if metric.startswith('i2t') else 'text→image'}"


def _retrieval_block(dataset, metric):
    return f"R@{_RECALL.fullmatch(metric)[2]}"


SPECS: tuple[TableSpec, ...] = (
    TableSpec(
        "zeroshot", "Zero-shot classification", "accuracy, %", "zeroshot", ("top1", "top5", "mean_per_class"), True, 1
    ),
    TableSpec(
        "retrieval",
        "Zero-shot retrieval",
        "recall, %",
        "retrieval",
        tuple(f"{d}_r{k}" for k in (1, 5, 10) for d in ("i2t", "t2i")),
        True,
        1,
        column=_retrieval_column,
        block=_retrieval_block,
    ),
    TableSpec("linear_probe", "Linear probe", "accuracy, %", "linear-probe", ("top1", "mean_per_class"), True, 1),
    TableSpec(
        "hierarchy",
        "Hierarchical classification of the top-1 prediction: ancestor-set overlap",
        "fraction of tree nodes, 0-1, higher is better",
        "zeroshot",
        ("jaccard", "h_precision", "h_recall", "jaccard_full", "h_precision_full", "h_recall_full", "h_f1_full"),
        False,
        3,
    ),
    TableSpec(
        "hierarchy_distance",
        "Hierarchical classification of the top-1 prediction: tree distance",
        "tree edges (LCA: edges + 1), lower is better",
        "zeroshot",
        ("tie", "lca", "lca_height", "mistake_severity"),
        False,
        2,
    ),
    TableSpec(
        "structure",
        "Embedding structure: rank correlation of a caption's distance from [ROOT] with "
        "its specificity / concept depth",
        "correlation coefficient, -1 to 1",
        "structure",
        ("spearman_specificity", "kendall_specificity", "spearman_depth", "kendall_depth"),
        False,
        3,
    ),
    TableSpec(
        "structure_pairs",
        "Embedding structure: true (caption, image) pairs",
        "fraction of pairs (AUC: probability), 0-1",
        "structure",
        ("image_farther_frac", "cone_true_frac", "cone_false_frac", "cone_auc"),
        False,
        3,
    ),
    TableSpec(
        "root_distance",
        "Distance from [ROOT] in each model's own space (not comparable across geometries; no differences)",
        "each row's unit is in its 'unit' column",
        "structure",
        ("image_root_mean", "image_root_median", "text_root_mean", "text_root_median", "modality_gap"),
        False,
        3,
        comparable=False,
    ),
    TableSpec(
        "traversal",
        "Traversals from an image toward [ROOT]",
        "fraction, 0-1",
        "traversal",
        ("monotonic_frac", "precision"),
        False,
        3,
    ),
    TableSpec(
        "caption_choice",
        "Caption choice (SugarCrepe, ARO): the model's own similarity picks the true caption among hard negatives; "
        "a tie earns 1/(tied captions)",
        "accuracy, %",
        "caption-choice",
        ("acc", "acc_macro"),
        True,
        1,
    ),
)
TABLES = tuple(s.name for s in SPECS)
assert TABLES == outputs.TABLES, "meru.reporting.outputs.TABLES must list SPECS in order"

_RANGES = {"%": (0.0, 100.0), "0-1": (0.0, 1.0), "-1 to 1": (-1.0, 1.0)}


def metric_range(spec: TableSpec) -> tuple[float, float]:
    """Values the table's metrics can take (from its unit); (-inf, inf) when unbounded."""
    for key, rng in _RANGES.items():
        if key in spec.unit:
            return rng
    return -math.inf, math.inf


def metric_scale(task: str, metric: str) -> tuple[float, float] | None:
    """Values ``metric`` of ``task`` can take, from the unit of the table that shows it; None when no table
    shows it (published-only names, HierarCaps) or its unit is unbounded."""
    for spec in SPECS:
        if spec.task == task and metric in spec.metrics:
            rng = metric_range(spec)
            return None if math.isinf(rng[0]) else rng
    return None


def informative(lo, hi, rng: tuple[float, float]) -> bool:
    """False for a missing interval or one that covers the whole range (it says nothing)."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return False
    return not (lo <= rng[0] and hi >= rng[1])


def trivial(rec: MetricRecord, metric: str) -> bool:
    """Top-K accuracy with K >= the number of classes (``details["n_classes"]``) is 100% by construction."""
    m = _TOPK.fullmatch(metric)
    if not m or int(m[1]) == 1:
        return False
    return rec.details["n_classes"] <= int(m[1])


def per_item_values(rec: MetricRecord, metric: str) -> np.ndarray | None:
    """Per-item values whose mean is the metric, from the record's ``per_item`` data (``correct``,
    ``correct_topK``, ``i2t_rank`` / ``t2i_rank``, or a list named after the metric); None when the record has
    none or its mean does not reproduce ``metrics[metric]`` (then no paired test)."""
    pi = rec.per_item
    v = None
    m = _TOPK.fullmatch(metric)
    r = _RECALL.fullmatch(metric)
    if m and int(m[1]) == 1 and "correct" in pi:
        v = 100.0 * np.asarray(pi["correct"], float)
    elif m and f"correct_top{m[1]}" in pi:
        v = 100.0 * np.asarray(pi[f"correct_top{m[1]}"], float)
    elif r and f"{r[1]}_rank" in pi:
        v = 100.0 * (np.asarray(pi[f"{r[1]}_rank"]) < int(r[2])).astype(float)
    elif metric in pi and metric not in ("pred", "label"):
        v = np.asarray(pi[metric], float)
    if v is None or v.size == 0 or not np.all(np.isfinite(v)):
        return None
    target = float(rec.metrics[metric])
    return v if abs(float(v.mean()) - target) <= 1e-6 * max(1.0, abs(target)) else None


def _keys(spec: TableSpec, dataset: str, metric: str) -> tuple[str, str]:
    """(block, column) labels of a (dataset, metric) cell."""
    if spec.column is not None:
        return spec.block(dataset, metric), spec.column(dataset, metric)
    if spec.by_dataset:
        return metric_label(metric), dataset_label(dataset)
    return dataset_label(dataset), metric_label(metric)


def usable_value(rec: MetricRecord, metric: str) -> float | None:
    """``rec.metrics[metric]`` as a float; None when absent or null (a task's metrics vary with its data: no
    cones, no tree, top-K with K >= C). Any other value that is not a finite number (a string, a boolean,
    ``1e999`` read as inf) is refused: ValueError naming the file, the metric and the value."""
    value = rec.metrics.get(metric)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(
            f"{rec.path}: metrics.{metric} = {value!r} is not a finite number, so the table cannot use it; "
            "delete the file and re-run the `meru evaluate` rule that writes it"
        )
    return float(value)


def misnamed_records(metrics_dir: str | os.PathLike) -> list[Path]:
    """Metric records named like a clip-benchmark side file (``*.clip_benchmark.json``), which every reader skips."""
    out = []
    for p in sorted(Path(metrics_dir).rglob(f"*{CLIP_BENCHMARK_SUFFIX}")):
        try:
            data = read_json(p)
        except (OSError, ValueError):
            continue  # not a record either; the comparison of side files reports it
        if isinstance(data, dict) and data.get("format") == METRIC_FORMAT:
            out.append(p)
    return out


def collect(records: list[MetricRecord], spec: TableSpec) -> dict:
    """``{(block, column, model name, size): [seed entries]}`` for one table, in display order.

    A seed entry: ``{"seed", "value", "lo", "hi", "rec", "metric"}``. Trivial cells are dropped (for every
    model, when any record of the cell is trivial); duplicate seeds and unusable values
    (:func:`usable_value`) raise naming the files.
    """
    cells: dict = {}
    order_b, order_c, dropped = {}, {}, set()
    for rec in records:
        if rec.task != spec.task:
            continue
        for metric in spec.metrics:
            value = usable_value(rec, metric)
            if value is None:
                continue
            block, column = _keys(spec, rec.dataset, metric)
            if trivial(rec, metric):
                dropped.add((block, column))
            order_b.setdefault(
                block,
                (spec.metrics.index(metric), _dataset_key(rec.dataset))
                if spec.by_dataset
                else (_dataset_key(rec.dataset), 0),
            )
            order_c.setdefault(
                column,
                (_dataset_key(rec.dataset), spec.metrics.index(metric))
                if spec.by_dataset
                else (spec.metrics.index(metric), _dataset_key(rec.dataset)),
            )
            lo, hi = rec.intervals.get(metric, [None, None])  # not every metric has an interval
            entries = cells.setdefault((block, column, rec.model_name, rec.size), [])
            same = [e for e in entries if e["seed"] == rec.seed]
            if same:
                raise ValueError(
                    f"two metric files for {rec.model_name} {rec.size} seed {rec.seed}: "
                    f"{same[0]['rec'].path} and {rec.path}; remove the stale one"
                )
            entries.append({"seed": rec.seed, "value": float(value), "lo": lo, "hi": hi, "rec": rec, "metric": metric})
    blocks = sorted(order_b, key=order_b.get)
    columns = sorted(order_c, key=order_c.get)
    kinds = model_order(k for (_, _, k, _) in cells)
    sizes = size_order(s for (_, _, _, s) in cells)
    out = {}
    for b in blocks:
        for c in columns:
            if (b, c) in dropped:
                continue
            for s in sizes:
                for k in kinds:
                    if (b, c, k, s) in cells:
                        out[(b, c, k, s)] = sorted(cells[(b, c, k, s)], key=lambda e: e["seed"])
    return out


def model_stats(entries: list[dict]) -> dict:
    """Seed statistics of one model cell (module docstring)."""
    values = [e["value"] for e in entries]
    agg = stats.aggregate_seeds(values)
    return {
        "n_seeds": agg["n"],
        "seeds": [e["seed"] for e in entries],
        "mean": agg["mean"],
        "sd": agg["std"],
        "min": min(values),
        "max": max(values),
        "values": values,
        "seed_lo": [e["lo"] for e in entries],
        "seed_hi": [e["hi"] for e in entries],
    }


def compare(a: list[dict], b: list[dict], n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> dict | None:
    """``A - B`` over the seeds both have: difference of seed means, seeds where A is higher, and the paired
    bootstrap over the pooled (seed, item) pairs when every paired seed has matching per-item data."""
    sa, sb = {e["seed"]: e for e in a}, {e["seed"]: e for e in b}
    common = sorted(set(sa) & set(sb))
    if not common:
        return None
    diff = float(np.mean([sa[s]["value"] for s in common]) - np.mean([sb[s]["value"] for s in common]))
    out = {
        "seeds": common,
        "diff": diff,
        "wins": sum(sa[s]["value"] > sb[s]["value"] for s in common),
        "ci": None,
        "p_value": None,
        "n_items": None,
        "n_boot": None,
    }
    va = [per_item_values(sa[s]["rec"], sa[s]["metric"]) for s in common]
    vb = [per_item_values(sb[s]["rec"], sb[s]["metric"]) for s in common]
    if all(x is not None and y is not None and x.shape == y.shape for x, y in zip(va, vb)):
        test = stats.paired_bootstrap(np.concatenate(va), np.concatenate(vb), n_boot=n_boot, seed=seed)
        out.update(ci=test["ci"], p_value=test["p_value"], n_items=int(sum(x.size for x in va)), n_boot=n_boot)
    return out


def build(records: list[MetricRecord], spec: TableSpec, n_boot: int = DEFAULT_N_BOOT) -> pd.DataFrame:
    """Tidy statistics of one table: one row per (block, column, row), ``row_type`` "model" or "comparison";
    ``model`` is the display name, ``kind`` the model name (``NAME-clip`` for a comparison)."""
    cells = collect(records, spec)
    rows = []
    by_bcs: dict = {}
    for (b, c, k, s), entries in cells.items():
        by_bcs.setdefault((b, c, s), {})[k] = entries
    for (b, c, s), kinds in by_bcs.items():
        for k, entries in kinds.items():
            st = model_stats(entries)
            rows.append(
                {
                    "block": b,
                    "column": c,
                    "row_type": "model",
                    "model": entries[0]["rec"].model_display,
                    "kind": k,
                    "size": s,
                    "unit": root_distance_label(entries[0]["rec"]) if not spec.comparable else spec.unit,
                    **st,
                }
            )
        if not spec.comparable or BASELINE not in kinds:
            continue
        for k in model_order(kinds):
            if k == BASELINE:
                continue
            cmp = compare(kinds[k], kinds[BASELINE], n_boot=n_boot)
            if cmp is None:
                continue
            ci = cmp["ci"] or [None, None]
            rows.append(
                {
                    "block": b,
                    "column": c,
                    "row_type": "comparison",
                    "model": f"{kinds[k][0]['rec'].model_display} − {kinds[BASELINE][0]['rec'].model_display}",
                    "kind": f"{k}-{BASELINE}",
                    "size": s,
                    "unit": spec.unit,
                    "n_seeds": len(cmp["seeds"]),
                    "seeds": cmp["seeds"],
                    "mean": cmp["diff"],
                    "diff_lo": ci[0],
                    "diff_hi": ci[1],
                    "p_value": cmp["p_value"],
                    "n_boot": cmp["n_boot"],
                    "n_items": cmp["n_items"],
                    "wins": cmp["wins"],
                }
            )
    cols = [
        "block",
        "column",
        "row_type",
        "model",
        "kind",
        "size",
        "unit",
        "n_seeds",
        "seeds",
        "mean",
        "sd",
        "min",
        "max",
        "values",
        "seed_lo",
        "seed_hi",
        "diff_lo",
        "diff_hi",
        "p_value",
        "n_boot",
        "n_items",
        "wins",
    ]
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------------- display


def _num(x, d: int, sign: bool = False) -> str:
    s = f"{x:+.{d}f}" if sign else f"{x:.{d}f}"
    return s.replace("-", "−")


def p_text(p, n_boot) -> str:
    """``p = 0.012``, or ``p < 0.001`` when p is at the bootstrap's floor 1/B."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    if n_boot and p <= 1.0 / n_boot + 1e-12:
        return f"p < {1.0 / n_boot:.2g}"
    return f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


def _present(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def cell_text(r: pd.Series, spec: TableSpec) -> str:
    d, rng = spec.digits, metric_range(spec)
    if r["row_type"] == "comparison":
        s = _num(r["mean"], d, sign=True)
        if _present(r["diff_lo"]):
            s += f" [{_num(r['diff_lo'], d, True)}, {_num(r['diff_hi'], d, True)}] {p_text(r['p_value'], r['n_boot'])}"
        return s + f" ({int(r['wins'])}/{int(r['n_seeds'])})"
    if r["n_seeds"] >= 2:
        return f"{_num(r['mean'], d)} ± {_num(r['sd'], d)} ({_num(r['min'], d)}–{_num(r['max'], d)})"
    lo, hi = r["seed_lo"][0], r["seed_hi"][0]
    return _num(r["mean"], d) + (f" [{_num(lo, d)}, {_num(hi, d)}]" if informative(lo, hi, rng) else "")


def wide(df: pd.DataFrame, spec: TableSpec, text: bool = True) -> pd.DataFrame:
    """Paper layout: rows (block, model, size), columns in table order; cells = display text or central value."""
    if not len(df):
        return pd.DataFrame(columns=["metric" if spec.by_dataset else "dataset", "model", "size", "seeds"])
    columns = list(dict.fromkeys(df["column"]))
    rows: dict = {}
    for _, r in df.iterrows():
        key = (r["block"], r["row_type"] == "comparison", r["model"], r["size"])
        row = rows.setdefault(key, {"block": r["block"], "model": r["model"], "size": r["size"], "seeds": ""})
        row[r["column"]] = cell_text(r, spec) if text else r["mean"]
        row.setdefault("_n", {})[r["column"]] = int(r["n_seeds"])
        if not spec.comparable:
            row["unit"] = r["unit"]
    for (_, comparison, _, _), row in rows.items():  # seeds = those with a used value; a cell with fewer says so
        n = row.pop("_n")
        lo, hi = min(n.values()), max(n.values())
        row["seeds"] = str(hi) if lo == hi else f"{lo}–{hi}"
        for column, k in n.items():
            if text and k < hi and not comparison:  # difference cells already end in (wins/S)
                row[column] += f" (S={k})"
    block_order = list(dict.fromkeys(df["block"]))
    size_rank = {s: i for i, s in enumerate(size_order(df["size"]))}
    model_rank = {m: i for i, m in enumerate(dict.fromkeys(df["model"]))}
    keys = sorted(rows, key=lambda k: (block_order.index(k[0]), k[1], size_rank[k[3]], model_rank[k[2]]))
    out = pd.DataFrame([rows[k] for k in keys])
    extra = ["unit"] if not spec.comparable else []
    out = out[["block", "model", "size", "seeds"] + extra + columns]
    out = out.rename(columns={"block": "metric" if spec.by_dataset else "dataset"})
    return out.fillna("—") if text else out


def notes(df: pd.DataFrame, spec: TableSpec, n_boot: int) -> list[str]:
    out = [f"Unit: {spec.unit}."]
    if len(df) and (df[df.row_type == "model"]["n_seeds"] >= 2).any():
        out.append("Model rows: mean ± sd over training seeds (min–max over seeds).")
    if len(df) and (df[df.row_type == "model"]["n_seeds"] == 1).any():
        out.append("Single-seed rows: value [95% percentile bootstrap interval over test items].")
    if len(df) and (df.row_type == "comparison").any():
        out.append(
            f"Difference rows A − B: difference of seed means over the seeds both have, [95% interval] and "
            f"two-sided p from a paired bootstrap ({n_boot} resamples; p < {1 / n_boot:.2g} means no resample "
            "crossed 0) over test items pooled across those seeds (only where per-item data exist); "
            "(k/S) = seeds where A is higher."
        )
    if len(df) and (df.groupby(["block", "model", "size"])["n_seeds"].nunique() > 1).any():
        out.append("(S=k): only k of the row's seeds have a value in this cell; seeds = the range over the row.")
    out.append(
        "— = no value: the model has no such metric, or top-K accuracy with K ≥ the number of classes "
        "(100% by construction), which is left out."
    )
    return out


def per_seed_frame(df: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Rows (block, model, size, seed), cells ``value [95% bootstrap interval]`` (uninformative intervals left out)."""
    m = df[df.row_type == "model"]
    if not len(m):
        return pd.DataFrame()
    d, rng = spec.digits, metric_range(spec)
    rows: dict = {}
    for _, r in m.iterrows():
        for seed, v, lo, hi in zip(r["seeds"], r["values"], r["seed_lo"], r["seed_hi"]):
            row = rows.setdefault(
                (r["block"], r["size"], r["model"], seed),
                {"block": r["block"], "model": r["model"], "size": r["size"], "seed": seed},
            )
            row[r["column"]] = _num(v, d) + (f" [{_num(lo, d)}, {_num(hi, d)}]" if informative(lo, hi, rng) else "")
    columns = list(dict.fromkeys(m["column"]))
    out = pd.DataFrame(list(rows.values()))
    return (
        out[["block", "model", "size", "seed"] + columns]
        .rename(columns={"block": "metric" if spec.by_dataset else "dataset"})
        .fillna("—")
    )


def to_markdown(table: pd.DataFrame) -> str:
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in row) + " |")
    return "\n".join(lines)


def to_html(table: pd.DataFrame, title: str, note: list[str], seeds: pd.DataFrame) -> str:
    """Standalone HTML of the display table, its notes and the per-seed section (for ``snakemake --report``)."""
    from html import escape

    style = "table{border-collapse:collapse;font:13px sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ccc}"
    head = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{style}</style>"
    parts = [head + "</head><body>", f"<h3>{escape(title)}</h3>"]
    parts.append(table.to_html(index=False, border=0) if len(table) else "<p>No results for this table.</p>")
    parts.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in note) + "</ul>")
    if len(seeds):
        parts += [
            "<h4>Per seed: value [95% bootstrap interval over test items]</h4>",
            seeds.to_html(index=False, border=0),
        ]
    return "\n".join(parts) + "</body></html>\n"


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "−": r"$-$",
    "–": "--",
    "—": "---",
    "→": r"$\to$",
    "≥": r"$\geq$",
    "<": r"$<$",
    ">": r"$>$",
}


def tex_escape(s) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs ``table``: block labels as italic spanning rows, ``\\midrule`` between blocks."""
    cols = list(table.columns[1:])  # the first column (block) becomes the spanning row
    head = " & ".join(tex_escape(c) for c in cols) + r" \\"
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{" + "l" * 2 + "c" * (len(cols) - 2) + "}",
        r"\toprule",
        head,
    ]
    previous = None
    for row in table.itertuples(index=False):
        if row[0] != previous:
            lines.append(r"\midrule")
            if str(row[0]):
                lines.append(rf"\multicolumn{{{len(cols)}}}{{l}}{{\textit{{{tex_escape(row[0])}}}}} \\")
            previous = row[0]
        lines.append(" & ".join(tex_escape(x) for x in row[1:]) + r" \\")
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        rf"\caption{{{tex_escape(caption)}}}",
        rf"\label{{tab:{label}}}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- files


def _stats_csv(df: pd.DataFrame) -> str:
    out = df.copy()
    for col in ("seeds", "values", "seed_lo", "seed_hi"):
        out[col] = [
            ";".join(f"{x:.10g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list) else ""
            for v in out[col]
        ]
    return out.to_csv(index=False)


def write_table(records: list[MetricRecord], spec: TableSpec, out: Path, n_boot: int = DEFAULT_N_BOOT) -> pd.DataFrame:
    df = build(records, spec, n_boot)
    title = f"{spec.title} ({spec.unit})"
    disp = wide(df, spec)
    note = notes(df, spec, n_boot)
    seeds = per_seed_frame(df, spec)
    md = [f"## {title}", "", to_markdown(disp) if len(disp) else "(no results for this table in the metrics)", ""]
    md += [f"- {n}" for n in note]
    if len(seeds):
        md += ["", "### Per seed: value [95% bootstrap interval over test items]", "", to_markdown(seeds)]
    write_text(out / f"{spec.name}.md", "\n".join(md) + "\n")
    write_text(
        out / f"{spec.name}.tex",
        to_latex(disp, f"{title}. " + " ".join(note), spec.name)
        if len(disp)
        else f"% {title}: no results in the metrics\n",
    )
    write_text(out / f"{spec.name}.html", to_html(disp, title, note, seeds))
    write_text(out / f"{spec.name}.csv", wide(df, spec, text=False).to_csv(index=False))
    write_text(out / f"{spec.name}_stats.csv", _stats_csv(df))
    return df


def output_names() -> list[str]:
    """Every file ``meru tables`` writes (relative to ``--out``)."""
    return [f"{s.name}{suffix}" for s in SPECS for suffix in (".csv", ".md", ".tex", ".html", "_stats.csv")]


def write_tables(
    metrics_dir: str | os.PathLike, out_dir: str | os.PathLike, n_boot: int = DEFAULT_N_BOOT
) -> dict[str, pd.DataFrame]:
    """Build every table of :data:`SPECS` and write them under ``out_dir`` (published values beside ours:
    :mod:`meru.reporting.reproduction`)."""
    misnamed = misnamed_records(metrics_dir)
    if misnamed:
        raise ValueError(
            f"{misnamed[0]}: a metric record named like a clip-benchmark side file (*{CLIP_BENCHMARK_SUFFIX}), which "
            f"is not read as a record ({len(misnamed)} such file(s)); rename it to NAME.json"
        )
    records = load_metric_records(metrics_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {spec.name: write_table(records, spec, out, n_boot) for spec in SPECS}


def run(args) -> int:
    if metrics_dir_missing(args.metrics, "tables"):
        return 2
    if args.n_boot < 1:
        print(f"meru tables: error: --n-boot must be >= 1, got {args.n_boot}", file=sys.stderr)
        return 2
    try:
        frames = write_tables(args.metrics, args.out, args.n_boot)
    except ValueError as err:
        print(f"meru tables: error: {err}", file=sys.stderr)
        return 2
    for name, df in frames.items():
        print(f"{args.out}/{name}: {len(df)} statistics rows")
    return 0
