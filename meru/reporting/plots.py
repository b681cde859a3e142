"""Figures from metric records and training logs (``meru plots --metrics DIR --runs DIR --out DIR``).

Each figure is written as ``NAME.pdf`` and ``NAME.png`` (200 dpi), atomically. Everything comes from the
metric records' fields (``plot`` holds what a figure needs; no embedding cache is opened) and the training
runs' ``RUNS/*/log.jsonl`` with their ``config.yaml``. Model kinds are those in the records; colour = kind
(fixed palette, fallback colours for others), marker / line style = seed.

- ``zeroshot_bars``: zero-shot top-1 per dataset (SynthHier: taxonomy level) and size: bar = seed mean,
  points = seeds with their 95% bootstrap intervals over test items;
- ``scaling``: mean zero-shot top-1 over datasets vs model size (only written with >= 2 sizes);
- ``root_distance_hist``: histograms of the distance from [ROOT] of images and captions (structure record
  ``plot["histogram"]``), one column per geometry, each with its own axis and unit;
- ``depth_vs_distance``: mean ± sd distance from [ROOT] of pool captions per specificity level (structure
  record ``plot["text_root_by_specificity"]``), one panel per geometry;
- ``traversal``: the captions met walking from the first images toward [ROOT] (traversal record
  ``plot["paths"]``), one panel per kind;
- ``training_curves``: loss, curvature and alpha scales vs step; kind, size and seed of each run from its
  ``config.yaml`` (``model.kind``, ``model.size``, ``runtime.seed``), never from the directory name.

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

from meru.arguments import add_plots_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru.config import load_yaml
from meru.io import save_figure
from meru.records import MetricRecord, load_metric_records
from meru.reporting import tables
from meru.reporting.outputs import FIGURE_FORMATS as FORMATS
from meru.reporting.outputs import PLOTS
from meru.reporting.records import (
    SEED_LINESTYLES,
    SEED_MARKERS,
    kind_colors,
    kind_name,
    kind_order,
    metrics_dir_missing,
    root_distance_label,
    size_order,
)

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


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in the metrics", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def zeroshot_frame(records: list[MetricRecord], metric: str = "Top-1"):
    """Model rows of the zero-shot table for one metric block (``Top-1``; else the first block present)."""
    spec = next(s for s in tables.SPECS if s.name == "zeroshot")
    df = tables.build(records, spec, n_boot=1)
    df = df[df.row_type == "model"]
    if len(df):
        df = df[df.block == (metric if metric in set(df.block) else df.block.iloc[0])]
    return df.reset_index(drop=True)


def zeroshot_bars(records: list[MetricRecord], path: Path) -> list[Path]:
    df = zeroshot_frame(records)
    groups = list(dict.fromkeys(zip(df["column"], df["size"]))) if len(df) else []
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(groups) + 2), 3.6))
    if not groups:
        _empty(ax, "zero-shot results")
        return _save(fig, path)
    kinds = kind_order(df.kind)
    colors = kind_colors(kinds)
    style = _style([s for seeds in df.seeds for s in seeds])
    width = 0.8 / len(kinds)
    for g, (column, size) in enumerate(groups):
        for i, kind in enumerate(kinds):
            r = df[(df.column == column) & (df["size"] == size) & (df.kind == kind)]
            if not len(r):
                continue
            r = r.iloc[0]
            x = g - 0.4 + width * (i + 0.5)
            ax.bar(
                x,
                r["mean"],
                width * 0.9,
                color=colors[kind],
                alpha=0.35,
                label=kind_name(kind) + " (seed mean)" if g == 0 else None,
            )
            offsets = np.linspace(-0.25, 0.25, len(r["seeds"])) * width if len(r["seeds"]) > 1 else [0.0]
            for dx, seed, v, lo, hi in zip(offsets, r["seeds"], r["values"], r["seed_lo"], r["seed_hi"]):
                err = None if lo is None else [[v - lo], [hi - v]]
                ax.errorbar(
                    x + dx,
                    v,
                    yerr=err,
                    fmt=style[seed][0],
                    color=colors[kind],
                    ms=4,
                    capsize=2,
                    lw=0.8,
                    label=f"{kind_name(kind)} seed {seed}" if g == 0 else None,
                )
    ax.set_xticks(range(len(groups)), [f"{c}\n{s}" for c, s in groups], fontsize=8)
    ax.set_xlabel("dataset (SynthHier: taxonomy level) / model size")
    ax.set_ylabel(f"zero-shot {df.block.iloc[0].lower()} accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Zero-shot accuracy: bars = mean over seeds, points = seeds (95% bootstrap intervals)", fontsize=9)
    return _save(fig, path)


def scaling(records: list[MetricRecord], path: Path) -> list[Path]:
    """Mean top-1 over the datasets present for every size, per kind and seed (>= 2 sizes)."""
    df = zeroshot_frame(records)
    sizes = size_order(df["size"]) if len(df) else []
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    if len(sizes) < 2:
        _empty(ax, "two or more model sizes")
        return _save(fig, path)
    kinds = kind_order(df.kind)
    colors = kind_colors(kinds)
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
                label=f"{kind_name(kind)} seed {seed}",
            )
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_xlabel("model size")
    ax.set_ylabel("zero-shot top-1 accuracy (%), mean over datasets")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _structure(records: list[MetricRecord]) -> list[MetricRecord]:
    recs = [r for r in records if r.task == "structure"]
    kinds, sizes = kind_order({r.kind for r in recs}), size_order({r.size for r in recs})
    return sorted(recs, key=lambda r: (kinds.index(r.kind), sizes.index(r.size), r.seed))


def _by_geometry(recs: list[MetricRecord]) -> dict[str, list[MetricRecord]]:
    out: dict[str, list[MetricRecord]] = {}
    for r in recs:
        out.setdefault(root_distance_label(r), []).append(r)
    return out


def _run_name(rec: MetricRecord, n_sizes: int) -> str:
    return f"{kind_name(rec.kind)}{' ' + rec.size if n_sizes > 1 else ''} seed {rec.seed}"


def root_distance_hist(records: list[MetricRecord], path: Path) -> list[Path]:
    recs = [r for r in _structure(records) if r.plot["histogram"]["edges"]]
    groups = _by_geometry(recs)
    ncol = max(1, len(groups))
    fig, axes = plt.subplots(2, ncol, figsize=(4.2 * ncol, 5.4), squeeze=False)
    if not groups:
        for ax in axes.ravel():
            _empty(ax, "distance histograms (structure results)")
        return _save(fig, path)
    colors = kind_colors(r.kind for r in recs)
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
                    color=colors[r.kind],
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
    colors = kind_colors(r.kind for r in recs)
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
                color=colors[r.kind],
                label=_run_name(r, n_sizes),
            )
        ax.set_xlabel(f"caption {by} (0 = most generic)")
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle("Pool captions: distance from [ROOT] (mean ± sd) per level", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def traversal(records: list[MetricRecord], path: Path, n_images: int = 4) -> list[Path]:
    """Captions listed along image -> [ROOT] for the first ``n_images`` images of each kind's first run."""
    recs: dict[str, MetricRecord] = {}
    for r in sorted((r for r in records if r.task == "traversal"), key=lambda r: (r.size, r.seed)):
        recs.setdefault(r.kind, r)
    kinds = kind_order(recs) or ["(none)"]
    text = {}
    for kind in kinds:
        images = recs[kind].plot["paths"] if kind in recs else []
        text[kind] = "\n\n".join(
            textwrap.fill(
                f"image {i}: " + " -> ".join(step["text"] for step in im["steps"]),
                width=78,
                subsequent_indent="    ",
            )
            for i, im in enumerate(images[:n_images])
        )
    lines = max([t.count("\n") + 1 for t in text.values() if t] or [4])
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 0.6 + 0.14 * lines), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        ax.set_axis_off()
        r = recs.get(kind)
        if not text[kind]:
            _empty(ax, "traversals")
            continue
        ax.set_title(f"{kind_name(kind)} {r.size} seed {r.seed}: image -> [ROOT]", fontsize=9)
        ax.text(0, 1, text[kind], va="top", ha="left", fontsize=7, family="monospace", transform=ax.transAxes)
    return _save(fig, path)


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
    """``{"kind", "size", "seed"}`` of a training run, from the ``config.yaml`` that ``meru train`` writes."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ValueError(f"{path} missing: the training run did not start; re-run its `meru train` rule")
    cfg = load_yaml(path)
    try:
        return {"kind": cfg["model"]["kind"], "size": cfg["model"]["size"], "seed": int(cfg["runtime"]["seed"])}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: no model.kind / model.size / runtime.seed ({err}); re-run `meru train`") from None


CURVES = {
    "loss": "training loss",
    "curv": "curvature c",
    "visual_alpha": "image scale alpha",
    "textual_alpha": "text scale alpha",
}


def training_curves(runs_dir, path: Path) -> list[Path]:
    logs = read_logs(runs_dir) if runs_dir and Path(runs_dir).is_dir() else {}
    runs = {name: run_identity(Path(runs_dir) / name) for name in logs}
    colors = kind_colors(r["kind"] for r in runs.values())
    style = _style([r["seed"] for r in runs.values()])
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for ax, (key, label) in zip(axes, CURVES.items()):
        drawn = False
        for name, rows in logs.items():
            pts = [(r["step"], r[key]) for r in rows if "step" in r and isinstance(r.get(key), (int, float))]
            if pts:
                s, v = zip(*pts)
                run = runs[name]
                ax.plot(s, v, color=colors[run["kind"]], ls=style[run["seed"]][1], lw=1, label=name)
                drawn = True
        if drawn:
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylabel(label)
            ax.legend(fontsize=6)
        else:
            _empty(ax, f"'{key}' in training logs")
    fig.tight_layout()
    return _save(fig, path)


def write_plots(metrics_dir, runs_dir, out_dir, names: list[str] | None = None) -> list[Path]:
    """The figures ``names`` (default: :func:`plot_names` of the sizes in the records) as PDF + PNG; figures of
    :data:`PLOTS` not asked for are removed from ``out_dir`` (e.g. a stale ``scaling`` of an earlier config)."""
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
        "traversal": lambda p: traversal(records, p),
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
        print(f"meru plots: --figures {args.figures}: choose from {', '.join(PLOTS)}", file=sys.stderr)
        return 2
    for p in write_plots(args.metrics, args.runs, args.out, names):
        print(p)
    return 0
