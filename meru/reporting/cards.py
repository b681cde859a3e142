"""Cards (``meru card``): ``MODEL_CARD.md`` next to a trained ``model.pt``, ``DATASET_CARD.md`` of a dataset.

A model card is written after evaluation (it needs the metric records): the recipe (the run's
``config.yaml``), the training data (its manifest), the steps run and the last logged losses (``log.jsonl``),
the headline metrics with their 95% intervals (``meru/resources/headline_metrics.csv``, from the run's own
metric records), and provenance (checkpoint SHA-256, commit). Dataset cards come from
:func:`meru.data.cards.dataset_card`. With ``--html`` each card is also written as an HTML page for the
Snakemake report (:func:`meru.reporting.pages.markdown_page`).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from meru.config import load_yaml
from meru.data.cards import dataset_card
from meru.data.manifest import MANIFEST_NAME, sha256_file
from meru.io import write_text
from meru.records import MetricRecord, load_metric_records
from meru.reporting.pages import markdown_page
from meru.reporting.provenance import git_state
from meru.reporting.records import kind_name
from meru.reporting.reproduction import headline_metrics
from meru.arguments import add_card_arguments as add_arguments  # noqa: F401  (light: fast --help)

RECIPE_KEYS = {  # config section -> keys shown in the card's recipe table
    "model": ("kind", "size", "entail_weight", "curv_init", "learn_curv"),
    "optim": ("lr", "betas", "weight_decay", "warmup_steps", "total_steps", "grad_clip", "grad_accum"),
    "data": ("batch_size", "augment", "sample_captions", "in_memory"),
    "precision": ("amp",),
    "runtime": ("seed", "device", "threads", "compile"),
}


def headline_rows(records: list[MetricRecord], label: str) -> list[dict]:
    """The headline metrics of run ``label``: ``{"task", "dataset", "metric", "value", "lo", "hi"}`` in the
    order of ``headline_metrics.csv`` (metrics the run did not evaluate are left out)."""
    own = {(r.task, r.dataset): r for r in records if r.label == label}
    rows = []
    for h in headline_metrics().itertuples(index=False):
        rec = own.get((h.task, h.dataset))
        value = rec.metrics.get(h.metric) if rec else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            continue
        lo, hi = (rec.intervals.get(h.metric) or [None, None])[:2]
        rows.append({"task": h.task, "dataset": h.dataset, "metric": h.metric, "value": value, "lo": lo, "hi": hi})
    return rows


def _value(v: float, lo, hi) -> str:
    return f"{v:.4g}" + (f" [{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else "")


def _training_data(path: str) -> str:
    """'name: N samples from SOURCE (manifest created DATE)' of the training shards, or the bare path."""
    manifest = Path(path) / MANIFEST_NAME
    if not manifest.is_file():
        return f"`{path}` (no manifest found)"
    m = json.loads(manifest.read_text())
    return f"`{path}`: {m.get('num_samples', '?'):,} samples from {m.get('source', '?')} (manifest of {m.get('created', '?')})"


def _last_log(run_dir: Path) -> dict:
    """The last row of ``log.jsonl`` ({} without one)."""
    log = run_dir / "log.jsonl"
    rows = [line for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    return json.loads(rows[-1]) if rows else {}


def model_card(run_dir: str | Path, label: str, records: list[MetricRecord]) -> str:
    """``MODEL_CARD.md`` of the trained run in ``run_dir`` (``config.yaml``, ``log.jsonl``, ``model.pt``)."""
    run = Path(run_dir)
    cfg = load_yaml(run / "config.yaml")
    kind = cfg["model"]["kind"]
    recipe = "\n".join(
        f"| {section}.{key} | {json.dumps(cfg[section][key])} |"
        for section, keys in RECIPE_KEYS.items()
        for key in keys
        if key in cfg.get(section, {})
    )
    last = _last_log(run)
    losses = ", ".join(
        f"{k} {last[k]:.4g}" for k in ("loss", "contrastive_loss", "entailment_loss") if isinstance(last.get(k), float)
    )
    head = headline_rows(records, label)
    metrics = "\n".join(
        f"| {h['task']} | {h['dataset']} | {h['metric']} | {_value(h['value'], h['lo'], h['hi'])} |" for h in head
    )
    ckpt = run / "model.pt"
    git = git_state()
    return f"""# Model card: {label}

**Model.** {cfg["model"].get("display") or kind_name(kind)} (`model.kind: {kind}`), size `{cfg["model"]["size"]}`, seed {cfg["runtime"]["seed"]};
trained by `meru train` (meru-bench). Intended use: the benchmark's comparisons of MERU, CLIP and EuCLIP; a
research checkpoint, not a product.

## Recipe

| setting | value |
|---|---|
{recipe}

Full configuration: `{run / "config.yaml"}`.

## Data

{_training_data(cfg["data"]["train"])}

## Training

{last.get("step", "?")} of {cfg["optim"]["total_steps"]} steps logged; last logged losses: {losses or "none"}.
History: `{run / "log.jsonl"}`.

## Headline metrics (95% intervals)

| task | dataset | metric | value [95% interval] |
|---|---|---|---|
{metrics or "| (no metric records for this run) | | | |"}

Intervals: bootstrap over test items (docs/METRICS.md); a metric without one has no interval.

## Provenance

| field | value |
|---|---|
| checkpoint | `{ckpt}` |
| sha256 | `{sha256_file(ckpt) if ckpt.is_file() else "missing"}` |
| commit | `{git.get("commit") or "unknown"}`{" (uncommitted changes)" if git.get("dirty") else ""} |
"""


def write_card(text: str, out: str | Path, html: str | Path | None = None) -> list[Path]:
    """Write the card (Markdown) and, with ``html``, its HTML page."""
    written = [write_text(out, text)]
    if html:
        write_text(html, markdown_page(text, Path(out).name))
        written.append(Path(html))
    return written


def run(args) -> int:
    if args.model:
        if not args.metrics or not Path(args.metrics).is_dir():
            print(f"meru card: error: --metrics {args.metrics} is not a directory of metric records", file=sys.stderr)
            return 2
        if not (Path(args.model) / "config.yaml").is_file():
            print(f"meru card: error: {args.model}/config.yaml missing: not a `meru train` run", file=sys.stderr)
            return 2
        label = args.label or Path(args.model).name
        text = model_card(args.model, label, load_metric_records(args.metrics))
    else:
        text = dataset_card(args.dataset)
    for p in write_card(text, args.out, args.html):
        print(p)
    return 0
