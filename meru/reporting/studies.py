"""Study tables and verdicts (``meru study --type sizes|ablation|batch --metrics DIR --runs DIR --out DIR``).

A study config (``study: {type: ...}`` in the workflow config) trains several models and evaluates each like
the default run; this module turns their metric records into one table per study, in the paper's layout,
with computed verdicts. Models are model names (``MetricRecord.model_name``: a kind or a config variant of one),
shown by their display names. Every file is written atomically under ``--out``:

- ``STUDY.csv``: the wide table with central numbers (seed means; differences for paired rows);
- ``STUDY.md``: the wide table with statistics, the verdicts (one sentence each), notes, floors;
- ``STUDY_stats.csv``: every statistic, one row per (row, column), and the trend / reading rows.

The studies:

- ``sizes``: rows size x model, with parameters (:func:`meru.models.info.parameter_counts`) and training
  FLOPs (:func:`meru.training.flops.model_train_flops`: one step counted by ``torch.utils.flop_counter``, x
  batch x steps of the run's config); after each size one paired row ``MODEL − CLIP`` per other kind. Trend
  verdict per column: the OLS slope of MODEL − CLIP over log10(non-embedding parameters), with a bootstrap
  interval (:func:`gap_slope`: seeds and items resampled).
- ``batch``: the same with the batch size (samples per optimiser step, from each run's ``config.yaml``) in
  place of the size; models of one kind are paired with the baseline kind at the same batch size. The
  published context (``meru/resources/reference_values.csv``: GRIT batch-768 checkpoints, the MERU paper's
  batch-2048 ones) is listed beside it with sources.
- ``ablation``: one row per model, each paired against the baseline model (``--baseline``, full MERU) on
  accuracy (zero-shot per level, R@1) and on the hierarchy properties (Spearman of specificity vs distance,
  images farther than their captions, cone AUC, traversal precision), with a computed one-line reading.

Statistics. A paired row ``A − B``: the difference of seed means over the seeds both have and its 95%
interval from the paired bootstrap over items x seeds that ``meru tables`` uses
(:func:`meru.reporting.tables.compare`) where per-item data exist; else a Student-t interval over the seeds'
paired differences (:func:`meru.stats.aggregate_seeds`, S >= 2), marked ``(t)``. A difference is *clear*
when its interval excludes 0.

Floors (``meru/resources/headline_metrics.csv``, the default run's: leaf >= 60, category >= 90, R@1 >= 60,
TIE <= 1.5 for every model; kind-specific floors for the plain kind only): every seed of every row is
checked; a row with a seed below a floor is flagged in the table (``floors`` column) and named under the
verdicts, never silently averaged. In the sizes study the smallest size's floors are measured and stated,
not enforced.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from meru import stats
from meru.arguments import DEFAULT_N_BOOT, PUBLISHED_CSV
from meru.arguments import add_study_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru.config import load_yaml
from meru.io import write_text
from meru.kinds import BASELINE, KINDS, PAPER
from meru.records import MetricRecord, load_metric_records
from meru.reporting import tables
from meru.reporting.records import metrics_dir_missing, model_order, size_order

ZERO_SHOT_LEVELS = tables.SYNTH_LEVELS


@dataclass(frozen=True)
class Column:
    """One study column: ``metric`` of ``task`` on ``dataset``, shown as ``label`` with ``digits`` decimals;
    ``group`` "accuracy" or "hierarchy"; ``lower``: lower is better (TIE)."""

    task: str
    dataset: str
    metric: str
    label: str
    digits: int
    group: str
    lower: bool = False

    @property
    def key(self) -> str:
        return f"{self.task}/{self.dataset}/{self.metric}"


def study_columns(records: list[MetricRecord], study: str) -> list[Column]:
    """The columns present in ``records``: zero-shot top-1 per level (+ attribute sets), retrieval R@1 (and for
    sizes / batch R@5), linear probe (sizes / batch), then the hierarchy metrics: TIE of the leaf level (sizes /
    batch), Spearman of specificity vs distance, images farther than captions, cone AUC, traversal precision."""
    present: dict[str, set] = {}
    for r in records:
        present.setdefault(r.task, set()).add(r.dataset)
    full = study != "ablation"
    out = [
        Column("zeroshot", d, "top1", f"zero-shot {tables.dataset_label(d)}", 1, "accuracy")
        for d in sorted(present.get("zeroshot", ()), key=tables._dataset_key)  # the tables' column order
    ]
    for d in sorted(present.get("retrieval", ())):
        for k in (1, 5) if full else (1,):
            out += [
                Column("retrieval", d, f"{w}_r{k}", f"R@{k} {a}{_on(present, 'retrieval', d)}", 1, "accuracy")
                for w, a in _DIRECTIONS
            ]
    if full:
        out += [
            Column("linear-probe", d, "top1", f"linear probe{_on(present, 'linear-probe', d)}", 1, "accuracy")
            for d in sorted(present.get("linear-probe", ()))
        ]
        leaf = [d for d in present.get("zeroshot", ()) if tables.dataset_label(d) == ZERO_SHOT_LEVELS[-1]]
        out += [Column("zeroshot", d, "tie", "TIE", 2, "hierarchy", lower=True) for d in leaf]
    for task, metric, label in _HIERARCHY:
        out += [
            Column(task, d, metric, label + _on(present, task, d), 3, "hierarchy")
            for d in sorted(present.get(task, ()))
        ]
    return [
        c for c in out if any(r.task == c.task and r.dataset == c.dataset and c.metric in r.metrics for r in records)
    ]


def _on(present: dict, task: str, dataset: str) -> str:
    """`` (DATASET)`` when ``task`` was evaluated on more than one dataset (column labels stay unique)."""
    return f" ({tables.dataset_label(dataset)})" if len(present.get(task, ())) > 1 else ""


_DIRECTIONS = (("i2t", "i→t"), ("t2i", "t→i"))
_HIERARCHY = (
    ("structure", "spearman_specificity", "Spearman specificity"),
    ("structure", "image_farther_frac", "image farther than caption"),
    ("structure", "cone_auc", "cone AUC"),
    ("traversal", "precision", "traversal precision"),
)


# ----------------------------------------------------------------------------------------- cells


def cell_entries(records: list[MetricRecord], col: Column, key) -> dict:
    """``{key(rec): [seed entries]}`` of one column, entries as :func:`meru.reporting.tables.collect` makes
    them (``{"seed", "value", "lo", "hi", "rec", "metric"}``, sorted by seed); a repeated seed raises."""
    out: dict = {}
    for rec in records:
        if rec.task != col.task or rec.dataset != col.dataset:
            continue
        value = tables.usable_value(rec, col.metric)
        if value is None:
            continue
        entries = out.setdefault(key(rec), [])
        if any(e["seed"] == rec.seed for e in entries):
            raise ValueError(f"two metric records for {rec.label} {col.key}: {rec.path}; remove the stale one")
        lo, hi = rec.intervals.get(col.metric, [None, None])
        entries.append({"seed": rec.seed, "value": value, "lo": lo, "hi": hi, "rec": rec, "metric": col.metric})
    return {k: sorted(v, key=lambda e: e["seed"]) for k, v in out.items()}


def paired_difference(a: list[dict], b: list[dict], n_boot: int) -> dict | None:
    """``A − B`` over the seeds both have (:func:`meru.reporting.tables.compare`: the paired bootstrap over
    items x seeds where per-item data exist); without per-item data a Student-t interval over the seeds'
    paired differences (``method`` "t"; none with one seed); ``clear``: :func:`clear`. None when no seed is
    shared."""
    cmp = tables.compare(a, b, n_boot=n_boot)
    if cmp is None:
        return None
    cmp["method"] = "bootstrap" if cmp["ci"] is not None else None
    if cmp["ci"] is None and len(cmp["seeds"]) >= 2:
        sa, sb = {e["seed"]: e["value"] for e in a}, {e["seed"]: e["value"] for e in b}
        agg = stats.aggregate_seeds([sa[s] - sb[s] for s in cmp["seeds"]])
        cmp.update(ci=agg["ci"], method="t")
    cmp["clear"] = clear(cmp)
    return cmp


def clear(cmp: dict | None) -> bool:
    """Whether a difference's interval excludes 0."""
    ci = (cmp or {}).get("ci")
    return ci is not None and ci[0] is not None and (ci[0] > 0 or ci[1] < 0)


def seed_item_differences(a: list[dict], b: list[dict]) -> np.ndarray | None:
    """``[S, N]`` per-item differences A − B of the seeds both have (items: per-item data whose mean is the
    metric, :func:`meru.reporting.tables.per_item_values`); ``[S, 1]`` seed differences without them."""
    sa, sb = {e["seed"]: e for e in a}, {e["seed"]: e for e in b}
    common = sorted(set(sa) & set(sb))
    if not common:
        return None
    va = [tables.per_item_values(sa[s]["rec"], sa[s]["metric"]) for s in common]
    vb = [tables.per_item_values(sb[s]["rec"], sb[s]["metric"]) for s in common]
    shapes = {x.shape if x is not None else None for x in va + vb}
    if len(shapes) == 1 and None not in shapes:
        return np.stack([x - y for x, y in zip(va, vb)])
    return np.array([[sa[s]["value"] - sb[s]["value"]] for s in common])


# ----------------------------------------------------------------------------------------- trend


def gap_slope(xs: list[float], diffs: list[np.ndarray], n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> dict:
    """OLS slope of the gap ``g_p = mean over seeds and items of diffs[p]`` against ``xs[p]`` (P >= 2 points),
    with a percentile bootstrap interval: each replicate resamples, per point, the seeds (rows of ``diffs[p]``,
    ``[S_p, N_p]``) and the items (columns, one draw shared by the seeds: the same test items) with
    replacement. Returns ``{"slope", "ci": [lo, hi], "p_value", "gaps", "n_boot"}`` (p two-sided, floored
    at 1/B, as :func:`meru.stats.paired_bootstrap`)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(xs, float)
    reps = np.empty((n_boot, len(diffs)))
    for p, d in enumerate(diffs):
        s_idx = rng.integers(0, d.shape[0], size=(n_boot, d.shape[0]))
        i_idx = rng.integers(0, d.shape[1], size=(n_boot, d.shape[1]))
        per_seed = np.stack([row[i_idx].mean(axis=1) for row in d])  # [S, B]: each seed under the item draw
        reps[:, p] = per_seed[s_idx, np.arange(n_boot)[:, None]].mean(axis=1)
    gaps = np.array([d.mean() for d in diffs])

    def slope(g: np.ndarray) -> np.ndarray:
        xc = x - x.mean()
        return ((g - g.mean(axis=-1, keepdims=True)) * xc).sum(axis=-1) / (xc**2).sum()

    rep_slopes = slope(reps)
    lo, hi = np.quantile(rep_slopes, [0.025, 0.975])
    p = float(min(1.0, max(2.0 * min(np.mean(rep_slopes <= 0), np.mean(rep_slopes >= 0)), 1.0 / n_boot)))
    return {
        "slope": float(slope(gaps)),
        "ci": [float(lo), float(hi)],
        "p_value": p,
        "gaps": gaps.tolist(),
        "n_boot": n_boot,
    }


def trend_sentence(col: Column, pair: str, trend: dict, per: str) -> str:
    """One sentence: whether ``pair`` (``MERU − CLIP``) changes along the axis (``per``: "10x parameters")."""
    lo, hi = trend["ci"]
    d = col.digits
    what = f"{col.label}: {pair} changes by {trend['slope']:+.{d}f} per {per} [{lo:+.{d}f}, {hi:+.{d}f}]"
    if lo > 0 or hi < 0:
        direction = "rises" if trend["slope"] > 0 else "falls"
        better = (trend["slope"] > 0) != col.lower
        return f"{what}: the gap does change: it {direction} ({'in favour of' if better else 'against'} {pair.split(' − ')[0]})."
    return f"{what}: the gap does not change measurably (the interval contains 0)."


# ----------------------------------------------------------------------------------------- runs and floors


def run_config(runs_dir: str | os.PathLike | None, label: str) -> dict | None:
    """The training config (``RUNS/LABEL/config.yaml``, written by ``meru train``), or None when absent."""
    if runs_dir is None:
        return None
    path = Path(runs_dir) / label / "config.yaml"
    return load_yaml(path) if path.is_file() else None


def samples_per_step(cfg: dict) -> int:
    """Samples per optimiser step of a training config: ``data.batch_size x optim.grad_accum``."""
    return int(cfg["data"]["batch_size"]) * int((cfg.get("optim") or {}).get("grad_accum") or 1)


def floor_failures(records: list[MetricRecord], model: str, size: str, floor_list: list[dict]) -> list[str]:
    """Seeds of ``(model, size)`` below a floor (:func:`meru.reporting.reproduction.floors`): ``"shape top1
    55.1 < 60 (s1)"`` each. A floor for all kinds applies to every model; a kind-specific one to the model
    named like the kind (a variant is not held to its kind's property floors)."""
    out = []
    for f in floor_list:
        if f["kinds"] is not None and model not in f["kinds"]:
            continue
        for r in records:
            if (r.model_name, r.size, r.task, r.dataset) != (model, size, f["task"], f["dataset"]):
                continue
            v = r.metrics.get(f["metric"])
            if v is None:
                continue
            if not (v >= f["floor"] if f["op"] == ">=" else v <= f["floor"]):
                bad = "<" if f["op"] == ">=" else ">"
                out.append(f"{tables.dataset_label(r.dataset)} {f['metric']} {v:.4g} {bad} {f['floor']:g} (s{r.seed})")
    return sorted(set(out))


def floors_text(failures: list[str], enforced: bool) -> str:
    if not failures:
        return "met" if enforced else "met (not enforced)"
    return ("BELOW FLOOR: " if enforced else "not enforced, below: ") + "; ".join(failures)


# ----------------------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One model row of a study: ``point`` (size name, batch size as text, or the size for an ablation), its
    numeric axis value ``x`` (parameters; samples per step), model name / display / kind / size, the seeds'
    run facts (``facts``: params, training FLOPs, batch, steps), its floor failures and whether they count."""

    point: str
    x: float | None
    model: str
    display: str
    kind: str
    size: str
    facts: dict
    failures: list[str]
    enforced: bool = True


def _first_config(records: list[MetricRecord], runs_dir) -> dict | None:
    return next((c for r in records if (c := run_config(runs_dir, r.label)) is not None), None)


def size_parameters(size: str) -> int | None:
    """Non-embedding parameters (all but the token embedding) of the baseline kind at ``size`` (kinds differ by
    a few scalars): a size's position on the sizes study's axis. None for a size this install does not know."""
    from meru.models.info import parameter_counts

    try:
        return parameter_counts(BASELINE, size)["non_embedding"]
    except (KeyError, ValueError):  # released / open_clip sizes
        return None


def run_facts(records: list[MetricRecord], runs_dir, study: str) -> dict:
    """Parameters (closed form, :func:`meru.models.info.parameter_counts`), samples per step, steps, samples
    seen and (sizes) training FLOPs = FLOPs per sample (:func:`meru.training.flops.model_train_flops`) x
    samples seen, of one row's runs (their first ``config.yaml``; None where unknown)."""
    from meru.models.info import parameter_counts

    r0 = records[0]
    try:
        counts = parameter_counts(r0.kind, r0.size) if r0.kind in KINDS else {}
    except (KeyError, ValueError):  # a size this install does not know (released / open_clip sizes)
        counts = {}
    params, non_embedding = counts.get("total"), counts.get("non_embedding")
    cfg = _first_config(records, runs_dir)
    batch = samples_per_step(cfg) if cfg else None
    steps = int(cfg["optim"]["total_steps"]) if cfg else None
    out = {"params": params, "non_embedding": non_embedding, "batch": batch, "steps": steps}
    out["samples"] = batch * steps if cfg else None
    out["train_flops"] = None
    if study == "sizes" and cfg and params is not None:
        from meru.training.flops import model_train_flops

        out["train_flops"] = float(model_train_flops(r0.size)) * out["samples"]
    return out


def study_rows(
    records: list[MetricRecord], study: str, runs_dir, floor_list: list[dict], baseline: str | None = None
) -> list[Row]:
    """One :class:`Row` per (point, model): points are sizes ordered by parameters (sizes, ablation) or batch
    sizes (batch, read from each run's ``config.yaml``: refused when absent); models in display order."""
    groups: dict = {}
    for r in records:
        groups.setdefault((r.model_name, r.size), []).append(r)
    rows = []
    for (model, size), recs in groups.items():
        if study == "batch":
            by_batch: dict = {}
            for r in recs:
                cfg = run_config(runs_dir, r.label)
                if cfg is None:
                    raise ValueError(
                        f"{Path(str(runs_dir)) / r.label / 'config.yaml'} missing: the batch study reads each run's "
                        "batch size from the config.yaml `meru train` writes; give --runs the runs directory"
                    )
                by_batch.setdefault(samples_per_step(cfg), []).append(r)
            parts = [(str(b), float(b), rs) for b, rs in by_batch.items()]
        else:
            parts = [(size, None, recs)]
        for point, x, rs in parts:
            facts = run_facts(rs, runs_dir, study)
            x = x if x is not None else size_parameters(size)
            fails = floor_failures(rs, model, size, floor_list)
            rows.append(Row(point, x, model, rs[0].model_display, rs[0].kind, size, facts, fails))
    models = model_order({r.model for r in rows})
    if baseline in models:  # an ablation's baseline (full MERU) first
        models = [baseline] + [m for m in models if m != baseline]
    sizes = size_order({r.size for r in rows})
    rows.sort(key=lambda r: (r.x if r.x is not None else math.inf, sizes.index(r.size), models.index(r.model)))
    if study == "sizes" and rows:
        smallest = rows[0].point
        for r in rows:
            r.enforced = r.point != smallest
    return rows


def _row_records(records: list[MetricRecord], row: Row, runs_dir, study: str) -> list[MetricRecord]:
    recs = [r for r in records if r.model_name == row.model and r.size == row.size]
    if study == "batch":
        recs = [r for r in recs if str(samples_per_step(run_config(runs_dir, r.label))) == row.point]
    return recs


def pairs(rows: list[Row], study: str, baseline: str | None) -> list[tuple[Row, Row]]:
    """(A, B) row pairs of the paired rows: in an ablation every model against ``baseline`` (same size); in a
    scan study every model of another kind against the model of the baseline kind at the same point and size."""
    out = []
    for a in rows:
        if study == "ablation":
            b = next((r for r in rows if r.model == baseline and r.size == a.size), None)
            ok = b is not None and a.model != baseline
        else:
            base = [r for r in rows if (r.point, r.size) == (a.point, a.size) and r.kind == BASELINE]
            b = base[0] if len(base) == 1 else None
            ok = b is not None and a.kind != BASELINE
        if ok:
            out.append((a, b))
    return out


# ----------------------------------------------------------------------------------------- statistics


@dataclass
class StudyResult:
    """Everything a study writes: its rows, columns, pairs, the long statistics frame, the trend verdicts
    (scan studies), the readings (ablation) and the published context (batch)."""

    study: str
    rows: list[Row]
    columns: list[Column]
    pairs: list[tuple[Row, Row]]
    cells: dict  # (model, size, point, column key) -> seed entries
    diffs: dict  # (A model, B model, point, column key) -> paired_difference
    trends: list[dict]
    readings: dict  # A model -> reading sentence (ablation)
    context: pd.DataFrame | None = None
    context_note: str = ""


def _cells(records, rows, columns, runs_dir, study) -> dict:
    out = {}
    for row in rows:
        recs = _row_records(records, row, runs_dir, study)
        for col in columns:
            entries = cell_entries(recs, col, key=lambda r: 0).get(0)
            if entries:
                out[(row.model, row.size, row.point, col.key)] = entries
    return out


def build_study(
    records: list[MetricRecord],
    study: str,
    runs_dir=None,
    baseline: str | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    floor_list: list[dict] | None = None,
) -> StudyResult:
    """The statistics of one study (module docstring): rows, cells, paired differences, trends / readings."""
    if floor_list is None:
        from meru.reporting.reproduction import floors

        floor_list = floors()
    baseline = baseline or PAPER
    columns = study_columns(records, study)
    rows = study_rows(records, study, runs_dir, floor_list, baseline if study == "ablation" else None)
    cells = _cells(records, rows, columns, runs_dir, study)
    row_pairs = pairs(rows, study, baseline)
    diffs = {}
    for a, b in row_pairs:
        for col in columns:
            ea, eb = cells.get((a.model, a.size, a.point, col.key)), cells.get((b.model, b.size, b.point, col.key))
            if ea and eb:
                diffs[(a.model, b.model, a.point, col.key)] = paired_difference(ea, eb, n_boot)
    result = StudyResult(study, rows, columns, row_pairs, cells, diffs, [], {})
    if study == "ablation":
        result.readings = {a.model: ablation_reading(a, b, columns, diffs) for a, b in row_pairs}
    else:
        result.trends = scan_trends(result, n_boot)
    return result


def scan_trends(result: StudyResult, n_boot: int) -> list[dict]:
    """Per (other kind's model family, column): :func:`gap_slope` of A − B over log10 parameters (sizes) or
    log2 samples per step (batch), with its sentence (:func:`trend_sentence`); columns with < 2 points skipped."""
    log, per = (
        (np.log10, "10x non-embedding parameters") if result.study == "sizes" else (np.log2, "doubling of the batch")
    )
    out = []
    by_kind: dict = {}
    for a, b in result.pairs:
        by_kind.setdefault((a.kind, b.kind), []).append((a, b))
    for (ka, kb), prs in by_kind.items():
        pair_name = f"{_kind_display(ka)} − {_kind_display(kb)}"
        for col in result.columns:
            points = []
            for a, b in prs:
                ea = result.cells.get((a.model, a.size, a.point, col.key))
                eb = result.cells.get((b.model, b.size, b.point, col.key))
                d = seed_item_differences(ea, eb) if ea and eb and a.x else None
                if d is not None:
                    points.append((float(log(a.x)), d, a, b))
            if len({p[0] for p in points}) < 2:
                continue
            trend = gap_slope([p[0] for p in points], [p[1] for p in points], n_boot=n_boot)
            flagged = sorted({r.model + "@" + r.point for p in points for r in p[2:] if r.failures and r.enforced})
            sentence = trend_sentence(col, pair_name, trend, per)
            if flagged:
                sentence += f" Includes rows below a floor: {', '.join(flagged)}."
            out.append({"pair": pair_name, "kinds": (ka, kb), "column": col, "per": per, "sentence": sentence,
                        "points": [p[2].point for p in points], **trend})  # fmt: skip
    return out


def _kind_display(kind: str) -> str:
    return KINDS[kind].display_name if kind in KINDS else kind.upper()


def ablation_reading(a: Row, b: Row, columns: list[Column], diffs: dict) -> str:
    """One line: which hierarchy properties and which accuracies differ clearly (interval excludes 0) from the
    baseline, each with its sign read as better or worse (TIE: lower is better)."""
    parts: dict = {("hierarchy", True): [], ("hierarchy", False): [], ("accuracy", True): [], ("accuracy", False): []}
    for col in columns:
        cmp = diffs.get((a.model, b.model, a.point, col.key))
        if clear(cmp):
            better = (cmp["diff"] > 0) != col.lower
            parts[(col.group, better)].append(f"{col.label} {cmp['diff']:+.{col.digits}f}")
    said = [
        f"{title}: {', '.join(parts[key])}"
        for key, title in (
            (("hierarchy", True), "stronger hierarchy"),
            (("hierarchy", False), "weaker hierarchy"),
            (("accuracy", True), "gains accuracy"),
            (("accuracy", False), "costs accuracy"),
        )
        if parts[key]
    ]
    base = b.display
    return f"vs {base}: " + "; ".join(said) if said else f"no clear difference from {base} on any column"


# ----------------------------------------------------------------------------------------- display


def _num(x, d: int, sign: bool = False) -> str:
    return (f"{x:+.{d}f}" if sign else f"{x:.{d}f}").replace("-", "−")


def _sci(x) -> str | None:
    if x is None:
        return None
    exp = int(math.floor(math.log10(x))) if x > 0 else 0
    return f"{x / 10**exp:.2f}e{exp}" if x > 0 else "0"


def model_text(entries: list[dict], col: Column) -> str:
    st = tables.model_stats(entries)
    if st["n_seeds"] >= 2:
        return f"{_num(st['mean'], col.digits)} ± {_num(st['sd'], col.digits)}"
    return _num(st["mean"], col.digits)


def diff_text(cmp: dict, col: Column) -> str:
    s = _num(cmp["diff"], col.digits, sign=True)
    if cmp["ci"] is not None:
        lo, hi = cmp["ci"]
        s += f" [{_num(lo, col.digits, True)}, {_num(hi, col.digits, True)}]" + (" (t)" if cmp["method"] == "t" else "")
    return s + f" ({int(cmp['wins'])}/{len(cmp['seeds'])})"


def _axis(study: str) -> str:
    return {"sizes": "size", "batch": "batch", "ablation": "size"}[study]


def _facts_columns(study: str, row: Row | None, text: bool) -> dict:
    """The run facts a study's table shows: (sizes) parameters and training FLOPs, (batch) steps and samples
    seen; as text (``1.23e6``) or numbers."""
    f = row.facts if row is not None else {}
    show = _sci if text else (lambda x: x)
    if study == "sizes":
        return {
            "params": show(f.get("params")),
            "non-embedding params": show(f.get("non_embedding")),
            "train FLOPs": show(f.get("train_flops")),
        }
    if study == "batch":
        return {"steps": f.get("steps"), "samples seen": show(f.get("samples"))}
    return {}


def wide(result: StudyResult, text: bool = True) -> pd.DataFrame:
    """The study table: model rows (``†`` marks a row with a seed below an enforced floor) and paired rows
    ``A − B``; scan studies group them by point (size / batch), ablations list the paired rows after the models."""
    out = []

    def model_row(row: Row) -> dict:
        flag = "†" if row.failures and row.enforced and text else ""
        d = {_axis(result.study): row.point, "model": row.display + flag, **_facts_columns(result.study, row, text)}
        entries = [result.cells.get((row.model, row.size, row.point, c.key)) for c in result.columns]
        d["seeds"] = max((len(e) for e in entries if e), default=0)
        d["floors"] = floors_text(row.failures, row.enforced)
        for col, e in zip(result.columns, entries):
            d[col.label] = (model_text(e, col) if text else tables.model_stats(e)["mean"]) if e else None
        return d

    def pair_row(a: Row, b: Row) -> dict:
        d = {
            _axis(result.study): a.point,
            "model": f"{a.display} − {b.display}",
            **_facts_columns(result.study, None, text),
        }
        d["seeds"], d["floors"] = "", ""
        for col in result.columns:
            cmp = result.diffs.get((a.model, b.model, a.point, col.key))
            d[col.label] = (diff_text(cmp, col) if text else cmp["diff"]) if cmp else None
        if result.study == "ablation" and not text:  # the Markdown lists the readings below the table
            d["reading"] = result.readings.get(a.model, "")
        return d

    if result.study == "ablation":
        out = [model_row(r) for r in result.rows] + [pair_row(a, b) for a, b in result.pairs]
    else:
        for point in dict.fromkeys(r.point for r in result.rows):
            out += [model_row(r) for r in result.rows if r.point == point]
            out += [pair_row(a, b) for a, b in result.pairs if a.point == point]
    df = pd.DataFrame(out)
    return df.fillna("—") if text and len(df) else df


def stats_frame(result: StudyResult) -> pd.DataFrame:
    """Long statistics: one row per (model row, column), per (paired row, column) and per trend."""
    rows = []
    for row in result.rows:
        for col in result.columns:
            e = result.cells.get((row.model, row.size, row.point, col.key))
            if not e:
                continue
            st = tables.model_stats(e)
            rows.append({"row_type": "model", "point": row.point, "x": row.x, "model": row.model, "display": row.display,
                         "kind": row.kind, "size": row.size, "column": col.label, "task": col.task,
                         "dataset": col.dataset, "metric": col.metric, "n_seeds": st["n_seeds"],
                         "seeds": _join(st["seeds"]), "mean": st["mean"], "sd": st["sd"], "min": st["min"],
                         "max": st["max"], "values": _join(st["values"]), "floors": floors_text(row.failures, row.enforced),
                         **{k: row.facts.get(k) for k in ("params", "non_embedding", "train_flops", "batch", "steps", "samples")}})  # fmt: skip
    for a, b in result.pairs:
        for col in result.columns:
            cmp = result.diffs.get((a.model, b.model, a.point, col.key))
            if cmp is None:
                continue
            ci = cmp["ci"] or [None, None]
            rows.append({"row_type": "difference", "point": a.point, "x": a.x, "model": f"{a.model}-{b.model}",
                         "display": f"{a.display} − {b.display}", "kind": f"{a.kind}-{b.kind}", "size": a.size,
                         "column": col.label, "task": col.task, "dataset": col.dataset, "metric": col.metric,
                         "n_seeds": len(cmp["seeds"]), "seeds": _join(cmp["seeds"]), "mean": cmp["diff"],
                         "diff_lo": ci[0], "diff_hi": ci[1], "p_value": cmp["p_value"], "method": cmp["method"],
                         "n_items": cmp["n_items"], "wins": cmp["wins"], "reading": result.readings.get(a.model)})  # fmt: skip
    for t in result.trends:
        col = t["column"]
        rows.append({"row_type": "trend", "model": t["pair"], "kind": "-".join(t["kinds"]), "column": col.label,
                     "task": col.task, "dataset": col.dataset, "metric": col.metric, "point": ";".join(t["points"]),
                     "mean": t["slope"], "diff_lo": t["ci"][0], "diff_hi": t["ci"][1], "p_value": t["p_value"],
                     "method": f"bootstrap slope per {t['per']}", "values": _join(t["gaps"]), "reading": t["sentence"]})  # fmt: skip
    return pd.DataFrame(rows)


def _join(values) -> str:
    return ";".join(f"{v:.10g}" if isinstance(v, float) else str(v) for v in values)


# ----------------------------------------------------------------------------------------- published context

#: batch size (samples per step) of the published runs, by training data: GRIT runs of HyCoCLIP's model zoo
#: (its model-zoo.md: batch 768) and the MERU paper's RedCaps runs (Desai et al. 2023, sec. 4: batch 2048)
PUBLISHED_BATCH = {"grit": 768, "redcaps": 2048}
#: the published numbers the batch study lists: ImageNet zero-shot accuracy and TIE
CONTEXT_METRICS = (
    ("zeroshot", "imagenet", "mean_per_class"),
    ("zeroshot", "imagenet", "top1"),
    ("zeroshot", "imagenet", "tie"),
)


def published_context(path: str | os.PathLike = PUBLISHED_CSV) -> tuple[pd.DataFrame, str]:
    """MERU and CLIP published values beside the batch study (:func:`meru.reporting.reproduction.read_published`,
    rows matched by model / size / training data / task / dataset / metric / source): one row per (source,
    size, data, metric) with MERU, CLIP, MERU − CLIP where both are given, and the run's batch size
    (:data:`PUBLISHED_BATCH`). Returns (frame, note); an absent or unreadable file gives an empty frame and a
    note saying so."""
    from meru.reporting.reproduction import ReferenceError, read_published

    try:
        df = read_published(path)
    except (OSError, ReferenceError, ValueError) as err:
        return pd.DataFrame(), f"published context skipped: {str(err).splitlines()[0]}"
    df = df[[(t, d, m) in CONTEXT_METRICS for t, d, m in zip(df.task, df.dataset, df.metric)]]
    df = df[df.model.isin([PAPER, BASELINE])]
    rows = []
    for (source, size, data, metric), g in df.groupby(["source", "size", "training_data", "metric"], sort=False):
        vals = {m: float(v) for m, v in zip(g.model, g.value)}
        meru, clip = vals.get(PAPER), vals.get(BASELINE)
        rows.append({"source": source, "size": size, "training data": data, "batch": PUBLISHED_BATCH.get(data, "?"),
                     "metric": f"ImageNet {'TIE' if metric == 'tie' else 'zero-shot accuracy'}", "MERU": meru,
                     "CLIP": clip, "MERU − CLIP": None if meru is None or clip is None else round(meru - clip, 4)})  # fmt: skip
    if not rows:
        return pd.DataFrame(), f"published context: no ImageNet zero-shot / TIE rows for MERU or CLIP in {path}"
    out = pd.DataFrame(rows)
    note = f"Published context from {Path(path).name} (values as reported; '—': not in the file)."
    one_sided = sorted({str(r["training data"]) for r in rows if r["MERU"] is None or r["CLIP"] is None})
    if one_sided:
        note += (
            f" No MERU − CLIP where the file gives one side only ({', '.join(one_sided)}): a source's claim about "
            "the gap (e.g. the MERU paper's, at batch 2048) is not computed here."
        )
    return out, note


# ----------------------------------------------------------------------------------------- files

TITLES = {
    "sizes": "Model sizes: MERU and CLIP at several sizes",
    "ablation": "Ablations: each model paired against full MERU",
    "batch": "Batch size: MERU − CLIP against samples per step (equal samples seen)",
}


def notes(result: StudyResult, n_boot: int) -> list[str]:
    out = [
        "Model rows: mean ± sd over training seeds. Paired rows A − B: difference of seed means over the seeds "
        f"both have, [95% interval] from a paired bootstrap over test items x seeds ({n_boot} resamples; "
        "`meru tables`' difference rows), or (t): a Student-t interval over the seeds' paired differences where "
        "the metric has no per-item data; (k/S) = seeds where A is higher.",
        "Units: accuracy and recall in %, TIE in tree edges (lower is better), the hierarchy metrics 0–1 "
        "(Spearman −1 to 1).",
        "floors: every seed against meru/resources/headline_metrics.csv (leaf ≥ 60, category ≥ 90, R@1 ≥ 60, "
        "TIE ≤ 1.5; MERU's property floors for the plain kind only); † marks a row with a seed below an enforced "
        "floor. Its numbers are shown, and they are never averaged out of sight.",
    ]
    if result.study == "sizes":
        out.append(
            "params: total parameters (meru info); non-embedding params: all but the token embedding, the axis of "
            "the trend; train FLOPs: FLOPs per sample of the towers, counted by "
            "torch.utils.flop_counter on one step (text at full context), x batch x steps of the run's config. "
            "The smallest size's floors are measured and stated, not enforced."
        )
    if result.study == "batch":
        out.append("batch: samples per optimiser step (data.batch_size x optim.grad_accum of each run's config.yaml).")
    return out


def markdown(result: StudyResult, n_boot: int) -> str:
    disp = wide(result)
    lines = [f"## {TITLES[result.study]}", ""]
    lines.append(tables.to_markdown(disp) if len(disp) else "(no results for this study in the metrics)")
    lines += ["", *[f"- {n}" for n in notes(result, n_boot)]]
    if result.trends:
        lines += ["", "### Verdicts: does the gap change?", ""] + [f"- {t['sentence']}" for t in result.trends]
    if result.readings:
        lines += ["", "### Readings: which component buys which property", ""]
        lines += [f"- {a.display}: {result.readings[a.model]}" for a, _ in result.pairs]
    flagged = [r for r in result.rows if r.failures]
    if flagged:
        lines += ["", "### Floors", ""]
        lines += [f"- {r.display} {r.point}: {floors_text(r.failures, r.enforced)}" for r in flagged]
    if result.study == "batch":
        lines += ["", "### Published context", "", result.context_note]
        if result.context is not None and len(result.context):
            lines += ["", tables.to_markdown(result.context.fillna("—"))]
    return "\n".join(lines) + "\n"


def output_names(study: str) -> list[str]:
    """The files ``meru study --type STUDY`` writes (relative to ``--out``), figures included."""
    from meru.reporting.outputs import study_outputs

    return study_outputs(study)


def write_study(
    metrics_dir, out_dir, study: str, runs_dir=None, baseline=None, n_boot=DEFAULT_N_BOOT, published=PUBLISHED_CSV
) -> StudyResult:
    """Build a study from the records under ``metrics_dir`` and write its tables and figure under ``out_dir``."""
    from meru.reporting import study_plots

    records = [r for r in load_metric_records(metrics_dir) if r.task != "prompts"]
    result = build_study(records, study, runs_dir, baseline, n_boot)
    if study == "batch":
        result.context, result.context_note = published_context(published)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / f"{study}.csv", wide(result, text=False).to_csv(index=False))
    write_text(out / f"{study}.md", markdown(result, n_boot))
    write_text(out / f"{study}_stats.csv", stats_frame(result).to_csv(index=False))
    study_plots.draw(result, out)
    return result


def run(args) -> int:
    if metrics_dir_missing(args.metrics, "study"):
        return 2
    if args.n_boot < 1:
        print(f"meru study: error: --n-boot must be >= 1, got {args.n_boot}", file=sys.stderr)
        return 2
    try:
        result = write_study(args.metrics, args.out, args.type, args.runs, args.baseline, args.n_boot, args.published)
    except ValueError as err:
        print(f"meru study: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}/{args.type}.md: {len(result.rows)} model rows, {len(result.pairs)} paired rows")
    for line in [t["sentence"] for t in result.trends] + list(result.readings.values()):
        print(f"  {line}")
    return 0
