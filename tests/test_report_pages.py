"""The report's landing page and Verdicts pages (meru report-pages), from the committed reference run."""

from pathlib import Path

from meru.cli import main
from meru.reporting import pages
from meru.reporting.outputs import VERDICT_PAGES

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference" / "default"


def test_pages_from_the_reference_run(tmp_path):
    cfg = {"name": "default", "models": ["meru", "clip"], "sizes": ["cpu-conv"], "seeds": [0, 1, 2]}
    cfg |= {"data": {"source": "synthhier"}, "train": {"optim": {"total_steps": 3000}}}
    written = pages.write_pages(REFERENCE, tmp_path, cfg, ["configs/default.yaml"])
    assert sorted(p.name for p in written) == sorted(["workflow.rst"] + [f"{p}.html" for p in VERDICT_PAGES])
    rst = (tmp_path / "workflow.rst").read_text()
    claims_line = pages.summary_line(REFERENCE / "tables" / "claims.md")
    assert claims_line and pages._rst_escape(claims_line) in rst  # the verdict sentence, as claims.md says it
    assert "3000 training steps" in rst and "configs/default.yaml" in rst
    assert "train 6 jobs" in rst  # the six training benchmark files of the reference run
    assert rst.startswith("{% raw %}") and rst.rstrip().endswith("{% endraw %}")  # no Jinja inside
    # the largest prompt-induced swing per model comes from prompt_sensitivity.csv's `spread` column
    rows = [line.split(",") for line in (REFERENCE / "tables" / "prompt_sensitivity.csv").read_text().splitlines()]
    spread = {r[0]: float(r[5]) for r in rows[1:] if r[5]}
    assert sorted(spread) == ["clip-cpu-conv", "meru-cpu-conv"]
    for model, value in spread.items():
        assert f"{model} {value:.1f}" in rst, (model, value)
    claims = (tmp_path / "claims.html").read_text()
    assert claims.count("<tr>") == 9 and ">claim</th>" in claims  # header + one row per claim (8 claims)
    assert "**Reproduction**: not computed in this run" in rst  # the reference has no reproduction.md
    assert "Not produced in this run" in (tmp_path / "reproduction.html").read_text()  # none in the reference
    assert "<table>" in (tmp_path / "provenance.html").read_text()


def test_report_pages_rejects_a_missing_results_dir(tmp_path, capsys):
    assert main(["report-pages", "--results", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
