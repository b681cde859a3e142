"""The family leaderboard (``meru leaderboard``): every released checkpoint of a config under one protocol, a
row per checkpoint and a column per metric group, each published value beside ours.

Inputs: the run's metric records (``RESULTS/metrics``), the published values
(``meru/resources/reference_values.csv``, :func:`meru.reporting.reproduction.read_published`), the workflow
config (``pretrained.checkpoints`` with display / source / batch / steps, ``leaderboard.pending``) and the
released-checkpoint folder, whose ``LABEL.unavailable`` files (written by ``meru fetch-checkpoint
--unavailable-out``) name the checkpoints that could not be fetched.

Outputs (``--out``):

* ``leaderboard.csv`` / ``leaderboard.md`` / ``leaderboard.html``: one row per checkpoint (evaluated,
  unavailable, pending an adapter, or published only), one column per headline metric, grouped (zero-shot,
  retrieval, WordNet hierarchy, HierarCaps, prompt sensitivity, compositional); the HTML table sorts by any
  column (plain JavaScript in the page, no network). A cell is our value; ``≠`` marks a metric whose published
  sources disagree with each other.
* ``leaderboard_comparison.csv``: one row per (checkpoint, metric, source): ours, published, difference
  ours − published, the protocol detail that may explain it (the CSV's ``protocol`` column), and whether the
  sources disagree (the same key with different values, or a ``conflict`` note such as R@5 vs R@10 labels).

A published row belongs to a checkpoint when its model is the checkpoint's model name (its entry's ``name``, e.g.
``atmg``, else its kind) and its (size, training data) gives the checkpoint's record size (:func:`meru.reporting.reproduction.run_size`).
"""

from __future__ import annotations

import html
import json
import math
import sys
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
import pandas as pd

from meru.io import write_text
from meru.records import load_metric_records
from meru.reporting.reproduction import PUBLISHED_KEY, ReferenceError, read_published, run_size
from meru.reporting.tables import to_markdown
from meru.runs import released_run, unavailable_reason
from meru.arguments import add_leaderboard_arguments as add_arguments  # noqa: F401  (light: fast --help)

# (group, column, task, dataset ("*": mean over the run's datasets of that task), metric, higher is better)
COLUMNS = (
    ("Zero-shot", "ImageNet", "zeroshot", "imagenet", "mean_per_class", True),
    ("Zero-shot", "mean over datasets", "zeroshot", "*", "mean_per_class", True),
    ("Retrieval", "COCO i→t R@5", "retrieval", "coco", "i2t_r5", True),
    ("Retrieval", "COCO t→i R@5", "retrieval", "coco", "t2i_r5", True),
    ("Retrieval", "Flickr i→t R@5", "retrieval", "flickr30k", "i2t_r5", True),
    ("Retrieval", "Flickr t→i R@5", "retrieval", "flickr30k", "t2i_r5", True),
    ("WordNet", "TIE", "zeroshot", "imagenet", "tie", False),
    ("WordNet", "LCA", "zeroshot", "imagenet", "lca", False),
    ("WordNet", "Jaccard", "zeroshot", "imagenet", "jaccard", True),
    ("HierarCaps", "depth τ", "hierarcaps", "*", "depth_tau", True),
    ("HierarCaps", "order recall", "hierarcaps", "*", "order_recall", True),
    ("Prompt sensitivity", "top-1 spread", "prompts", "*", "top1_spread", False),
    # caption choice (meru/evaluation/caption_choice.py): SugarCrepe's seven subsets averaged, ARO's two sets
    ("Compositional", "SugarCrepe (mean of 7)", "caption-choice", "sugar_crepe_*", "acc", True),
    ("Compositional", "ARO VG-Relation", "caption-choice", "aro_vg_relation", "acc_macro", True),
    ("Compositional", "ARO VG-Attribution", "caption-choice", "aro_vg_attribution", "acc_macro", True),
)
INFO = ("checkpoint", "label", "data", "batch", "steps", "status")
COMPARISON = (
    "checkpoint",
    "label",
    "task",
    "dataset",
    "metric",
    "ours",
    "published",
    "diff",
    "source",
    "protocol",
    "sources_disagree",
    "conflict",
    "notes",
)


# --------------------------------------------------------------------------- what the config plans


def checkpoints(config: dict, released_dir: str | Path) -> list[dict]:
    """Every checkpoint the config names: ``{label, kind, size, checkpoint, data, batch, steps, url, source,
    status, reason, model}``; status ``planned`` (``unavailable`` when its ``LABEL.unavailable`` exists) or ``pending``."""
    out = []
    for c in (config.get("pretrained") or {}).get("checkpoints") or []:
        run = released_run(c)
        marker = Path(released_dir) / f"{run['label']}.unavailable"
        status = "unavailable" if marker.is_file() else "planned"
        out.append(_entry(c, run, status, unavailable_reason(marker) or ""))
    for c in (config.get("leaderboard") or {}).get("pending") or []:
        out.append(_entry(c, released_run(c), "pending", c["needs"]))
    return out


def _entry(c: dict, run: dict, status: str, reason: str) -> dict:
    return {
        "label": run["label"],
        "kind": run["kind"],
        "model": run["model"],
        "size": run["size"],
        "checkpoint": c.get("display") or run["label"],
        "data": c.get("data", "redcaps"),
        "batch": c.get("batch"),
        "steps": c.get("steps"),
        "url": c.get("url", ""),
        "sha256": c.get("sha256") or "",
        "source": c.get("source", ""),
        "status": status,
        "reason": reason,
    }


def published_only(cks: list[dict], published: pd.DataFrame) -> list[dict]:
    """Rows for (model, size, training data) the sources publish numbers for but the config has no checkpoint of."""
    have = {(c["model"], c["size"]) for c in cks}
    out, seen = [], set()
    for r in published.itertuples(index=False):
        size = run_size(r.size, r.training_data, "redcaps")
        if (r.model, size) in have or (r.model, size) in seen:
            continue
        seen.add((r.model, size))
        label = f"{r.model}-{size}"
        entry = {"display": f"{r.model} {r.size} ({r.training_data})", "data": r.training_data}
        run = {"label": label, "kind": r.model, "model": r.model, "size": size}
        out.append(_entry(entry, run, "published only", "no released checkpoint of it is planned"))
    return out


# --------------------------------------------------------------------------- values


def our_values(metrics_dir: str | Path | None) -> dict:
    """``{(label, task, dataset, metric): value}`` of every finite numeric metric in the run's records."""
    out = {}
    if not metrics_dir or not Path(metrics_dir).is_dir():
        return out
    for rec in load_metric_records(metrics_dir):
        for metric, v in rec.metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[(rec.label, rec.task, rec.dataset, metric)] = float(v)
    return out


def cell(ours: dict, label: str, task: str, dataset: str, metric: str) -> tuple[float | None, int]:
    """(value, number of datasets) of one leaderboard cell; a ``dataset`` with ``*`` (``"*"``, ``"sugar_crepe_*"``)
    averages over the run's datasets it matches."""
    if "*" not in dataset:
        v = ours.get((label, task, dataset, metric))
        return v, int(v is not None)
    vals = [v for (lb, t, d, m), v in ours.items() if (lb, t, m) == (label, task, metric) and fnmatchcase(d, dataset)]
    return (float(np.mean(vals)) if vals else None), len(vals)


def comparison(cks: list[dict], ours: dict, published: pd.DataFrame) -> pd.DataFrame:
    """One row per (checkpoint, published value): ours, published, diff, protocol, disagreement."""
    by_key = {(c["model"], c["size"]): c for c in cks}
    pub = published.assign(
        record_size=[run_size(s, d, "redcaps") for s, d in zip(published["size"], published.training_data)]
    )
    spread = pub.groupby(list(PUBLISHED_KEY))["value"].transform(lambda v: v.astype(float).nunique())
    rows = []
    for (_, r), n_values in zip(pub.iterrows(), spread):
        c = by_key.get((r.model, r.record_size))
        if c is None:
            continue
        mine = ours.get((c["label"], r.task, r.dataset, r.metric))
        value = float(r.value)
        conflict = str(r.get("conflict", "") or "")
        rows.append(
            {
                "checkpoint": c["checkpoint"],
                "label": c["label"],
                "task": r.task,
                "dataset": r.dataset,
                "metric": r.metric,
                "ours": mine,
                "published": value,
                "diff": None if mine is None else mine - value,
                "source": r.source,
                "protocol": str(r.get("protocol", "") or ""),
                "sources_disagree": bool(n_values > 1 or conflict),
                "conflict": conflict,
                "notes": r.notes,
            }
        )
    return pd.DataFrame(rows, columns=COMPARISON)


def status_of(c: dict, ours: dict) -> str:
    """The status cell: evaluated / not evaluated (no records) / unavailable / pending / published only."""
    if c["status"] == "planned":
        return "evaluated" if any(k[0] == c["label"] for k in ours) else "not evaluated (no metric records)"
    return c["status"]


def wide(cks: list[dict], ours: dict, comp: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint: its facts, status and our value of every :data:`COLUMNS` metric (None if none);
    ``disagree`` holds the column titles whose published sources disagree for that checkpoint (a ``*`` column:
    on any of its datasets)."""
    flagged = {(r.label, r.task, r.dataset, r.metric) for r in comp.itertuples() if r.sources_disagree}
    rows = []
    for c in cks:
        row = {
            "checkpoint": c["checkpoint"],
            "label": c["label"],
            "data": c["data"],
            "batch": c["batch"],
            "steps": c["steps"],
            "status": status_of(c, ours),
        }
        row["disagree"] = []
        for _, title, task, dataset, metric, _ in COLUMNS:
            row[title] = cell(ours, c["label"], task, dataset, metric)[0]
            if any((lb, t, m) == (c["label"], task, metric) and fnmatchcase(d, dataset) for lb, t, d, m in flagged):
                row["disagree"].append(title)
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- writing


def status_lines(cks: list[dict]) -> list[str]:
    """One line per checkpoint that is not evaluated: unavailable (URL: why), pending (what it needs), published only."""
    return [f"{c['checkpoint']} ({c['label']}): {c['status']}: {c['reason']}" for c in cks if c["status"] != "planned"]


def summary(table: pd.DataFrame, comp: pd.DataFrame) -> str:
    counts = table.status.value_counts()
    parts = [f"{counts.get('evaluated', 0)} of {len(table)} checkpoints evaluated"]
    parts += [f"{n} {s}" for s, n in counts.items() if s != "evaluated"]
    keys = comp[comp.sources_disagree][["label", "task", "dataset", "metric"]].drop_duplicates()
    parts.append(f"{len(keys)} checkpoint metrics whose published sources disagree (marked ≠)")
    return "; ".join(parts)


def _fmt(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The table as text: values to 4 significant digits, ≠ after the values whose sources disagree."""
    out = table.drop(columns=["disagree"]).copy()
    for _, title, *_ in COLUMNS:
        out[title] = [_fmt(v) + (" ≠" if title in d else "") for v, d in zip(table[title], table.disagree)]
    for col in ("batch", "steps"):
        out[col] = [str(int(v)) if v is not None and not pd.isna(v) else "" for v in table[col]]
    return out


def sources(cks: list[dict]) -> list[str]:
    """One line per checkpoint with a URL: where it comes from, its published sha256 (if any) and the source."""
    return [
        f"{c['checkpoint']}: {c['url']} (sha256 {c['sha256'] or 'not published'}; {c['source'] or 'source not given'})"
        for c in cks
        if c["url"]
    ]


def markdown(table: pd.DataFrame, comp: pd.DataFrame, lines: list[str], title: str, line: str) -> str:
    heads = [f"{g}: {t}{'' if hi else ' (lower is better)'}" for g, t, *_, hi in COLUMNS]
    shown = display(table).rename(columns={t: h for (_, t, *_), h in zip(COLUMNS, heads)})
    parts = [f"## {title}\n", f"Summary: {line}\n"]
    parts += ["Not evaluated:\n"] + [f"- {s}" for s in lines] + [""] if lines else []
    parts += [to_markdown(shown), "", "### Ours beside each published value\n"]
    cols = ["checkpoint", "task", "dataset", "metric", "ours", "published", "diff", "source", "protocol", "conflict"]
    comp_shown = comp.assign(
        ours=[_fmt(v) for v in comp.ours],
        diff=[_fmt(v) for v in comp["diff"]],
        published=[_fmt(v) + (" ≠" if d else "") for v, d in zip(comp.published, comp.sources_disagree)],
    )
    parts.append(to_markdown(comp_shown[cols]) if len(comp) else "No published value matches a checkpoint.")
    return "\n".join(parts) + "\n"


def checkpoint_section(cks: list[dict]) -> str:
    return "\n### Checkpoints\n\n" + "\n".join(f"- {s}" for s in sources(cks)) + "\n"


SORT_SCRIPT = """
document.querySelectorAll('#leaderboard thead tr.columns th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    document.querySelectorAll('#leaderboard thead th').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var body = document.querySelector('#leaderboard tbody');
    var rows = Array.prototype.slice.call(body.rows);
    function key(r) { var c = r.cells[col]; return c.hasAttribute('data-v') ? c.getAttribute('data-v') : c.textContent; }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      if (x === '' || y === '') { return x === y ? 0 : (x === '' ? 1 : -1); }  // empty cells last either way
      var d = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? d : -d;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""
STYLE = (
    "body{font:14px system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:13px}"
    "td,th{padding:3px 8px;border:1px solid #ccc;text-align:right}td:first-child,th:first-child{text-align:left}"
    "thead tr.columns th{cursor:pointer;background:#f0f0f0}th[aria-sort=ascending]::after{content:' ▲'}"
    "th[aria-sort=descending]::after{content:' ▼'}th.group{background:#e4e4f0;text-align:center}"
    ".disagree{color:#a30}"
)


def html_page(table: pd.DataFrame, comp: pd.DataFrame, lines: list[str], title: str, line: str) -> str:
    """The standalone page: summary, not-evaluated lines, the sortable table (one row per checkpoint)."""
    e = html.escape
    info = [c for c in INFO if c != "label"]
    groups = [("", len(info))] + [
        (g, sum(1 for c in COLUMNS if c[0] == g)) for g in dict.fromkeys(c[0] for c in COLUMNS)
    ]
    head = "<tr>" + "".join(f'<th class="group" colspan="{n}">{e(g)}</th>' for g, n in groups) + "</tr>"
    titles = info + [t + ("" if hi else " ↓") for _, t, *_, hi in COLUMNS]
    head += '<tr class="columns">' + "".join(f"<th>{e(t)}</th>" for t in titles) + "</tr>"
    body = []
    for (_, r), (_, shown) in zip(table.iterrows(), display(table).iterrows()):
        tds = [f"<td>{e(str(shown[c]) if shown[c] is not None and not pd.isna(shown[c]) else '')}</td>" for c in info]
        for _, t, task, dataset, metric, _ in COLUMNS:
            v, mark = r[t], t in r["disagree"]
            pub = comp[(comp.label == r["label"]) & (comp.task == task) & (comp.metric == metric)]
            pub = pub[pub.dataset == dataset] if "*" not in dataset else pub.iloc[0:0]
            tip = "; ".join(f"{s}: {_fmt(p)}" for s, p in zip(pub.source, pub.published))
            attrs = f' data-v="{_fmt(v)}"' + (f' title="published: {e(tip)}"' if tip else "")
            attrs += ' class="disagree"' if mark else ""
            tds.append(f"<td{attrs}>{e(_fmt(v))}{' ≠' if mark else ''}</td>")
        body.append(f'<tr data-label="{e(r["label"])}">' + "".join(tds) + "</tr>")
    notes = "".join(f"<li>{e(s)}</li>" for s in lines)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{STYLE}</style></head>"
        f"<body><h2>{e(title)}</h2><p id='summary'>Summary: {e(line)}</p>"
        + (f"<p>Not evaluated:</p><ul id='not-evaluated'>{notes}</ul>" if lines else "")
        + f"<table id='leaderboard'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
        "<p>Click a column header to sort. Our values; hover a cell for the published ones; ≠: the published sources "
        "disagree (leaderboard_comparison.csv has every source, the difference and the protocol note).</p>"
        f"<script>{SORT_SCRIPT}</script></body></html>\n"
    )


def write_leaderboard(metrics_dir, published_csv, released_dir, config: dict, out_dir) -> tuple[pd.DataFrame, str]:
    """Write the four files (module docstring) under ``out_dir``; return (table, summary line)."""
    published = read_published(published_csv)
    cks = checkpoints(config, released_dir)
    cks += published_only(cks, published)
    ours = our_values(metrics_dir)
    comp = comparison(cks, ours, published)
    table = wide(cks, ours, comp)
    lines = status_lines(cks) + [
        f"{e['name']} ({', '.join(e.get('sets') or [])}): pending evaluation: {e['needs']}"
        for e in (config.get("leaderboard") or {}).get("pending_evaluations") or []
    ]
    line = summary(table, comp)
    title = (config.get("leaderboard") or {}).get("title") or f"{config.get('name', 'run')} leaderboard"
    out = Path(out_dir)
    csv = table.assign(disagree=[";".join(d) for d in table.disagree], batch=display(table).batch)
    write_text(out / "leaderboard.csv", csv.assign(steps=display(table).steps).to_csv(index=False, float_format="%.6g"))
    write_text(out / "leaderboard_comparison.csv", comp.to_csv(index=False))
    write_text(out / "leaderboard.md", markdown(table, comp, lines, title, line) + checkpoint_section(cks))
    write_text(out / "leaderboard.html", html_page(table, comp, lines, title, line))
    return table, line


def run(args) -> int:
    try:
        config = json.loads(args.config_json)
        _, line = write_leaderboard(args.metrics, args.published, args.released, config, args.out)
    except (ReferenceError, ValueError, KeyError) as err:
        print(f"meru leaderboard: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}/leaderboard.md: {line}")
    return 0
