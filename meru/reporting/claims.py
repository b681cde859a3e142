"""The MERU paper's qualitative claims, computed from a run's metric records (``meru claims``).

Writes ``claims.{csv,md}``: one row per (claim, metric, size, dataset) with, for every model kind the
run has (discovered from the records: meru, clip, euclip, ...), the value over seeds, the union of the
seeds' 95% intervals, and a verdict at 95% — "holds", "does not hold", "inconclusive" or "n/a" —
computed by the rules below (docs/METRICS.md, "Claims"), never typed.

Property claims (each kind on its own; CLIP's [ROOT] is the normalised mean caption of the pool):
a claim "statistic > θ" (or "< θ") holds when every seed's 95% interval lies entirely beyond θ, does
not hold when every seed's interval lies entirely on the other side, and is inconclusive otherwise.

Comparison claims (MERU ≥ other kind, same size and dataset): per-item outcomes (zero-shot top-1
correctness, retrieval hit@k) averaged over the seeds both kinds have, then a paired bootstrap over
items (:func:`meru.stats.paired_bootstrap`) for the 95% interval of MERU − other; the claim holds when
that interval lies above 0 *and* MERU is ahead in every seed, does not hold when the interval lies
below 0 and MERU is behind in every seed, and is inconclusive otherwise. Without per-item data the
interval is the Student-t interval over the seeds' differences (:func:`meru.stats.aggregate_seeds`).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sstats

from meru.arguments import add_claims_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru import stats
from meru.io import write_text
from meru.kinds import PAPER
from meru.records import MetricRecord, load_metric_records
from meru.reporting.reproduction import kinds_of
from meru.reporting.records import metrics_dir_missing, model_displays

HOLDS, FAILS, UNSURE, NA = "holds", "does not hold", "inconclusive", "n/a"

CLAIMS = {
    "zeroshot": "MERU ≥ other models on zero-shot classification",
    "retrieval": "MERU ≥ other models on image-text retrieval",
    "text_nearer": "Text embeddings lie nearer the origin ([ROOT]) than image embeddings",
    "generic_nearer": "Generic captions lie nearer the origin than specific ones",
    "image_farther": "Images lie farther from the origin than their own captions",
    "cones": "Entailment cones hold true caption-image pairs more often than false ones",
    "traversal_generic": "Image→[ROOT] traversals retrieve ever more generic captions",
    "traversal_true": "Captions retrieved on image→[ROOT] traversals are true of the image",
}


# --------------------------------------------------------------------------- decisions


def decide(intervals: list, theta: float | None, direction: str = ">") -> str:
    """Per-seed rule for "statistic > θ" (direction '>') or "< θ": see the module docstring."""
    if not intervals:
        return NA
    if theta is None or any(iv is None or iv[0] is None or iv[1] is None for iv in intervals):
        return UNSURE
    above = all(lo > theta for lo, _ in intervals)
    below = all(hi < theta for _, hi in intervals)
    if direction == ">":
        return HOLDS if above else FAILS if below else UNSURE
    return HOLDS if below else FAILS if above else UNSURE


def property_cell(
    per_seed: list[tuple[float, list | None]], theta: float | None, direction: str = ">", detail: str = ""
) -> dict:
    """Value = seed mean, interval = union of the seeds' intervals, verdict by :func:`decide`."""
    if not per_seed:
        return {"value": None, "lo": None, "hi": None, "seeds": 0, "verdict": NA, "detail": detail}
    vals = [v for v, _ in per_seed]
    ivs = [iv for _, iv in per_seed]
    known = [iv for iv in ivs if iv is not None]
    return {
        "value": float(np.mean(vals)),
        "lo": min(iv[0] for iv in known) if known else None,
        "hi": max(iv[1] for iv in known) if known else None,
        "seeds": len(vals),
        "verdict": decide(ivs, theta, direction),
        "detail": detail,
    }


def comparison_cell(meru: dict, other: dict, metric: str, outcomes) -> dict:
    """MERU − other on ``metric``; meru/other: {seed: record}; outcomes(rec) -> per-item array in the metric's unit or None."""
    common = sorted(set(meru) & set(other))
    cell = property_cell([(other[s].metrics[metric], _interval(other[s], metric)) for s in sorted(other)], None)
    cell["verdict"] = UNSURE
    if not common:
        cell.update(verdict=NA, detail="no seed in common with MERU")
        return cell
    vm = np.array([meru[s].metrics[metric] for s in common], float)
    vo = np.array([other[s].metrics[metric] for s in common], float)
    a = [outcomes(meru[s]) for s in common]
    b = [outcomes(other[s]) for s in common]
    if all(x is not None for x in a + b) and len({len(x) for x in a + b}) == 1:
        res = stats.paired_bootstrap(np.mean(a, axis=0), np.mean(b, axis=0))
        d, (lo, hi), how = res["diff"], res["ci"], f"paired bootstrap over {len(a[0])} items × {len(common)} seeds"
    else:
        agg = stats.aggregate_seeds(vm - vo)
        d, how = agg["mean"], f"t interval over {len(common)} seeds"
        lo, hi = agg["ci"] if agg["ci"] else (None, None)
    ahead, behind = int(np.sum(vm > vo)), int(np.sum(vm < vo))
    if lo is not None and lo > 0 and ahead == len(common):
        cell["verdict"] = HOLDS
    elif hi is not None and hi < 0 and behind == len(common):
        cell["verdict"] = FAILS
    cell.update(
        diff=d,
        diff_lo=lo,
        diff_hi=hi,
        detail=f"MERU−{_kind(other)} {_fmt(d, lo, hi)} ({how}); MERU ahead in {ahead}/{len(common)} seeds",
    )
    return cell


def _kind(recs: dict) -> str:
    return next(iter(recs.values())).model_name.upper()


def _interval(rec: MetricRecord, metric: str):
    iv = rec.intervals.get(metric)  # not every metric has an interval
    return list(iv[:2]) if iv and iv[0] is not None and iv[1] is not None else None


# --------------------------------------------------------------------------- per-item outcomes


def zeroshot_outcomes(rec: MetricRecord):
    return 100.0 * np.asarray(rec.per_item["correct"], float)


def retrieval_outcomes(direction: str, k: int):
    def f(rec: MetricRecord):
        return 100.0 * (np.asarray(rec.per_item[f"{direction}_rank"]) < k).astype(float)

    return f


def traversal_items(rec: MetricRecord) -> np.ndarray:
    """[n_images, 3]: Kendall tau-b(step order, specificity) of the listed captions ([ROOT] excluded;
    NaN with < 2 captions or one specificity), number of listed captions that are true, number listed."""
    rows = []
    for img in rec.plot["paths"]:
        steps = [s for s in img["steps"] if s["specificity"] is not None]
        spec = [s["specificity"] for s in steps]
        tau = float(sstats.kendalltau(np.arange(len(spec)), spec).statistic) if len(set(spec)) > 1 else math.nan
        rows.append([tau, sum(bool(s["correct"]) for s in steps), len(steps)])
    return np.asarray(rows, float).reshape(-1, 3)


def _true_share(items: np.ndarray) -> float:
    """Pooled share of listed captions that are true: sum(true) / sum(listed) over images."""
    return float(items[:, 1].sum() / max(items[:, 2].sum(), 1.0))


# --------------------------------------------------------------------------- claims


def _group(records: list[MetricRecord], task: str) -> dict:
    """{(size, dataset): {model name: {seed: record}}} for one task."""
    out: dict = {}
    for r in records:
        if r.task == task:
            out.setdefault((r.size, r.dataset), {}).setdefault(r.model_name, {})[r.seed] = r
    return out


def _row(cid: str, metric: str, size: str, dataset: str, rule: str, cells: dict) -> dict:
    return {
        "claim_id": cid,
        "claim": CLAIMS[cid],
        "metric": metric,
        "size": size,
        "dataset": dataset,
        "rule": rule,
        "cells": cells,
    }


def comparison_rows(records: list[MetricRecord], kinds: list[str]) -> list[dict]:
    """Rows of the comparison claims (zero-shot top-1, retrieval R@1/R@5 both ways): MERU against each other
    kind, per (size, dataset); each row ``{"claim_id", "claim", "metric", "size", "dataset", "rule", "cells"}``
    with ``cells[kind]`` from :func:`comparison_cell` (MERU's own cell: its value, verdict "—")."""
    rows = []
    specs = [("zeroshot", "zeroshot", "top1", zeroshot_outcomes)]
    specs += [("retrieval", "retrieval", f"{d}_r{k}", retrieval_outcomes(d, k)) for k in (1, 5) for d in ("i2t", "t2i")]
    for cid, task, metric, outcomes in specs:
        for (size, dataset), by_kind in sorted(_group(records, task).items()):
            if PAPER not in by_kind or not any(metric in r.metrics for r in by_kind[PAPER].values()):
                continue
            cells = {
                PAPER: property_cell(
                    [(r.metrics[metric], _interval(r, metric)) for _, r in sorted(by_kind[PAPER].items())], None
                )
            }
            cells[PAPER].update(verdict="—", detail="reference side of the comparison")
            for kind in kinds:
                if kind != PAPER and kind in by_kind:
                    cells[kind] = comparison_cell(by_kind[PAPER], by_kind[kind], metric, outcomes)
            rows.append(
                _row(cid, metric, size, dataset, "MERU − other > 0 (paired, 95%) and MERU ahead in every seed", cells)
            )
    return rows


def _structure_cells(by_kind: dict, kinds: list[str], fn, theta, direction=">", na_detail="") -> dict:
    cells = {}
    for kind in kinds:
        recs = by_kind.get(kind, {})
        per_seed = [x for x in (fn(r) for _, r in sorted(recs.items())) if x is not None]
        roots = {r.details["root"] for r in recs.values()}
        detail = f"[ROOT] = {', '.join(sorted(roots))}" if roots else ""
        cells[kind] = property_cell(per_seed, theta, direction, detail if per_seed else na_detail)
    return cells


# per-seed statistics of the property claims: record -> (value, 95% interval or None), or None when absent


def root_gap(r: MetricRecord):
    """image_root_mean − text_root_mean; interval [image lo − text hi, image hi − text lo]."""
    m, iv = r.metrics, r.intervals
    if "image_root_mean" not in m or "text_root_mean" not in m:
        return None
    ii, ti = iv.get("image_root_mean"), iv.get("text_root_mean")
    ci = [ii[0] - ti[1], ii[1] - ti[0]] if ii and ti else None
    return m["image_root_mean"] - m["text_root_mean"], ci


def specificity_rho(r: MetricRecord):
    """Spearman rho(distance from [ROOT], caption specificity) with its Fisher-z interval."""
    v = r.metrics.get("spearman_specificity")  # absent when the pool has no specificity
    return None if v is None else (v, stats.spearman_ci(v, r.details["n_texts"]))


def farther_share(r: MetricRecord):
    v = r.metrics.get("image_farther_frac")  # absent without true pairs
    return None if v is None else (v, _interval(r, "image_farther_frac"))


def cone_gap(r: MetricRecord):
    """cone_true_frac − cone_false_frac; interval from the true pairs' bootstrap (over images × captions)."""
    m = r.metrics
    if "cone_true_frac" not in m or "cone_false_frac" not in m:
        return None
    iv = _interval(r, "cone_true_frac")
    f = m["cone_false_frac"]
    return m["cone_true_frac"] - f, ([iv[0] - f, iv[1] - f] if iv else None)


def traversal_tau(r: MetricRecord):
    """Mean Kendall tau(step, specificity) over images, bootstrap interval over images."""
    items = traversal_items(r)
    if not np.isfinite(items[:, 0]).any():
        return None
    t = items[:, 0][np.isfinite(items[:, 0])]
    return float(t.mean()), list(stats.bootstrap_ci(t))


def traversal_precision(r: MetricRecord):
    """Pooled share of listed captions true of the image, bootstrap interval over images."""
    items = traversal_items(r)
    if not len(items) or items[:, 2].sum() == 0:
        return None
    return _true_share(items), list(stats.bootstrap_ci(items, statistic=_true_share))


STRUCTURE_CLAIMS = (  # (claim id, metric, rule, statistic, threshold, N/A detail)
    (
        "text_nearer",
        "image_root_mean − text_root_mean",
        "> 0 in every seed (intervals: image lo − text hi, image hi − text lo)",
        root_gap,
        0.0,
        "",
    ),
    (
        "generic_nearer",
        "spearman_specificity",
        "> 0 in every seed (Fisher-z interval, se² = 1.06/(n_texts − 3))",
        specificity_rho,
        0.0,
        "",
    ),
    (
        "image_farther",
        "image_farther_frac",
        "> 0.5 in every seed (bootstrap over images × captions)",
        farther_share,
        0.5,
        "",
    ),
    (
        "cones",
        "cone_true_frac − cone_false_frac",
        "> 0 in every seed (bootstrap of true pairs over images × captions)",
        cone_gap,
        0.0,
        "no entailment cones",
    ),
)


def structure_rows(records: list[MetricRecord], kinds: list[str]) -> list[dict]:
    """Rows of the structure-record property claims (:data:`STRUCTURE_CLAIMS`), per (size, dataset)."""
    rows = []
    for (size, dataset), by_kind in sorted(_group(records, "structure").items()):
        for cid, metric, rule, fn, theta, na in STRUCTURE_CLAIMS:
            rows.append(
                _row(cid, metric, size, dataset, rule, _structure_cells(by_kind, kinds, fn, theta, na_detail=na))
            )
    return rows


def traversal_rows(records: list[MetricRecord], kinds: list[str]) -> list[dict]:
    """Rows of the traversal claims: captions ever more generic (tau < 0) and true of the image more often
    than chance (the share of true pairs in the caption pool, from the run's structure record)."""
    chance = {
        r.label: r.details["n_true_pairs"] / (r.details["n_true_pairs"] + r.details["n_false_pairs"])
        for r in records
        if r.task == "structure" and r.details.get("n_true_pairs")  # pair counts exist only with true pairs
    }
    rows = []
    for (size, dataset), by_kind in sorted(_group(records, "traversal").items()):
        thetas = {chance.get(r.label) for recs in by_kind.values() for r in recs.values()}
        no_pair = "no image lists two captions of different specificity"
        rows.append(
            _row(
                "traversal_generic",
                "mean Kendall tau(step, caption specificity)",
                size,
                dataset,
                "< 0 in every seed (bootstrap over images)",
                _structure_cells(by_kind, kinds, traversal_tau, 0.0, "<", no_pair),
            )
        )
        theta = thetas.pop() if len(thetas) == 1 else None
        rule = (
            f"> chance {theta:.4f} in every seed (chance = share of true pairs in the caption pool; bootstrap over images)"
            if theta is not None
            else "> chance (unknown: no structure record for this run), so inconclusive"
        )
        cells = _structure_cells(
            by_kind, kinds, traversal_precision, theta, na_detail="no caption listed before [ROOT]"
        )
        rows.append(_row("traversal_true", "precision (listed captions true of the image)", size, dataset, rule, cells))
    return rows


def property_rows(records: list[MetricRecord], kinds: list[str]) -> list[dict]:
    """Rows of the property claims (each kind on its own): structure claims, then traversal claims."""
    return structure_rows(records, kinds) + traversal_rows(records, kinds)


def reading(row: dict, kinds: list[str]) -> str:
    """Whose finding it is: 'MERU only', 'shared: CLIP, ...', 'not MERU: ...', 'none' (property claims)."""
    if row["claim_id"] in COMPARISONS:
        return ""
    holds = [k for k in kinds if row["cells"].get(k, {}).get("verdict") == HOLDS]
    if PAPER in holds:
        others = [k.upper() for k in holds if k != PAPER]
        return f"shared: {', '.join(others)}" if others else "MERU only"
    return f"not MERU: {', '.join(k.upper() for k in holds)}" if holds else "none"


def build_claims(records: list[MetricRecord]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(wide CSV frame: one row per claim, metric, size and dataset with every kind's value, interval, verdict
    and detail; compact frame: one row per claim, :func:`compact_table`)."""
    kinds = kinds_of(records)
    rows = comparison_rows(records, kinds) + property_rows(records, kinds)
    fields = ("value", "lo", "hi", "seeds", "verdict", "detail")
    wide = []
    for row in rows:
        w = {k: row[k] for k in ("claim_id", "claim", "metric", "size", "dataset", "rule")}
        w["reading"] = reading(row, kinds)
        for kind in kinds:
            cell = row["cells"].get(kind) or {"verdict": NA}
            for f in fields:
                w[f"{kind}_{f}"] = cell.get(f)
            if row["claim_id"] in COMPARISONS:
                for f in ("diff", "diff_lo", "diff_hi"):
                    w[f"{kind}_{f}"] = cell.get(f)
        wide.append(w)
    wide = pd.DataFrame(wide)
    return wide, compact_table(wide, kinds, model_displays(records))


COMPARISONS = ("zeroshot", "retrieval")  # claims comparing MERU with each other kind (the rest: properties)
SHORT = {  # the claims as the compact table names them
    "zeroshot": "MERU ≥ other, zero-shot",
    "retrieval": "MERU ≥ other, retrieval",
    "text_nearer": "text nearer [ROOT] than images",
    "generic_nearer": "generic captions nearer [ROOT]",
    "image_farther": "image beyond its own caption",
    "cones": "cones hold true pairs more",
    "traversal_generic": "traversals grow more generic",
    "traversal_true": "traversal captions true",
}


def _verdict_counts(verdicts: list[str]) -> str:
    """'holds' when all rows agree, else e.g. '2 holds, 1 inconclusive' (most frequent first)."""
    verdicts = [v for v in verdicts if isinstance(v, str) and v]
    if not verdicts:
        return NA
    counts = sorted({v: verdicts.count(v) for v in verdicts}.items(), key=lambda kv: -kv[1])
    return counts[0][0] if len(counts) == 1 else ", ".join(f"{n} {v}" for v, n in counts)


def _short_value(m, lo=None, hi=None) -> str:
    """'0.31 [0.2, 0.4]' with 3 significant digits ('' when absent)."""
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return ""
    if lo is None or hi is None or any(isinstance(x, float) and math.isnan(x) for x in (lo, hi)):
        return f"{m:.3g}"
    return f"{m:.3g} [{lo:.3g}, {hi:.3g}]"


def compact_cell(group: pd.DataFrame, kind: str, comparison: bool) -> str:
    """One kind's cell of one claim: the verdicts of its rows (counted when they differ) and, for a claim with
    a single row, the value (property) or the difference MERU − kind (comparison) with its 95% interval."""
    if comparison and set(group.get(f"{kind}_verdict", [])) == {"—"}:  # the side the others are compared with
        return "(reference)"
    verdict = _verdict_counts(list(group.get(f"{kind}_verdict", [])))
    if len(group) != 1:
        return verdict
    r = group.iloc[0]
    keys = ("diff", "diff_lo", "diff_hi") if comparison else ("value", "lo", "hi")
    value = _short_value(*(r.get(f"{kind}_{k}") for k in keys))
    return f"{verdict}: {'Δ ' if comparison else ''}{value}" if value else verdict


def compact_table(wide: pd.DataFrame, kinds: list[str], names: dict[str, str]) -> pd.DataFrame:
    """One row per claim (terminals, GitHub): the claim, the number of (metric, size, dataset) rows behind it,
    one short cell per model (:func:`compact_cell`; column: ``names[model]``, its display name) and whose
    finding it is; the details are in claims.csv."""
    out = []
    for cid in CLAIMS:
        g = wide[wide.claim_id == cid] if len(wide) else wide
        if not len(g):
            continue
        row = {"claim": SHORT[cid], "rows": len(g)}
        for kind in kinds:
            row[names.get(kind, kind)] = compact_cell(g, kind, cid in COMPARISONS)
        row["reading"] = _verdict_counts(list(g["reading"])) if cid not in COMPARISONS else ""
        out.append(row)
    return pd.DataFrame(out)


def _fmt(m, lo=None, hi=None) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "—"
    if lo is None or hi is None:
        return f"{m:.4g}"
    return f"{m:.4g} [{lo:.4g}, {hi:.4g}]"


def summary(wide: pd.DataFrame) -> str:
    """'claims: MERU holds a/b (...)' over MERU's property claims and comparisons."""
    if not len(wide) or "meru_verdict" not in wide:
        return "no MERU records: no claim evaluated"
    parts = []
    for cid in CLAIMS:
        g = wide[wide.claim_id == cid]
        if not len(g):
            continue
        if cid in COMPARISONS:
            verdicts = [v for k in wide.columns if k.endswith("_verdict") and k != "meru_verdict" for v in g[k] if v]
        else:
            verdicts = list(g["meru_verdict"])
        counts = {v: verdicts.count(v) for v in (HOLDS, FAILS, UNSURE, NA) if verdicts.count(v)}
        parts.append(f"{cid}: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return "MERU claims — " + "; ".join(parts)


def write_claims(metrics_dir, out_dir) -> tuple[pd.DataFrame, str]:
    """``claims.csv`` (every row and field) and ``claims.md`` (summary line + the compact table)."""
    wide, compact = build_claims(load_metric_records(metrics_dir))
    line = summary(wide)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "claims.csv", wide.to_csv(index=False))
    md = compact.to_markdown(index=False) if len(compact) else "(no metric records)"
    write_text(
        out / "claims.md",
        '## claims\n\nVerdicts at 95% (rules: docs/METRICS.md, "Claims"). One row per claim; "rows": its '
        "(metric, size, dataset) rows in claims.csv, which holds every value, interval and detail; comparison "
        "cells: MERU − that kind (Δ); 'reading' says which kinds share a property.\n\n"
        f"Summary: {line}\n\n{md}\n",
    )
    return wide, line


def run(args) -> int:
    if metrics_dir_missing(args.metrics, "claims"):
        return 2
    try:
        _, line = write_claims(args.metrics, args.out)
    except ValueError as err:
        print(f"meru claims: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}/claims.md: {line}")
    return 0
