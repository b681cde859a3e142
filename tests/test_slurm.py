"""SLURM submission through the pinned executor plugin, with stand-in SLURM executables on PATH.

`snakemake --profile profiles/slurm` on a config derived from configs/paper.yaml submits one 8-GPU
`train` job; the stand-in `sbatch` (tests/data/slurm/fake_slurm.py) records its arguments and runs the
job script, whose jobstep `srun`s the rule; the stand-in `torchrun` records how it was launched.
"""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FAKE = ROOT / "tests" / "data" / "slurm" / "fake_slurm.py"
TOOLS = ("sbatch", "squeue", "sacct", "scontrol", "sinfo", "sacctmgr", "sshare", "srun", "torchrun")


def paper_derived_config(tmp_path: Path, extra_resources: dict) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    cfg.update(
        results_dir=str(tmp_path / "results"),
        runs_dir=str(tmp_path / "runs"),
        data_dir=str(tmp_path / "data"),
        models=["meru"],
        sizes=["vit-b16"],
        seeds=[0],
    )
    cfg["resources"]["train"].update(extra_resources)
    cfg["train"]["data"]["train"] = str(tmp_path / "data" / "redcaps")  # the dataset this workflow builds
    (tmp_path / "data" / "redcaps").mkdir(parents=True)  # the training data "exists"; no download job
    path = tmp_path / "paper-slurm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def fake_path(tmp_path: Path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:  # fake_slurm.py dispatches on its argv[0]: run it through a link named like the tool
        (bin_dir / f"{tool}.py").symlink_to(FAKE)
        exe = bin_dir / tool
        exe.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(bin_dir / tool))}.py "$@"\n')
        exe.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["FAKE_SLURM_DIR"] = str(tmp_path)
    return env


def calls(tmp_path: Path, cmd: str) -> list[dict]:
    rows = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    return [r for r in rows if r["cmd"] == cmd]


@pytest.mark.slow
def test_gpu_train_job_submission(tmp_path):
    cfg = paper_derived_config(tmp_path, {"slurm_partition": "gpu", "slurm_account": "proj1"})
    env = fake_path(tmp_path)
    target = tmp_path / "runs" / "meru-vit-b16-s0" / "model.pt"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            str(target),
            "--profile",
            "profiles/slurm",
            "--configfile",
            str(cfg),
            "--slurm-init-seconds-before-status-checks",
            "1",
            "--slurm-logdir",
            str(tmp_path / "slurm-logs"),
            "--latency-wait",
            "5",
            "--retries",
            "0",
            "--nolock",
        ],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    logs = (
        "\n".join(p.read_text() for p in (tmp_path / "slurm-logs").rglob("*.log"))
        if (tmp_path / "slurm-logs").is_dir()
        else ""
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:] + logs[-4000:]
    assert target.is_file()

    train = calls(tmp_path, "sbatch")
    assert len(train) == 1, [c["argv"] for c in train]  # train_config is a local rule: no job of its own
    argv = train[0]["argv"]
    joined = " ".join(argv)
    assert "--gpus=8" in argv and not any(a.startswith("--gres") for a in argv)
    assert "--cpus-per-task=64" in argv
    assert argv[argv.index("--mem") + 1] == "480000"
    assert argv[argv.index("-t") + 1] == "4320"
    assert argv[argv.index("-p") + 1] == "gpu" and argv[argv.index("-A") + 1] == "proj1"
    assert "--ntasks" not in joined  # one task; torchrun starts the 8 workers inside it

    (run,) = calls(tmp_path, "torchrun")
    assert run["env"]["SLURM_JOB_ID"] == train[0]["job_id"]  # inside the sbatch job
    t = run["argv"]
    assert t[:5] == ["--standalone", "--nproc_per_node", "8", "-m", "meru"] and t[5] == "train"
    assert t[t.index("--size") + 1] == "vit-b16" and t[t.index("--model") + 1] == "meru"
    srun = calls(tmp_path, "srun")
    assert any("--gpus=8" in c["argv"] for c in srun)


def test_slurm_extra_that_repeats_the_gpu_request_is_refused(tmp_path):
    cfg = paper_derived_config(tmp_path, {"slurm_extra": "--gres=gpu:8"})
    env = fake_path(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--nolock", "--configfile", str(cfg)],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0
    assert "resources.train.slurm_extra='--gres=gpu:8' sets the generic resources (GRES)" in r.stdout + r.stderr
