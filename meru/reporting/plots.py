"""Figures from metric records and training logs (``meru plots --metrics DIR --runs DIR --out DIR``).

Each figure is written as ``NAME.pdf`` and ``NAME.png`` (200 dpi), atomically. Everything comes from the
metric records' fields (``plot`` holds what a figure needs; no embedding cache is opened) and the training
runs' ``RUNS/*/log.jsonl`` with their ``config.yaml``. Models are the model names in the records (a kind, or a
config variant of it), shown by their display names; colour = kind (fixed palette, fallback colours for
others), marker / line style = seed.

- ``zeroshot_bars``: zero-shot top-1 per dataset (SynthHier: taxonomy level) and size: bar = seed mean,
  points = seeds with their 95% bootstrap intervals over test items;
- ``scaling``: mean zero-shot top-1 over datasets vs model size (only written with >= 2 sizes);
- ``root_distance_hist``: histograms of the distance from [ROOT] of images and captions (structure record
  ``plot["histogram"]``), one column per geometry, each with its own axis and unit;
- ``depth_vs_distance``: mean ± sd distance from [ROOT] of pool captions per specificity level (structure
  record ``plot["text_root_by_specificity"]``), one panel per geometry;
- ``traversal``: the captions met walking from the first images toward [ROOT] (traversal record
  ``plot["paths"]``), one panel per model;
- ``training_curves``: loss, curvature and alpha scales vs step; model, size and seed of each run from its
  ``config.yaml`` (``model.kind``, ``model.name``, ``model.display``, ``model.size``, ``runtime.seed``), never
  from the directory name.

Figures whose data are absent say so in their body, so the declared outputs exist for every config.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from meru.config import load_yaml
from meru.data.wds_eval import images_by_key
from meru.io import save_figure
from meru.records import MetricRecord, display_name, load_metric_records
from meru.reporting import tables
from meru.reporting.outputs import FIGURE_FORMATS as FORMATS
from meru.reporting.outputs import PLOTS
from meru.reporting.records import (
    SEED_LINESTYLES,
    SEED_MARKERS,
    kind_colors,
    metrics_dir_missing,
    model_colors,
    model_displays,
    model_order,
    root_distance_label,
    size_order,
)
from meru.arguments import add_plots_arguments as add_arguments  # noqa: F401  (light: fast --help)

DPI = 200


def plot_names(n_sizes: int) -> list[str]:
    """The figures written for ``n_sizes`` model sizes (``scaling`` needs two or more)."""
    return [p for p in PLOTS if p != "scaling" or n_sizes >= 2]


def _style(seeds: list[int]) -> dict[int, tuple[str, str]]:
    """seed -> (marker, linestyle), by the seed's rank among ``seeds``."""
    return {
        s: (SEED_MARKERS[i % len(SEED_MARKERS)], SEED_LINESTYLES[i % len(SEED_LINESTYLES)])
        for i, s in enumerate(sorted(set(seeds)))
    }


def _save(fig, path: Path) -> list[Path]:
    """``path`` without suffix -> ``path.pdf`` and ``path.png`` (temp file + rename each)."""
    out = []
    for fmt in FORMATS:
        target = path.with_suffix(f".{fmt}")
        save_figure(fig, target, dpi=DPI, bbox_inches="tight")
        out.append(target)
    plt.close(fig)
    return out


def _empty(ax, what: str, where: str = "in the metrics") -> None:
    ax.text(0.5, 0.5, f"no {what} {where}", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def zeroshot_frame(records: list[MetricRecord], metric: str = "Top-1"):
    """Model rows of the zero-shot table for one metric block (``Top-1``; else the first block present)."""
    spec = next(s for s in tables.SPECS if s.name == "zeroshot")
    df = tables.build(records, spec, n_boot=1)
    df = df[df.row_type == "model"]
    if len(df):
        df = df[df.block == (metric if metric in set(df.block) else df.block.iloc[0])]
    return df.reset_index(drop=True)


def zoomed_limits(lo: float, hi: float, chance: float | None, full: float = 100.0) -> tuple[float, float]:
    """y-limits of a zero-shot panel: the whole 0..``full`` axis when the values spread over half of it, else
    zoomed on [lo, hi] (padded by 15% of the spread, >= 1 point), widened to show ``chance`` when that costs
    at most doubling the span."""
    if hi - lo > full / 2:
        return 0.0, full
    pad = max(0.15 * (hi - lo), 1.0)
    a, b = max(0.0, lo - pad), min(full, hi + pad)
    if chance is not None and chance < a and (b - chance) <= 2 * (b - a):
        a = max(0.0, chance - pad)
    return a, b


def zeroshot_bars(records: list[MetricRecord], path: Path) -> list[Path]:
    """One panel per dataset column, each with its own (zoomed) y-axis: seed mean (bar top), each seed with
    its 95% interval, and the chance line 100 / n_classes; one compact legend below the panels."""
    df = zeroshot_frame(records)
    columns = list(dict.fromkeys(df["column"])) if len(df) else []
    if not columns:
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        _empty(ax, "zero-shot results")
        return _save(fig, path)
    kinds, sizes = model_order(df.kind), size_order(df["size"])
    colors, names = model_colors(records), model_displays(records)
    seeds = sorted({s for ss in df.seeds for s in ss})
    style = _style(seeds)
    chance = _chance_by_column(records, df)
    slots = [(size, kind) for size in sizes for kind in kinds]
    fig, axes = plt.subplots(
        1, len(columns), figsize=(1.2 + (0.55 * len(slots) + 0.9) * len(columns), 3.4), squeeze=False
    )
    for ax, column in zip(axes[0], columns):
        dc = df[df.column == column]
        for x, (size, kind) in enumerate(slots):
            r = dc[(dc["size"] == size) & (dc.kind == kind)]
            if len(r):
                _seed_points(ax, x, r.iloc[0], colors[kind], style)
        lows = [lo if lo is not None else v for r in dc.itertuples() for v, lo in zip(r.values, r.seed_lo)]
        highs = [hi if hi is not None else v for r in dc.itertuples() for v, hi in zip(r.values, r.seed_hi)]
        ymin, ymax = zoomed_limits(min(lows), max(highs), chance.get(column))
        ax.set_ylim(ymin, ymax)
        if chance.get(column) is not None:
            _chance_line(ax, chance[column], ymin)
        labels = [names[k].replace(", ", ",\n") + (f"\n{s}" if len(sizes) > 1 else "") for s, k in slots]
        ax.set_xticks(range(len(slots)), labels, fontsize=8)
        ax.set_xlim(-0.6, len(slots) - 0.4)
        ax.set_title(column + ("" if ymin == 0 else f"  (axis from {ymin:.0f}%)"), fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", lw=0.4, alpha=0.5)
    axes[0, 0].set_ylabel(f"zero-shot {df.block.iloc[0].lower()} accuracy (%)", fontsize=9)
    size_note = f"model size {sizes[0]}; " if len(sizes) == 1 else ""
    synth = "taxonomy level or attribute" if any(c.endswith(" (attribute)") for c in columns) else "taxonomy level"
    fig.suptitle(f"Zero-shot accuracy per dataset ({size_note}SynthHier: {synth})", fontsize=10)
    handles = [plt.Line2D([], [], color="0.3", marker="_", ms=14, mew=2.5, ls="none", label="mean over seeds")]
    handles += [
        plt.Line2D([], [], color="0.3", marker=style[s][0], ms=4, ls="none", label=f"seed {s} (95% CI)") for s in seeds
    ]
    handles.append(plt.Line2D([], [], color="0.4", ls="--", lw=1, label="chance (1 / classes)"))
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    return _save(fig, path)


def _chance_by_column(records: list[MetricRecord], df) -> dict[str, float]:
    """Chance accuracy (%) 100 / n_classes per zero-shot table column (column = the dataset's table label,
    :func:`meru.reporting.tables.dataset_label`, as :func:`zeroshot_frame` shows it)."""
    out = {}
    columns = set(df["column"])
    for r in records:
        if r.task == "zeroshot" and r.details.get("n_classes") and tables.dataset_label(r.dataset) in columns:
            out[tables.dataset_label(r.dataset)] = 100.0 / r.details["n_classes"]
    return out


def _chance_line(ax, chance: float, ymin: float) -> None:
    """Dashed chance line when it lies on the axis, else a note at the panel's bottom."""
    if chance >= ymin:
        ax.axhline(chance, color="0.4", ls="--", lw=1, gid="chance", zorder=0)
    else:
        ax.text(
            0.5,
            0.02,
            f"chance {chance:.3g}% (below axis)",
            transform=ax.transAxes,
            ha="center",
            fontsize=7,
            color="0.35",
            gid="chance",
        )


def _seed_points(ax, x: float, r, color: str, style: dict) -> None:
    """Seed mean as a wide tick over a light bar from the axis bottom; seeds as points with 95% intervals."""
    ax.bar(x, r["mean"], 0.7, color=color, alpha=0.18, zorder=1)
    ax.plot([x - 0.35, x + 0.35], [r["mean"]] * 2, color=color, lw=2.5, zorder=2)
    offsets = np.linspace(-0.18, 0.18, len(r["seeds"])) if len(r["seeds"]) > 1 else [0.0]
    for dx, seed, v, lo, hi in zip(offsets, r["seeds"], r["values"], r["seed_lo"], r["seed_hi"]):
        err = None if lo is None else [[v - lo], [hi - v]]
        ax.errorbar(x + dx, v, yerr=err, fmt=style[seed][0], color=color, ms=4, capsize=2, lw=0.8, zorder=3)


def scaling(records: list[MetricRecord], path: Path) -> list[Path]:
    """Mean top-1 over the datasets present for every size, per model and seed (>= 2 sizes)."""
    df = zeroshot_frame(records)
    sizes = size_order(df["size"]) if len(df) else []
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    if len(sizes) < 2:
        _empty(ax, "two or more model sizes")
        return _save(fig, path)
    kinds = model_order(df.kind)
    colors, names = model_colors(records), model_displays(records)
    style = _style([s for seeds in df.seeds for s in seeds])
    for kind in kinds:
        dk = df[df.kind == kind]
        per_seed: dict[int, dict[str, list[float]]] = {}
        for r in dk.itertuples():
            for seed, v in zip(r.seeds, r.values):
                per_seed.setdefault(seed, {}).setdefault(r.size, []).append(v)
        for seed, by_size in sorted(per_seed.items()):
            xs = [i for i, s in enumerate(sizes) if s in by_size]
            ax.plot(
                xs,
                [np.mean(by_size[sizes[i]]) for i in xs],
                marker=style[seed][0],
                ls=style[seed][1],
                color=colors[kind],
                label=f"{names[kind]} seed {seed}",
            )
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_xlabel("model size")
    ax.set_ylabel("zero-shot top-1 accuracy (%), mean over datasets")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _structure(records: list[MetricRecord]) -> list[MetricRecord]:
    recs = [r for r in records if r.task == "structure"]
    models, sizes = model_order({r.model_name for r in recs}), size_order({r.size for r in recs})
    return sorted(recs, key=lambda r: (models.index(r.model_name), sizes.index(r.size), r.seed))


def _by_geometry(recs: list[MetricRecord]) -> dict[str, list[MetricRecord]]:
    out: dict[str, list[MetricRecord]] = {}
    for r in recs:
        out.setdefault(root_distance_label(r), []).append(r)
    return out


def _run_name(rec: MetricRecord, n_sizes: int) -> str:
    return f"{rec.model_display}{' ' + rec.size if n_sizes > 1 else ''} seed {rec.seed}"


def root_distance_hist(records: list[MetricRecord], path: Path) -> list[Path]:
    recs = [r for r in _structure(records) if r.plot["histogram"]["edges"]]
    groups = _by_geometry(recs)
    ncol = max(1, len(groups))
    fig, axes = plt.subplots(2, ncol, figsize=(4.2 * ncol, 5.4), squeeze=False)
    if not groups:
        for ax in axes.ravel():
            _empty(ax, "distance histograms (structure results)")
        return _save(fig, path)
    colors = model_colors(recs)
    style = _style([r.seed for r in recs])
    n_sizes = len({r.size for r in recs})
    for col, (label, grp) in enumerate(groups.items()):
        for row, what in enumerate(("image", "text")):
            ax = axes[row, col]
            for r in grp:
                h = r.plot["histogram"]
                ax.stairs(
                    h[f"{what}_counts"],
                    h["edges"],
                    color=colors[r.model_name],
                    ls=style[r.seed][1],
                    lw=1.2,
                    label=_run_name(r, n_sizes),
                )
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel(f"{'images' if what == 'image' else 'pool captions'} per bin")
            ax.set_title(f"{'Images' if what == 'image' else 'Captions'}: distance from [ROOT]", fontsize=9)
            ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


def depth_vs_distance(records: list[MetricRecord], path: Path, by: str = "specificity") -> list[Path]:
    key = f"text_root_by_{by}"
    recs = [r for r in _structure(records) if key in r.plot and r.plot[key]["level"]]  # needs pool levels
    groups = _by_geometry(recs)
    ncol = max(1, len(groups))
    fig, axes = plt.subplots(1, ncol, figsize=(4.4 * ncol, 3.6), squeeze=False)
    if not groups:
        _empty(axes[0, 0], f"per-{by} caption distances ('{key}' in structure results)")
        return _save(fig, path)
    colors = model_colors(recs)
    style = _style([r.seed for r in recs])
    n_sizes = len({r.size for r in recs})
    for ax, (label, grp) in zip(axes[0], groups.items()):
        for j, r in enumerate(grp):
            d = r.plot[key]
            x = np.asarray(d["level"]) + 0.06 * (j - (len(grp) - 1) / 2)
            ax.errorbar(
                x,
                d["mean"],
                yerr=d["sd"],
                marker=style[r.seed][0],
                ls=style[r.seed][1],
                ms=3,
                capsize=2,
                lw=1,
                color=colors[r.model_name],
                label=_run_name(r, n_sizes),
            )
        ax.set_xlabel(f"caption {by} (0 = most generic)")
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle("Pool captions: distance from [ROOT] (mean ± sd) per level", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def traversal_runs(records: list[MetricRecord]) -> dict[str, MetricRecord]:
    """``{model name: traversal record}``: each model's first run (smallest size, lowest seed), in display order."""
    recs: dict[str, MetricRecord] = {}
    sizes = size_order({r.size for r in records if r.task == "traversal"})
    for r in sorted((r for r in records if r.task == "traversal"), key=lambda r: (sizes.index(r.size), r.seed)):
        recs.setdefault(r.model_name, r)
    return {k: recs[k] for k in model_order(recs)}


def traversal(records: list[MetricRecord], path: Path, images: dict | None = None, n_images: int = 4) -> list[Path]:
    """As in the MERU paper: for each of the first ``n_images`` images (rows) its thumbnail (``images``:
    ``{key: PIL image}``, from the evaluation set; a placeholder naming the key without it) and, per model
    (columns), the captions retrieved walking from the image to [ROOT], in step order; captions that are not
    true of the image in red."""
    recs = traversal_runs(records)
    if not recs:
        fig, ax = plt.subplots(figsize=(5, 2))
        _empty(ax, "traversals")
        return _save(fig, path)
    keys = [im["key"] for im in next(iter(recs.values())).plot["paths"][:n_images]]
    steps = {k: {im["key"]: im["steps"] for im in r.plot["paths"]} for k, r in recs.items()}
    lines = max([len(steps[k].get(key, [])) for k in recs for key in keys] + [3])
    row_h = 0.2 + 0.17 * lines
    fig, axes = plt.subplots(
        len(keys),
        1 + len(recs),
        figsize=(1.4 + 3.6 * len(recs), 0.5 + row_h * len(keys)),
        squeeze=False,
        gridspec_kw={"width_ratios": [1.2] + [3.6] * len(recs)},
    )
    for k, r in recs.items():
        axes[0, 1 + list(recs).index(k)].set_title(
            f"{r.model_display} {r.size} seed {r.seed}: image → [ROOT]", fontsize=9
        )
    for row, key in zip(axes, keys):
        _thumbnail(row[0], (images or {}).get(key), key)
        for ax, k in zip(row[1:], recs):
            _caption_list(ax, steps[k].get(key, []), lines)
    fig.tight_layout(rect=(0, 0.03, 1, 1), h_pad=0.6, w_pad=0.4)
    fig.text(0.5, 0.005, "captions in step order, image first; red: not true of the image", ha="center", fontsize=8)
    return _save(fig, path)


def _thumbnail(ax, image, key: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if image is None:
        ax.text(
            0.5, 0.5, f"{key}\n(image not\navailable)", ha="center", va="center", fontsize=7, transform=ax.transAxes
        )
    else:
        ax.imshow(np.asarray(image), interpolation="nearest")
        ax.set_xlabel(key, fontsize=7)
    ax.set_box_aspect(1)


def _caption_list(ax, steps: list[dict], lines: int) -> None:
    """The captions of one traversal, top (the image) to bottom ([ROOT]); false ones in red."""
    ax.set_axis_off()
    for i, step in enumerate(steps):
        true = step.get("correct")
        color = "0.45" if true is None else ("black" if true else "tab:red")
        text = textwrap.shorten(step["text"], 60, placeholder="…")
        ax.text(
            0.0, 1 - (i + 0.5) / lines, f"{i + 1}. {text}", color=color, fontsize=8, va="center", transform=ax.transAxes
        )


def read_logs(runs_dir: str | os.PathLike) -> dict[str, list[dict]]:
    """``{run name: [log rows]}`` from ``RUNS/*/log.jsonl`` (rows that fail to parse raise naming the file)."""
    logs = {}
    for p in sorted(Path(runs_dir).glob("*/log.jsonl")):
        rows = []
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{p}:{n}: bad JSON line ({err})") from err
        logs[p.parent.name] = rows
    return logs


def run_identity(run_dir: str | os.PathLike) -> dict:
    """``{"kind", "model", "display", "size", "seed"}`` of a training run, from the ``config.yaml`` that
    ``meru train`` writes (``model.name`` / ``model.display`` absent: the kind's)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ValueError(f"{path} missing: the training run did not start; re-run its `meru train` rule")
    cfg = load_yaml(path)
    try:
        kind, model = cfg["model"]["kind"], cfg["model"].get("name") or cfg["model"]["kind"]
        display = cfg["model"].get("display") or display_name(model, kind)
        return {
            "kind": kind,
            "model": model,
            "display": display,
            "size": cfg["model"]["size"],
            "seed": int(cfg["runtime"]["seed"]),
        }
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: no model.kind / model.size / runtime.seed ({err}); re-run `meru train`") from None


# log.jsonl key -> panel title; each on its own axis (MERU's / EuCLIP's total loss adds the weighted entailment
# term, so the comparable quantity across kinds is the contrastive loss)
CURVES = {
    "contrastive_loss": "contrastive loss",
    "entailment_loss": "entailment loss (unweighted)",
    "loss": "total loss (as optimised)",
    "curv": "curvature c",
    "visual_alpha": "image scale alpha",
    "textual_alpha": "text scale alpha",
}
SMOOTHING_SPAN = 8  # logged points per EMA time constant: weight w = 1 - 8 / n_points, within [0, 0.9]


def smooth(values, weight: float | None = None) -> np.ndarray:
    """Debiased exponential moving average: ``m_t = w m_{t-1} + (1 - w) v_t``, divided by ``1 - w^t``
    (default ``w`` from :data:`SMOOTHING_SPAN`; ``w = 0`` returns the values)."""
    if weight is None:
        weight = float(np.clip(1 - SMOOTHING_SPAN / max(len(values), 1), 0.0, 0.9))
    out, m = np.empty(len(values)), 0.0
    for t, v in enumerate(values, 1):
        m = weight * m + (1 - weight) * v
        out[t - 1] = m / (1 - weight**t)
    return out


def _curve_points(rows: list[dict], key: str) -> tuple[list, list]:
    pts = [(r["step"], r[key]) for r in rows if "step" in r and isinstance(r.get(key), (int, float))]
    return tuple(zip(*pts)) if pts else ((), ())


def training_curves(runs_dir, path: Path) -> list[Path]:
    """One panel per logged quantity of :data:`CURVES` (2 x 3), smoothed (:func:`smooth`) over the raw
    values; colour = kind, line style = seed; one legend of the runs below the panels."""
    logs = read_logs(runs_dir) if runs_dir and Path(runs_dir).is_dir() else {}
    runs = {name: run_identity(Path(runs_dir) / name) for name in logs}
    colors = kind_colors(r["kind"] for r in runs.values())
    style = _style([r["seed"] for r in runs.values()])
    n_sizes = len({r["size"] for r in runs.values()})
    fig, axes = plt.subplots(2, 3, figsize=(11, 6.2))
    handles = {}
    for ax, (key, label) in zip(axes.ravel(), CURVES.items()):
        drawn = False
        for name, rows in sorted(logs.items(), key=lambda kv: (runs[kv[0]]["model"], runs[kv[0]]["seed"])):
            steps, values = _curve_points(rows, key)
            if not steps:
                continue
            run = runs[name]
            color, ls = colors[run["kind"]], style[run["seed"]][1]
            ax.plot(steps, values, color=color, lw=0.6, alpha=0.2)
            run_label = f"{run['display']}{' ' + run['size'] if n_sizes > 1 else ''} seed {run['seed']}"
            handles[run_label] = ax.plot(steps, smooth(values), color=color, ls=ls, lw=1.3, label=run_label)[0]
            drawn = True
        if drawn:
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("step", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(lw=0.4, alpha=0.5)
        else:
            _empty(ax, f"'{key}'", "in the training logs")
    fig.suptitle("Training: exponential moving averages (raw values faint)", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    if handles:
        fig.legend(
            handles=list(handles.values()), loc="lower center", ncol=min(len(handles), 6), fontsize=9, frameon=False
        )
    return _save(fig, path)


def traversal_images(records: list[MetricRecord], images_dir, n_images: int = 4) -> dict:
    """Thumbnails of the traversal figure: the first images' keys read from ``images_dir`` (a wds eval
    folder, e.g. SynthHier's ``eval/zeroshot_shape``); ``{}`` without one."""
    recs = traversal_runs(records)
    if not images_dir or not recs:
        return {}
    keys = [im["key"] for im in next(iter(recs.values())).plot["paths"][:n_images]]
    return images_by_key(images_dir, keys)


def write_plots(metrics_dir, runs_dir, out_dir, names: list[str] | None = None, images_dir=None) -> list[Path]:
    """The figures ``names`` (default: :func:`plot_names` of the sizes in the records) as PDF + PNG; figures of
    :data:`PLOTS` not asked for are removed from ``out_dir`` (e.g. a stale ``scaling`` of an earlier config).
    ``images_dir``: the wds eval folder the traversal thumbnails come from (optional)."""
    records = load_metric_records(metrics_dir) if Path(metrics_dir).is_dir() else []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if names is None:
        names = plot_names(len({r.size for r in records if r.task == "zeroshot"}))
    unknown = sorted(set(names) - set(PLOTS))
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; choose from {', '.join(PLOTS)}")
    draw = {
        "zeroshot_bars": lambda p: zeroshot_bars(records, p),
        "scaling": lambda p: scaling(records, p),
        "root_distance_hist": lambda p: root_distance_hist(records, p),
        "depth_vs_distance": lambda p: depth_vs_distance(records, p),
        "traversal": lambda p: traversal(records, p, traversal_images(records, images_dir)),
        "training_curves": lambda p: training_curves(runs_dir, p),
    }
    written = []
    for name in PLOTS:
        if name in names:
            written += draw[name](out / name)
        else:
            for fmt in FORMATS:
                (out / f"{name}.{fmt}").unlink(missing_ok=True)
    return written


def run(args) -> int:
    if metrics_dir_missing(args.metrics, "plots"):
        return 2
    names = [n for n in args.figures.split(",") if n] if args.figures else None
    if names is not None and set(names) - set(PLOTS):
        print(f"meru plots: error: --figures {args.figures}: choose from {', '.join(PLOTS)}", file=sys.stderr)
        return 2
    if args.images and not (Path(args.images) / "test" / "nshards.txt").is_file():
        print(
            f"meru plots: --images {args.images}: no test/nshards.txt there; give a wds evaluation folder",
            file=sys.stderr,
        )
        return 2
    for p in write_plots(args.metrics, args.runs, args.out, names, args.images):
        print(p)
    return 0
