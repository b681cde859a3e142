"""The Snakemake report of the smoke workflow, opened in headless Chromium: the landing page carries the
verdicts, and the Verdicts, Figures and Cards categories hold every page, figure and card the run wrote.

Builds the report from the smoke config in a copy of the workflow (a few minutes on two cores); with
``MERU_SMOKE_ROOT`` naming a directory where the smoke workflow has already run, only ``--report`` runs there.
Skipped only where Chromium is absent (CI installs Debian's ``chromium``, .ci/run).
"""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from meru.reporting.outputs import PLOTS, VERDICT_PAGES
from meru.reporting.pages import summary_line

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium; CI installs it)"),
]


class _VisibleText(HTMLParser):
    """Text the browser renders (script and style contents left out)."""

    def __init__(self):
        super().__init__()
        self.depth, self.parts = 0, []

    def handle_starttag(self, tag, attrs):
        self.depth += tag in ("script", "style")

    def handle_endtag(self, tag):
        self.depth -= tag in ("script", "style")

    def handle_data(self, data):
        if not self.depth and data.strip():
            self.parts.append(data.strip())


def _snakemake(root: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "configs/smoke.yaml", *args]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """A directory where the smoke workflow has run and written report.html."""
    if os.environ.get("MERU_SMOKE_ROOT"):
        root = Path(os.environ["MERU_SMOKE_ROOT"])
    else:
        root = tmp_path_factory.mktemp("smoke")
        for name in ("Snakefile", "workflow", "configs", "envs"):
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
        _snakemake(root)
    _snakemake(root, "--report", "report.html")
    return root


@pytest.fixture(scope="module")
def dom(smoke) -> str:
    """The report's DOM after Chromium ran its scripts."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000", "--dump-dom"]
    done = subprocess.run(cmd + [(smoke / "report.html").as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    return done.stdout


def _json_after(dom: str, marker: str):
    start = dom.index(marker) + len(marker)
    return json.JSONDecoder().raw_decode(dom[start:])[0]


def test_landing_page_tells_the_verdicts(smoke, dom):
    parser = _VisibleText()
    parser.feed(dom)
    text = " ".join(parser.parts)
    assert "Loading Snakemake Report" not in text.split("Report")[-1]  # the app rendered
    for category in ("Verdicts", "Figures", "Cards", "Tables"):
        assert category in parser.parts  # the navigation lists it
    assert "meru-bench: MERU vs CLIP" in text and "smoke" in text
    claims = summary_line(smoke / "results-smoke" / "tables" / "claims.md")
    reproduction = summary_line(smoke / "results-smoke" / "tables" / "reproduction.md")
    assert claims and claims in text  # the one-sentence verdicts, as the workflow computed them
    assert reproduction and reproduction in text
    assert re.search(r"train 3 jobs, [\d.]+ min", text)  # how long: three training runs


def test_every_figure_verdict_and_card_is_in_the_report(smoke, dom):
    categories = _json_after(dom, "categories = ")
    files = {f for sub in categories.get("Figures", {}).values() for f in sub}
    pngs = sorted(str(p.relative_to(smoke)) for p in (smoke / "results-smoke" / "plots").glob("*.png"))
    assert pngs and sorted(files) == pngs and {Path(p).stem for p in pngs} <= set(PLOTS)
    verdicts = {Path(f).stem for sub in categories["Verdicts"].values() for f in sub}
    assert verdicts == set(VERDICT_PAGES)
    cards = {Path(f).name for sub in categories["Cards"].values() for f in sub}
    assert {f"{k}-tiny-s0.MODEL_CARD.html" for k in ("meru", "clip", "euclip")} <= cards
    assert "synthhier.DATASET_CARD.html" in cards
    for png in pngs:  # each figure embedded byte for byte
        entry = _json_after(dom, json.dumps(png) + ": ")
        payload = entry["data_uri"].split("base64,", 1)[1]
        embedded = hashlib.sha256(base64.b64decode(payload)).hexdigest()
        assert embedded == hashlib.sha256((smoke / png).read_bytes()).hexdigest(), png
    claims_page = _json_after(dom, json.dumps("results-smoke/report/claims.html") + ": ")
    page = base64.b64decode(claims_page["data_uri"].split("base64,", 1)[1]).decode()
    assert "<table>" in page and "traversal captions true" in page  # the compact claims table, as HTML
