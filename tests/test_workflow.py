"""The Snakefile lints clean and plans the default, smoke and paper DAGs (without data)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _run(*args):
    return subprocess.run(SNAKEMAKE + list(args), cwd=ROOT, capture_output=True, text=True, timeout=300)


def _counts(stdout):
    table = stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_lint_clean():
    r = _run("--lint")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("cfg", ["default", "smoke", "paper", "pretrained", "ablation"])
def test_dry_run_plans(cfg):
    r = _run("-n", "--forceall", "--configfile", f"configs/{cfg}.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    counts = _counts(r.stdout)
    assert counts["tables"] == 1 and counts["plots"] == 1
    if cfg == "paper":
        assert counts["train"] == 6  # 3 sizes x 2 models x 1 seed
        assert counts["download"] == 1
    if cfg == "default":
        assert counts["train"] == 4  # 2 models x 2 seeds
    if cfg == "ablation":
        assert counts["train"] == 6  # 3 models (meru, clip, euclip) x 2 seeds
    if cfg == "smoke":
        assert counts["train"] == 3  # meru, clip, euclip x 1 seed
    if cfg == "pretrained":
        assert "train" not in counts and counts["released_checkpoint"] == 6
