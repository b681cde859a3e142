"""Paper-style tables from metric JSON files (``meru tables --metrics DIR --out DIR``).

Reads every ``*.json`` under ``--metrics`` that has ``"task"`` and ``"metrics"`` (the clip-benchmark
side files without ``"kind"``/``"model"`` in {meru, clip} are skipped) and writes, for each table
``T`` in :data:`TABLES`, ``T.csv`` (numbers), ``T.md`` (Markdown) and ``T.tex`` (LaTeX), atomically.

Per (dataset, metric, size, kind) the S seeds are aggregated as

    mean  m = (1/S) sum_s v_s
    95% interval half-width  h = sqrt( hb^2 + (t_{0.975,S-1} * sd / sqrt(S))^2 )   (S > 1)

where ``hb`` is the mean half-width of the per-seed bootstrap intervals (``"intervals"``) and ``sd``
the sample standard deviation over seeds; with S = 1 the interval is the seed's bootstrap interval.
With few seeds ``t_{0.975,S-1}`` is large (12.7 for S = 2), so the interval is then clipped to the
metric's range (:func:`metric_range`: [0, 100] for accuracies and recalls in %, [0, 1] for fractions,
AUC and set overlaps, [-1, 1] for rank correlations, [0, inf) for distances and severities).
``meru_wins`` counts the seeds (paired by seed number) where MERU's value is above CLIP's: "k/S".
Neither is given for :data:`INCOMPARABLE` metrics (distances in each model's own space).

MERU - CLIP (same dataset, size, metric) is tested with a paired bootstrap over test items when both
sides carry ``per_item["correct"]`` (zero-shot) for the same seeds and the same number of items:
for B resamples of item indices i* (shared by both models and all seeds),
``d* = mean_{s,i*} (meru_s[i*] - clip_s[i*])``; the 95% interval is the 2.5/97.5 percentiles of d*,
the two-sided p-value ``min(1, 2 min(P(d* <= 0), P(d* >= 0)))``, and the difference is significant
when the interval excludes 0. Without per-item data the difference has no test (empty p-value).
This test covers the sampling of test items for the trained seeds at hand, not the variation between
training runs: read it together with the per-model seed intervals and ``meru_wins``.
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
from scipy import stats as sstats

TABLES = ("zeroshot", "retrieval", "hierarchy", "linear_probe", "structure")  # published values: meru.reporting.reproduction
ACCURACY_KEYS = ("top1", "acc1", "accuracy", "acc")
ZEROSHOT_KEYS = ("top1", "top5", "mean_per_class")
KINDS = ("meru", "clip")


def load_metrics(directory: str | os.PathLike) -> list[dict]:
    """All metric records under ``directory`` (recursive), sorted by path; bad JSON raises naming the file."""
    records = []
    for path in sorted(Path(directory).rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); delete it and re-run the rule that wrote it") from err
        if not isinstance(rec, dict) or "metrics" not in rec or "task" not in rec:
            continue
        kind = rec.get("kind", rec.get("model"))
        if kind not in KINDS:
            continue
        rec = dict(rec, kind=kind, _path=str(path))
        rec.setdefault("size", "?")
        rec.setdefault("seed", 0)
        records.append(rec)
    return records


def metrics_dir_missing(directory: str | os.PathLike, command: str) -> bool:
    """True (after printing the fix to stderr) when ``--metrics`` is not a directory; for the CLIs."""
    if Path(directory).is_dir():
        return False
    print(f"meru {command}: --metrics {directory} is not a directory; run the evaluation rules first", file=sys.stderr)
    return True


def primary_metric(metrics: dict) -> str:
    for key in ACCURACY_KEYS:
        if key in metrics:
            return key
    return sorted(metrics)[0]


def _rows(records: list[dict], table: str) -> list[dict]:
    """Long rows (dataset, metric, size, kind, seed, value, lo, hi, per_item, path) for one table."""
    out = []
    for rec in records:
        task = rec["task"].replace("_", "-")
        metrics = rec["metrics"]
        if not metrics:
            continue
        if table == "zeroshot" and task == "zeroshot":
            keys = [k for k in ZEROSHOT_KEYS if k in metrics] or [primary_metric(metrics)]
        elif table == "hierarchy" and task == "zeroshot":
            keys = [k for k in sorted(metrics) if k not in ZEROSHOT_KEYS and k not in ACCURACY_KEYS]
        elif table == "retrieval" and task == "retrieval":
            keys = sorted(metrics)
        elif table == "linear_probe" and task == "linear-probe":
            keys = sorted(metrics)
        elif table == "structure" and task == "structure":
            keys = sorted(metrics)
        else:
            continue
        intervals = rec.get("intervals") or {}
        per_item = (rec.get("per_item") or {}).get("correct") if table == "zeroshot" else None
        for key in keys:
            value = metrics[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            lo, hi = (intervals.get(key) or [value, value])[:2]
            out.append({"dataset": rec["dataset"], "metric": key, "size": rec["size"], "kind": rec["kind"],
                        "seed": int(rec["seed"]), "value": float(value), "lo": float(lo), "hi": float(hi),
                        "per_item": per_item, "path": rec["_path"]})
    return out


# distances measured in each model's own space (hyperboloid vs sphere): a MERU - CLIP difference means nothing
INCOMPARABLE = ("modality_gap", "image_root_mean", "image_root_median", "text_root_mean", "text_root_median")
_PERCENT = ("top1", "top5", "mean_per_class", "acc1", "acc5", "accuracy", "acc")
_UNIT = ("cone_auc", "precision", "jaccard", "jaccard_full", "h_precision", "h_recall", "h_f1",
         "h_precision_full", "h_recall_full", "h_f1_full")


def metric_range(metric: str) -> tuple[float, float]:
    """Values a metric can take: (low, high), high may be inf (module docstring)."""
    if metric in _PERCENT or re.fullmatch(r"(i2t|t2i)_r\d+", metric):
        return 0.0, 100.0
    if metric in _UNIT or metric.endswith("_frac"):
        return 0.0, 1.0
    if metric.startswith(("spearman", "kendall")):
        return -1.0, 1.0
    return 0.0, math.inf


def aggregate(values: list[float], los: list[float], his: list[float],
              bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float, float]:
    """Seed mean and 95% interval clipped to ``bounds`` (module docstring)."""
    v, los, his = (np.asarray(list(x), float) for x in (values, los, his))
    m = float(v.mean())
    hb = float(np.mean((his - los) / 2))
    if len(v) == 1:
        return m, float(los[0]), float(his[0])
    t = float(sstats.t.ppf(0.975, len(v) - 1))
    h = math.sqrt(hb ** 2 + (t * float(v.std(ddof=1)) / math.sqrt(len(v))) ** 2)
    return m, max(m - h, bounds[0]), min(m + h, bounds[1])


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float, float]:
    """Paired bootstrap of mean(a - b) over items; a, b: [S, N] (seeds x items, same items). -> (d, lo, hi, p)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs equal shapes, got {a.shape} and {b.shape}")
    diff = (a - b).mean(axis=0)  # [N], averaged over seeds
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
    boots = diff[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    p = min(1.0, 2 * min(float(np.mean(boots <= 0)), float(np.mean(boots >= 0))))
    return float(diff.mean()), float(lo), float(hi), p


def build_table(records: list[dict], table: str) -> pd.DataFrame:
    """Wide table: one row per (dataset, metric, size); MERU and CLIP mean/lo/hi, MERU-CLIP with its test."""
    rows = _rows(records, table)
    columns = ["dataset", "metric", "size", "n_seeds"] + [f"{k}_{s}" for k in KINDS for s in ("mean", "lo", "hi")] \
        + ["diff", "diff_lo", "diff_hi", "p_value", "significant", "meru_wins"]
    if not rows:
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame(rows)
    out = []
    for (dataset, metric, size), g in df.groupby(["dataset", "metric", "size"], sort=True):
        row = {"dataset": dataset, "metric": metric, "size": size}
        seeds = {}
        for kind in KINDS:
            gk = g[g.kind == kind].sort_values("seed")
            if gk.seed.duplicated().any():
                dup = gk[gk.seed.duplicated(keep=False)].path.tolist()
                raise ValueError(f"duplicate metric files for one seed: {dup}; remove the stale one")
            seeds[kind] = gk
            if len(gk):
                row[f"{kind}_mean"], row[f"{kind}_lo"], row[f"{kind}_hi"] = aggregate(gk.value, gk.lo, gk.hi,
                                                                                      metric_range(metric))
            else:
                row[f"{kind}_mean"] = row[f"{kind}_lo"] = row[f"{kind}_hi"] = None
        row["n_seeds"] = int(max(len(seeds["meru"]), len(seeds["clip"])))
        row.update(diff=None, diff_lo=None, diff_hi=None, p_value=None, significant=None, meru_wins=None)
        if len(seeds["meru"]) and len(seeds["clip"]) and metric not in INCOMPARABLE:
            row["diff"] = row["meru_mean"] - row["clip_mean"]
            common = sorted(set(seeds["meru"].seed) & set(seeds["clip"].seed))
            if common:
                vm, vc = seeds["meru"].set_index("seed").value, seeds["clip"].set_index("seed").value
                row["meru_wins"] = f"{sum(vm[s] > vc[s] for s in common)}/{len(common)}"
            pm = [seeds["meru"].set_index("seed").per_item.get(s) for s in common]
            pc = [seeds["clip"].set_index("seed").per_item.get(s) for s in common]
            # per-item outcomes are top-1 correctness (0/1); top-1 is reported in %, so scale by 100
            if metric == "top1" and common and all(x is not None for x in pm + pc) and len({len(x) for x in pm + pc}) == 1:
                d, lo, hi, p = paired_bootstrap(100.0 * np.array(pm), 100.0 * np.array(pc))
                row.update(diff_lo=lo, diff_hi=hi, p_value=p, significant=bool(lo > 0 or hi < 0))
        out.append(row)
    return pd.DataFrame(out, columns=columns)


def _fmt(m, lo, hi) -> str:
    if m is None or pd.isna(m):
        return ""
    if lo is None or pd.isna(lo):
        return f"{m:.4g}"
    return f"{m:.4g} [{lo:.4g}, {hi:.4g}]"


def pretty(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Display form: 'mean [lo, hi]' cells and a starred MERU-CLIP column (* = 95% interval excludes 0)."""
    out = df[["dataset", "metric", "size", "n_seeds"]].copy()
    for kind in KINDS:
        out[kind.upper()] = [_fmt(r[f"{kind}_mean"], r[f"{kind}_lo"], r[f"{kind}_hi"]) for _, r in df.iterrows()]
    out["MERU-CLIP"] = [
        "" if r["diff"] is None or pd.isna(r["diff"]) else
        _fmt(r["diff"], r["diff_lo"], r["diff_hi"]) + ("*" if r["significant"] is True else "")
        for _, r in df.iterrows()
    ]
    out["MERU wins (seeds)"] = df["meru_wins"].fillna("")
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_tables(metrics_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Build every table in :data:`TABLES` and write ``.csv``, ``.md`` and ``.tex`` under ``out_dir``."""
    records = load_metrics(metrics_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = {}
    for table in TABLES:
        df = build_table(records, table)
        frames[table] = df
        disp = pretty(df, table)
        _atomic_write(out / f"{table}.csv", df.to_csv(index=False))
        md = disp.to_markdown(index=False) if len(disp) else "| " + " | ".join(disp.columns) + " |\n|" + "---|" * len(disp.columns)
        _atomic_write(out / f"{table}.md", f"## {table}\n\n{md}\n")
        _atomic_write(out / f"{table}.tex", disp.to_latex(index=False, escape=True))
    return frames


def add_arguments(parser) -> None:
    parser.add_argument("--metrics", required=True, help="directory of metric JSON files (searched recursively)")
    parser.add_argument("--out", required=True, help="output directory for the tables")


def run(args) -> int:
    if metrics_dir_missing(args.metrics, "tables"):
        return 2
    frames = write_tables(args.metrics, args.out)
    for name, df in frames.items():
        print(f"{args.out}/{name}.csv: {len(df)} rows")
    return 0
