"""The Snakemake report's own pages (``meru report-pages``): the landing description and the Verdicts pages.

- ``workflow.rst``: the report's landing page (the Snakefile's ``report:`` directive reads it): what ran
  (config name, kinds, sizes, seeds, steps, evaluations), on which config, how long (the rules' benchmark
  files) and the one-sentence verdicts (the ``Summary:`` lines of reproduction.md and claims.md, the largest
  prompt-induced swing of prompt_sensitivity.csv);
- ``claims.html``, ``reproduction.html``, ``prompt_sensitivity.html``, ``provenance.html``: the Markdown
  verdict files rendered as HTML pages with real tables (:func:`markdown_page`), for the report's
  "Verdicts" category.
"""

from __future__ import annotations

import csv
import html
import math
import sys
from pathlib import Path

import markdown

from meru.io import write_text
from meru.reporting.outputs import VERDICT_PAGES
from meru.arguments import add_report_pages_arguments as add_arguments  # noqa: F401  (light: fast --help)

# verdict page (meru.reporting.outputs.VERDICT_PAGES) -> its Markdown source, relative to RESULTS
VERDICTS = dict(
    zip(VERDICT_PAGES, ("tables/claims.md", "tables/reproduction.md", "tables/prompt_sensitivity.md", "PROVENANCE.md"))
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; max-width: 80em; line-height: 1.4; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
code, pre { background: #f6f6f6; }
pre { padding: 0.6em; overflow-x: auto; }
"""


def markdown_page(text: str, title: str) -> str:
    """A standalone HTML page of Markdown ``text`` (tables, fenced code) with a small stylesheet."""
    body = markdown.markdown(text, extensions=["tables", "fenced_code"])
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def summary_line(md_path: Path) -> str | None:
    """The text after ``Summary: `` in a verdict Markdown file (None when absent)."""
    if not md_path.is_file():
        return None
    for line in md_path.read_text().splitlines():
        if line.startswith("Summary: "):
            return line[len("Summary: ") :].strip()
    return None


def prompt_sentence(csv_path: Path) -> str | None:
    """'largest prompt-induced swing: MODEL X points (...)' from prompt_sensitivity.csv's spread rows."""
    if not csv_path.is_file():
        return None
    with open(csv_path, newline="") as f:
        spreads = [(r["model"], float(r["spread"])) for r in csv.DictReader(f) if r.get("spread")]
    spreads = [(m, s) for m, s in spreads if math.isfinite(s)]
    if not spreads:
        return None
    parts = ", ".join(f"{m} {s:.1f}" for m, s in sorted(spreads, key=lambda x: -x[1]))
    return f"largest zero-shot swing across prompt template sets (points): {parts}"


def run_time(results: Path) -> str:
    """'training N runs, X min; embedding Y min' from the rules' benchmark TSVs (their ``s`` column)."""
    parts = []
    for step in ("train", "embed"):
        files = sorted((results / "benchmarks" / step).rglob("*.tsv"))
        seconds = 0.0
        for f in files:
            with open(f, newline="") as fh:
                seconds += sum(float(r["s"]) for r in csv.DictReader(fh, delimiter="\t") if r.get("s"))
        if files:
            parts.append(f"{step} {len(files)} jobs, {seconds / 60:.1f} min")
    return "; ".join(parts) if parts else "no benchmark records"


def _rst_escape(text: str) -> str:
    """Plain text for reStructuredText (backslash-escape its inline markup characters)."""
    for ch in "\\*`_|":
        text = text.replace(ch, "\\" + ch)
    return text


def workflow_description(results: str | Path, config: dict, config_files: list[str]) -> str:
    """The landing page (reStructuredText, kept out of Jinja by ``{% raw %}``): what ran, config, time, verdicts."""
    res = Path(results)
    steps = (config.get("train") or {}).get("optim", {}).get("total_steps")
    pretrained = (config.get("pretrained") or {}).get("checkpoints")
    if pretrained:
        ran = f"{len(pretrained)} released checkpoints evaluated ({', '.join(str(c.get('kind')) for c in pretrained)})"
    else:
        ran = (
            f"models {', '.join(map(str, config.get('models', [])))} × sizes {', '.join(map(str, config.get('sizes', [])))}"
            f" × seeds {', '.join(map(str, config.get('seeds', [])))}, {steps} training steps each,"
            f" on {config.get('data', {}).get('source', '?')}"
        )
    metrics = sorted(p for p in (res / "metrics").rglob("*.json") if not p.name.endswith(".clip_benchmark.json"))
    verdicts = [
        ("Reproduction", summary_line(res / VERDICTS["reproduction"])),
        ("Claims", summary_line(res / VERDICTS["claims"])),
        ("Prompt sensitivity", prompt_sentence(res / "tables" / "prompt_sensitivity.csv")),
    ]
    lines = [
        "{% raw %}",
        "meru-bench: MERU vs CLIP",
        "========================",
        "",
        f"- **Config**: ``{config.get('name', '?')}`` ({_rst_escape(' + '.join(config_files) or 'default')}), "
        f"results in ``{res}``",
        f"- **What ran**: {_rst_escape(ran)}; {len(metrics)} metric records",
        f"- **How long**: {_rst_escape(run_time(res))} (Snakemake benchmark files)",
        "",
        "Verdicts",
        "--------",
        "",
    ]
    lines += [f"- **{name}**: {_rst_escape(text or 'not computed in this run')}" for name, text in verdicts]
    lines += [
        "",
        "The tables behind these sentences are in the *Verdicts* category (claims, reproduction, prompt "
        "sensitivity, provenance); figures, tables and the dataset and model cards follow in their categories.",
        "{% endraw %}",
        "",
    ]
    return "\n".join(lines)


def write_pages(results: str | Path, out: str | Path, config: dict, config_files: list[str]) -> list[Path]:
    """``out/workflow.rst`` and ``out/{claims,reproduction,prompt_sensitivity,provenance}.html`` (a page
    saying the file is missing where a verdict file was not produced)."""
    res, out = Path(results), Path(out)
    written = [write_text(out / "workflow.rst", workflow_description(res, config, config_files))]
    for name, rel in VERDICTS.items():
        src = res / rel
        text = src.read_text() if src.is_file() else f"# {name}\n\nNot produced in this run (`{src}` missing).\n"
        written.append(write_text(out / f"{name}.html", markdown_page(text, name)))
    return written


def run(args) -> int:
    import json

    if not Path(args.results).is_dir():
        print(f"meru report-pages: error: --results {args.results} is not a directory", file=sys.stderr)
        return 2
    try:
        config = json.loads(args.config_json)
    except json.JSONDecodeError as err:
        print(f"meru report-pages: error: --config-json is not JSON ({err})", file=sys.stderr)
        return 2
    for p in write_pages(args.results, args.out, config, args.config_file):
        print(p)
    return 0
