"""Prompt-sensitivity table (``meru prompt-sensitivity --metrics DIR --out DIR``).

Reads the metric records under ``--metrics`` with task ``prompts`` (written by ``meru evaluate --task
prompts``; one per run and zero-shot dataset: metrics ``top1_<set>``, details ``prompt_sets`` =
``{set: {"n_templates", "source"}}``) and writes
``prompt_sensitivity.csv`` and ``prompt_sensitivity.md`` (atomically).

Rows: model (``{name}-{size}``: model name and size, seeds averaged) x template set (``evalset`` = the eval
set's own templates, ``single``, ``meru``, ``clip_benchmark``; see :mod:`meru.evaluation.prompt_sensitivity`);
columns: datasets, each the zero-shot top-1 accuracy (%) averaged over the model's seeds. For every
model one more row, ``spread (max - min)``, gives per dataset max − min over its template sets; its
``spread`` column is the largest of these (the model's largest prompt-induced swing over all datasets;
empty on the template-set rows).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from meru.arguments import add_prompt_sensitivity_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru.io import write_text
from meru.records import MetricRecord, load_metric_records
from meru.reporting.records import metrics_dir_missing

SET_ORDER = ("evalset", "single", "meru", "clip_benchmark")


def load_prompt_records(directory: str | os.PathLike) -> list[MetricRecord]:
    """Metric records with task ``prompts`` under ``directory`` (recursive, sorted by path)."""
    return [r for r in load_metric_records(directory) if r.task == "prompts"]


def build_table(records: list[MetricRecord]) -> tuple[pd.DataFrame, dict]:
    """Wide table (see module doc) and ``{(dataset, set): source}`` notes for the Markdown footer."""
    values = defaultdict(list)  # (model, set, dataset) -> [top1 per seed]
    sources, models, datasets = {}, [], []
    for rec in records:
        model = f"{rec.model_name}-{rec.size}"
        dataset = rec.dataset
        if model not in models:
            models.append(model)
        if dataset not in datasets:
            datasets.append(dataset)
        for name, entry in rec.details["prompt_sets"].items():
            values[(model, name, dataset)].append(float(rec.metrics[f"top1_{name}"]))
            sources[(dataset, name)] = f"{entry['source']} ({entry['n_templates']} templates)"
    datasets.sort()
    rows = []
    for model in models:
        sets = [s for s in SET_ORDER if any((model, s, d) in values for d in datasets)]
        sets += sorted({k[1] for k in values if k[0] == model} - set(sets))
        block = []
        for name in sets:
            row = {"model": model, "templates": name}
            for d in datasets:
                v = values.get((model, name, d))
                row[d] = float(np.mean(v)) if v else None
            row["seeds"] = max((len(values.get((model, name, d), [])) for d in datasets), default=0)
            row["spread"] = None
            block.append(row)
        spread = {"model": model, "templates": "spread (max - min)", "seeds": None}
        for d in datasets:
            col = [r[d] for r in block if r[d] is not None]
            spread[d] = max(col) - min(col) if col else None
        present = [spread[d] for d in datasets if spread[d] is not None]
        spread["spread"] = max(present) if present else None
        rows.extend(block + [spread])
    df = pd.DataFrame(rows, columns=["model", "templates", *datasets, "spread", "seeds"])
    df["seeds"] = df["seeds"].astype("Int64")
    return df, sources


def to_markdown(df: pd.DataFrame, sources: dict) -> str:
    disp = df.copy()
    for c in disp.columns:
        if c not in ("model", "templates", "seeds"):
            disp[c] = ["" if pd.isna(v) else f"{v:.1f}" for v in disp[c]]
    disp["seeds"] = ["" if pd.isna(v) else str(int(v)) for v in disp["seeds"]]
    body = (
        disp.to_markdown(index=False, disable_numparse=True)
        if len(disp)
        else "| " + " | ".join(disp.columns) + " |\n|" + "---|" * len(disp.columns)
    )
    notes = "\n".join(f"- `{d}` / `{s}`: {src}" for (d, s), src in sorted(sources.items()))
    return (
        "## prompt sensitivity\n\nZero-shot top-1 (%) per template set, mean over seeds; `spread` rows: "
        "max − min over template sets per dataset; `spread` column: the largest of these. Class names are the same in every set.\n\n"
        + body
        + "\n\nTemplate sets:\n\n"
        + notes
        + "\n"
    )


def write_table(metrics_dir: str | os.PathLike, out_dir: str | os.PathLike) -> pd.DataFrame:
    records = load_prompt_records(metrics_dir)
    if not records:
        raise ValueError(
            f"{metrics_dir}: no prompt-sensitivity records (task 'prompts'); run `meru evaluate --task prompts` first"
        )
    df, sources = build_table(records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "prompt_sensitivity.csv", df.to_csv(index=False))
    write_text(out / "prompt_sensitivity.md", to_markdown(df, sources))
    return df


def run(args: argparse.Namespace) -> int:
    if metrics_dir_missing(args.metrics, "prompt-sensitivity"):
        return 2
    try:
        df = write_table(args.metrics, args.out)
    except ValueError as e:
        print(f"meru prompt-sensitivity: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}/prompt_sensitivity.csv: {len(df)} rows")
    return 0
