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


def _default_runs(name: str = "default") -> int:
    """Training runs a config asks for: models x sizes x seeds (its `base:` chain resolved)."""
    from meru.config import load_config_file

    cfg = load_config_file(ROOT / "configs" / f"{name}.yaml")
    return len(cfg["models"]) * len(cfg["sizes"]) * len(cfg["seeds"])


@pytest.mark.parametrize(
    "cfg", ["default", "smoke", "paper", "pretrained", "ablation", "ablations", "ablations-short", "sizes", "batch"]
)
def test_dry_run_plans(cfg):
    r = _run("-n", "--forceall", "--configfile", f"configs/{cfg}.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    counts = _counts(r.stdout)
    assert counts["tables"] == 1 and counts["plots"] == 1
    assert counts["reproduction"] == 1 and counts["claims"] == 1
    assert counts["prompt_sensitivity"] == 1
    if cfg in ("paper", "pretrained"):
        models = 6 if cfg == "paper" else 19  # paper: 3 sizes x 2 kinds; pretrained: the family's checkpoints
        assert counts["evaluate_hierarcaps"] == models and counts["evaluate_prompts"] == models * 20  # x 20 datasets
    if cfg == "default":
        assert (
            counts["evaluate_prompts"] == _default_runs() * 3 and "evaluate_hierarcaps" not in counts
        )  # runs x 3 levels
    if cfg == "paper":
        assert counts["train"] == 6  # 3 sizes x 2 models x 1 seed
        assert counts["download"] == 1
    if cfg == "default":
        assert counts["train"] == _default_runs() == 6  # 2 models x 3 seeds
    if cfg == "ablation":
        assert counts["train"] == _default_runs("ablation") == 9  # 3 models (meru, clip, euclip) x 3 seeds
    if cfg == "smoke":
        assert counts["train"] == 3  # meru, clip, euclip x 1 seed
    if cfg in ("ablations", "ablations-short", "sizes", "batch"):  # the study configs (issue 23)
        runs = {"ablations": 27, "ablations-short": 27, "sizes": 18, "batch": 18}[cfg]
        assert counts["train"] == _default_runs(cfg) == runs
    if cfg == "ablations-short":  # the three taxonomy levels only: no attribute zero-shot tasks
        assert counts["evaluate_zeroshot"] == 27 * 3
    if cfg == "pretrained":
        # 6 official (RedCaps), 6 HyCoCLIP zoo (GRIT), 2 UNCHA (GRIT), 2 ATMG, 3 EuCLIP paper (DataComp)
        assert "train" not in counts and counts["released_checkpoint"] == 19


def test_fresh_checkout_plans_training(tmp_path):
    """A fresh clone's `snakemake` recomputes everything: no committed file satisfies a default target.

    Exports the committed tree (HEAD, as CI's fresh clone has it) and dry-runs the default config there."""
    import shutil
    import tarfile

    if (
        shutil.which("git") is None
        or subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, check=False).returncode != 0
    ):
        pytest.skip("not a git checkout")
    archive = tmp_path / "head.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), "HEAD"], cwd=ROOT, check=True)
    tree = tmp_path / "checkout"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    r = subprocess.run(SNAKEMAKE + ["-n"], cwd=tree, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    counts = _counts(r.stdout)
    assert counts.get("train") == _default_runs(), f"a fresh checkout must train every default run, planned: {counts}"
    for rule in ("embed_synthhier", "evaluate_zeroshot", "tables", "plots", "claims", "reproduction", "provenance"):
        assert counts.get(rule, 0) >= 1, f"{rule} not planned in a fresh checkout: {counts}"
