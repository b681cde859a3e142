"""``meru workflow``: every --configfile is read before Snakemake sees it (a YAML error is one line naming the file
and line, and Snakemake never starts); a config that reads goes to Snakemake unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from meru.training.workflow import config_files

ROOT = Path(__file__).resolve().parent.parent


def meru(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "meru", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_config_files_are_found_in_every_spelling():
    argv = ["-n", "--configfile", "a.yaml", "b.yaml", "--cores", "2", "--configfiles=c.yaml", "--configfile", "d.yaml"]
    assert config_files(argv) == ["a.yaml", "b.yaml", "c.yaml", "d.yaml"]
    assert config_files(["--cores", "all"]) == []


def test_a_yaml_syntax_error_is_one_line_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsizes: [tiny\nseeds: [0]\n")
    r = meru("workflow", "-n", "--configfile", str(bad))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"meru workflow: error: {bad}:3:") and "not valid YAML" in lines[0], lines
    assert "Building DAG" not in r.stdout + r.stderr  # Snakemake never started


def test_a_bad_base_is_one_line(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("base: nowhere.yaml\nname: mine\n")
    r = meru("workflow", "-n", "--configfile", str(cfg))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nowhere.yaml" in r.stderr


def test_a_good_config_goes_to_snakemake_unchanged():
    r = meru("workflow", "-n", "--configfile", "configs/smoke.yaml")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "meru_train" in r.stdout or "train" in r.stdout
