"""PNG figures from metric JSON and training logs (``meru plots --metrics DIR --runs DIR --out DIR``).

Always writes the six files in :data:`PLOTS` (a figure that has no data says so in its body, so the
workflow's declared outputs exist for every config), each atomically (temp file + rename):

- ``zeroshot_bars``: per dataset, MERU vs CLIP primary zero-shot metric, seed mean with 95% interval;
- ``scaling``: mean zero-shot metric over datasets vs model size, one line per kind;
- ``root_distance_hist``: distance-from-origin histograms of image and text embeddings (structure JSON);
- ``depth_vs_distance``: caption specificity/depth vs distance from the origin (structure JSON);
- ``traversal``: per image the captions met walking from the image toward the root, MERU | CLIP;
- ``training_curves``: loss, curvature and alphas vs step from ``RUNS/*/log.jsonl``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from meru.reporting.tables import KINDS, build_table, load_metrics, metrics_dir_missing  # noqa: E402

PLOTS = ("zeroshot_bars", "scaling", "root_distance_hist", "depth_vs_distance", "traversal", "training_curves")
COLORS = {"meru": "tab:red", "clip": "tab:blue"}
SIZE_ORDER = ("tiny", "small-cpu", "vit-s16", "vit-b16", "vit-l16")


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in the metrics", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def zeroshot_frame(records: list[dict], metric: str = "top1"):
    """Zero-shot table rows of one metric (``metric``, else the first one present): one per dataset x size."""
    df = build_table(records, "zeroshot")
    if len(df):
        df = df[df.metric == (metric if metric in set(df.metric) else df.metric.iloc[0])].reset_index(drop=True)
    return df


def zeroshot_bars(records: list[dict], path: Path, metric: str = "top1") -> None:
    """Bars of :func:`zeroshot_frame` (seed mean, 95% interval), MERU vs CLIP."""
    df = zeroshot_frame(records, metric)
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(df) + 2), 3.5))
    if not len(df):
        _empty(ax, "zero-shot results")
    else:
        labels = [f"{r.dataset.removeprefix('zeroshot_')}\n{r.size}" for r in df.itertuples()]
        x = np.arange(len(df))
        for i, kind in enumerate(KINDS):
            m = df[f"{kind}_mean"].astype(float).to_numpy()
            err = np.vstack([m - df[f"{kind}_lo"].astype(float), df[f"{kind}_hi"].astype(float) - m])
            ax.bar(x + (i - 0.5) * 0.4, m, 0.4, yerr=np.nan_to_num(err), capsize=3, color=COLORS[kind],
                   label=kind.upper())
        ax.set_xticks(x, labels, rotation=45 if len(df) > 4 else 0, ha="right" if len(df) > 4 else "center",
                      fontsize=8)
        ax.set_ylabel(f"{df.metric.iloc[0]} (%)")
        ax.legend()
        ax.set_title(f"Zero-shot {df.metric.iloc[0]}: MERU vs CLIP (mean over seeds, 95% intervals)", fontsize=10)
    _save(fig, path)


def scaling(records: list[dict], path: Path) -> None:
    df = build_table(records, "zeroshot")
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    if not len(df):
        _empty(ax, "zero-shot results")
    else:
        sizes = sorted(df["size"].unique(), key=lambda s: (SIZE_ORDER.index(s) if s in SIZE_ORDER else 99, s))
        for kind in KINDS:
            ys = [df[df["size"] == s][f"{kind}_mean"].astype(float).mean() for s in sizes]
            ax.plot(range(len(sizes)), ys, "o-", color=COLORS[kind], label=kind.upper())
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_xlabel("model size")
        ax.set_ylabel("mean zero-shot " + df.metric.iloc[0])
        ax.legend()
    _save(fig, path)


def _find_arrays(rec: dict, *needles: str) -> list:
    """First numeric list anywhere in ``rec`` whose key contains all ``needles``."""
    stack = [rec]
    while stack:
        d = stack.pop()
        for k, v in d.items():
            if isinstance(v, dict):
                stack.append(v)
            elif isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v[:10]) \
                    and all(n in k.lower() for n in needles):
                return v
    return []


def _structure(records):
    return [r for r in records if r["task"] == "structure"]


def root_distance_hist(records: list[dict], path: Path) -> None:
    recs = _structure(records)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    if not recs:
        for ax in axes:
            _empty(ax, "structure results")
    for ax, what in zip(axes, ("image", "text")):
        for rec in recs:
            hist = rec.get("histogram") or {}
            if hist.get("edges") and hist.get(f"{what}_counts"):
                # binned counts written by `meru evaluate --task structure`
                ax.stairs(hist[f"{what}_counts"], hist["edges"], fill=True, alpha=0.4,
                          color=COLORS[rec["kind"]], label=rec.get("label", rec["kind"]))
                continue
            v = _find_arrays(rec, what, "dist") or _find_arrays(rec, what, "radius")
            if v:
                ax.hist(v, bins=40, alpha=0.5, color=COLORS[rec["kind"]], label=rec.get("label", rec["kind"]))
        ax.set_title(f"{what} embeddings: distance from origin")
        if recs:
            ax.legend(fontsize=7)
    _save(fig, path)


def _pool_distances(rec: dict):
    """(specificity, distance from the root) per pool caption, from the text-pool embedding cache that the
    structure JSON names (``text_pool``); None if the cache is not on disk."""
    pool_path = rec.get("text_pool")
    if not isinstance(pool_path, str) or not Path(pool_path).exists():
        return None
    import torch

    from meru.spaces import get_space

    pool = torch.load(pool_path, map_location="cpu", weights_only=True)
    emb = pool["text_emb"].float()
    space = get_space(pool["kind"], pool.get("curv"))
    root = None if pool["kind"] == "meru" else torch.nn.functional.normalize(emb.mean(0), dim=0)
    return np.asarray(pool["specificity"]), space.root_distance(emb, root).numpy()


def depth_vs_distance(records: list[dict], path: Path) -> None:
    recs = _structure(records)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    plotted = False
    for rec in recs:
        sd = _pool_distances(rec)
        if sd is not None:
            spec, dist = sd
            levels = np.unique(spec)
            means = [dist[spec == s].mean() for s in levels]
            stds = [dist[spec == s].std() for s in levels]
            ax.errorbar(levels + (0.08 if rec["kind"] == "clip" else -0.08), means, yerr=stds, marker="o", ms=3,
                        capsize=2, alpha=0.8, color=COLORS[rec["kind"]], label=rec.get("label", rec["kind"]))
            plotted = True
            continue
        x = _find_arrays(rec, "specificity") or _find_arrays(rec, "depth")
        y = _find_arrays(rec, "text", "dist") or _find_arrays(rec, "text", "radius")
        if x and y and len(x) == len(y):
            ax.scatter(x, y, s=4, alpha=0.3, color=COLORS[rec["kind"]], label=rec.get("label", rec["kind"]))
            plotted = True
    if plotted:
        ax.set_xlabel("caption specificity (0 = 'an object.')")
        ax.set_ylabel("distance from [ROOT] (mean ± sd)")
        ax.legend(fontsize=7)
    else:
        _empty(ax, "per-caption structure data")
    _save(fig, path)


def _traversals(rec: dict) -> list[list[str]]:
    for key in ("traversals", "images", "per_image", "items"):
        items = rec.get(key)
        if isinstance(items, list):
            out = []
            for it in items:
                seq = it.get("captions") or it.get("steps") or it.get("path") if isinstance(it, dict) else it
                out.append([s if isinstance(s, str) else s.get("text", str(s)) for s in (seq or [])])
            return out
    return []


def traversal(records: list[dict], path: Path, n_images: int = 4) -> None:
    """Captions retrieved along image -> [ROOT] for the first ``n_images`` images, MERU beside CLIP."""
    import textwrap

    recs = {}
    for r in records:
        if r["task"] == "traversal" and r["kind"] not in recs:
            recs[r["kind"]] = r
    text = {}
    for kind in KINDS:
        seqs = _traversals(recs[kind])[:n_images] if kind in recs else []
        text[kind] = "\n\n".join(textwrap.fill(f"image {i}: " + " -> ".join(s), width=78, subsequent_indent="    ")
                                 for i, s in enumerate(seqs))
    lines = max([t.count("\n") + 1 for t in text.values() if t] or [4])
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.6 + 0.14 * lines))  # height follows the text (7 pt lines)
    for ax, kind in zip(axes, KINDS):
        ax.set_axis_off()
        ax.set_title(f"{kind.upper()}: image -> [ROOT]")
        if not text[kind]:
            _empty(ax, f"{kind} traversals")
        ax.text(0, 1, text[kind], va="top", ha="left", fontsize=7, family="monospace", transform=ax.transAxes)
    _save(fig, path)


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


def training_curves(runs_dir, path: Path) -> None:
    logs = read_logs(runs_dir) if runs_dir and Path(runs_dir).is_dir() else {}
    keys = ("loss", "curv", "visual_alpha", "textual_alpha")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, key in zip(axes, keys):
        any_line = False
        for name, rows in logs.items():
            pts = [(r["step"], r[key]) for r in rows if "step" in r and isinstance(r.get(key), (int, float))]
            if pts:
                s, v = zip(*pts)
                ax.plot(s, v, label=name, color=COLORS.get(name.split("-")[0]), alpha=0.8)
                any_line = True
        if any_line:
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.legend(fontsize=6)
        else:
            _empty(ax, f"'{key}' in training logs")
    _save(fig, path)


def write_plots(metrics_dir, runs_dir, out_dir) -> list[Path]:
    records = load_metrics(metrics_dir) if Path(metrics_dir).is_dir() else []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {p: out / f"{p}.png" for p in PLOTS}
    zeroshot_bars(records, paths["zeroshot_bars"])
    scaling(records, paths["scaling"])
    root_distance_hist(records, paths["root_distance_hist"])
    depth_vs_distance(records, paths["depth_vs_distance"])
    traversal(records, paths["traversal"])
    training_curves(runs_dir, paths["training_curves"])
    return list(paths.values())


def add_arguments(parser) -> None:
    parser.add_argument("--metrics", required=True, help="directory of metric JSON files (searched recursively)")
    parser.add_argument("--runs", required=True, help="directory of training runs (RUNS/*/log.jsonl)")
    parser.add_argument("--out", required=True, help="output directory for the PNG files")


def run(args) -> int:
    if metrics_dir_missing(args.metrics, "plots"):
        return 2
    for p in write_plots(args.metrics, args.runs, args.out):
        print(p)
    return 0
