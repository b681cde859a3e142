"""The studies' figures (written by ``meru study``, beside its tables), in the style of :mod:`meru.reporting.plots`:
PDF + 200-dpi PNG each, atomically, labelled axes with units. Each draws a ``result``, the
:class:`meru.reporting.studies.StudyResult` that calls it (not imported here: no import circle).

- ``sizes_gap`` / ``batch_gap``: MERU − CLIP (each other kind − the baseline kind) against parameters or
  samples per step (log axis), one panel per headline accuracy column (zero-shot leaf level, R@1 both ways):
  each seed's difference as a point, the paired difference with its 95% interval, the zero line and the
  fitted trend (:func:`meru.reporting.studies.gap_slope`) with its slope interval in the panel title;
- ``ablation_hierarchy``: one bar group per hierarchy property (Spearman of specificity vs distance, images
  farther than captions, cone AUC, traversal precision), a bar per model (seed mean, seed points on it);
  ``*`` above a bar whose paired difference from the baseline has an interval excluding 0.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from meru.reporting import tables
from meru.reporting.outputs import STUDY_FIGURES
from meru.reporting.plots import _empty, _save, _style
from meru.reporting.records import SEED_MARKERS

AXIS_LABELS = {"sizes": "non-embedding parameters (log scale)", "batch": "samples per optimiser step (log scale)"}


def draw(result, out: Path) -> list[Path]:
    """The study's figure (:data:`meru.reporting.outputs.STUDY_FIGURES`) under ``out``."""
    path = Path(out) / STUDY_FIGURES[result.study]
    return ablation_hierarchy(result, path) if result.study == "ablation" else scan_gap(result, path)


def headline_columns(result) -> list:
    """Zero-shot at the leaf level and R@1 both ways (those present; else the first accuracy columns)."""
    leaf = [c for c in result.columns if c.metric == "top1" and c.task == "zeroshot"]
    leaf = [c for c in leaf if tables.dataset_label(c.dataset) == tables.SYNTH_LEVELS[-1]] or leaf[:1]
    r1 = [c for c in result.columns if c.task == "retrieval" and c.metric.endswith("_r1")]
    return (leaf + r1)[:4]


def scan_gap(result, path: Path) -> list[Path]:
    columns = headline_columns(result)
    prs = [(a, b) for a, b in result.pairs if a.x]
    if not columns or not prs:
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        _empty(ax, "paired MERU − CLIP results")
        return _save(fig, path)
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.6), squeeze=False)
    seeds = sorted({s for cmp in result.diffs.values() if cmp for s in cmp["seeds"]})
    style = _style(seeds)
    for ax, col in zip(axes[0], columns):
        _gap_panel(ax, result, col, prs, style)
    pair = next((t["pair"] for t in result.trends), f"{prs[0][0].display} − {prs[0][1].display}")
    axes[0, 0].set_ylabel(f"{pair} (points)")
    handles = [plt.Line2D([], [], color="0.2", marker="o", ms=6, lw=1.5, label="paired difference (95% CI)")]
    handles += [plt.Line2D([], [], color="0.5", marker=style[s][0], ms=4, ls="none", label=f"seed {s}") for s in seeds]
    handles.append(plt.Line2D([], [], color="tab:purple", ls="--", lw=1, label="trend (OLS over log axis)"))
    fig.suptitle(
        {"sizes": "Gap against model size", "batch": "Gap against batch size (equal samples seen)"}[result.study],
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    return _save(fig, path)


def _gap_panel(ax, result, col, prs, style) -> None:
    """One column: seed differences, paired difference with interval, zero line, trend line."""
    xs = []
    for a, b in prs:
        cmp = result.diffs.get((a.model, b.model, a.point, col.key))
        if cmp is None:
            continue
        ea = {e["seed"]: e["value"] for e in result.cells[(a.model, a.size, a.point, col.key)]}
        eb = {e["seed"]: e["value"] for e in result.cells[(b.model, b.size, b.point, col.key)]}
        for j, s in enumerate(cmp["seeds"]):
            jitter = 1 + 0.04 * (j - (len(cmp["seeds"]) - 1) / 2)
            ax.plot(a.x * jitter, ea[s] - eb[s], style[s][0], color="0.55", ms=4, zorder=2)
        lo, hi = cmp["ci"] or (cmp["diff"], cmp["diff"])
        ax.errorbar(a.x, cmp["diff"], yerr=[[cmp["diff"] - lo], [hi - cmp["diff"]]], fmt="o", color="0.15", ms=6,
                    capsize=3, lw=1.5, zorder=3)  # fmt: skip
        xs.append(a.x)
    ax.axhline(0, color="0.3", lw=0.8, zorder=1)
    trend = next((t for t in result.trends if t["column"] == col), None)
    title = col.label
    if trend is not None and xs:
        log = np.log10 if result.study == "sizes" else np.log2
        lx = log(np.asarray(sorted(xs)))
        intercept = float(np.mean(trend["gaps"])) - trend["slope"] * float(np.mean(log(np.asarray(xs))))
        ax.plot(sorted(xs), intercept + trend["slope"] * lx, "--", color="tab:purple", lw=1, zorder=1)
        lo, hi = trend["ci"]
        short = "10× params" if result.study == "sizes" else "2× batch"
        title += f"\nslope {trend['slope']:+.2f} [{lo:+.2f}, {hi:+.2f}] per {short}"
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(xs)), [_tick(result, x) for x in sorted(set(xs))], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel(AXIS_LABELS[result.study], fontsize=9)
    ax.set_title(title, fontsize=9)
    ax.grid(lw=0.4, alpha=0.5)


def _tick(result, x: float) -> str:
    if result.study == "batch":
        return f"{int(x)}"
    size = next((r.size for r in result.rows if r.x == x), "")
    return f"{x / 1e6:.2g}M\n{size}"


def ablation_hierarchy(result, path: Path) -> list[Path]:
    columns = [c for c in result.columns if c.group == "hierarchy"]
    rows = result.rows
    if not columns or not rows:
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        _empty(ax, "hierarchy metrics of the ablation")
        return _save(fig, path)
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * len(rows) * len(columns), 3.8))
    width = 0.8 / len(rows)
    colors = plt.get_cmap("tab10")
    paired = {a.model: b for a, b in result.pairs}
    for i, row in enumerate(rows):
        for g, col in enumerate(columns):
            entries = result.cells.get((row.model, row.size, row.point, col.key))
            if not entries:
                continue
            x = g - 0.4 + width * (i + 0.5)
            values = [e["value"] for e in entries]
            ax.bar(
                x, np.mean(values), width * 0.9, color=colors(i % 10), alpha=0.75, label=row.display if g == 0 else None
            )
            for j, v in enumerate(values):
                ax.plot(x, v, SEED_MARKERS[j % len(SEED_MARKERS)], color="0.15", ms=2.5)
            b = paired.get(row.model)
            if b is not None and (result.diffs.get((row.model, b.model, row.point, col.key)) or {}).get("clear"):
                ax.text(x, max(values) + 0.02, "*", ha="center", fontsize=10)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(range(len(columns)), [c.label for c in columns], fontsize=9)
    ax.set_ylabel("value (Spearman: −1 to 1; fractions and AUC: 0–1)", fontsize=9)
    base = next((b.display for _, b in result.pairs), "the baseline")
    ax.set_title(f"Hierarchy properties per model (* = clear difference from {base}, 95% interval)", fontsize=9)
    ax.grid(axis="y", lw=0.4, alpha=0.5)
    ax.legend(fontsize=7, ncol=min(4, len(rows)), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    return _save(fig, path)
