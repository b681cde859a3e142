"""Workflow configs: bad ones fail at plan time in one line (`snakemake -n --configfile X`); no config value
reaches a shell unquoted (the planned shell commands are run with stub programs and must not execute it)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

# (case id, config text merged over configs/default.yaml, substrings the error must hold)
CASES = [
    ("unknown-size", "sizes: [huge]\n", ["sizes", "'huge'"]),
    ("unknown-kind", "models: [resnet]\n", ["models", "'resnet'"]),
    ("negative-seed", "seeds: [-1]\n", ["seeds", "-1"]),
    ("string-seed", "seeds: [a]\n", ["seeds", "'a'"]),
    ("empty-sizes", "sizes: []\n", ["sizes", "empty"]),
    ("unknown-source", "data: {source: imagenet}\n", ["data.source", "'imagenet'"]),
    ("unknown-top-key", "colour: blue\n", ["colour", "'blue'", "unknown key"]),
    ("unknown-dataset", "evaluation: {zeroshot: [notaset]}\n", ["evaluation.zeroshot", "'notaset'"]),
    ("bad-dataset-name", "evaluation: {zeroshot: ['Bad Name']}\n", ["evaluation.zeroshot", "'Bad Name'"]),
    (
        "unknown-probe-set",
        "evaluation: {linear_probe: {x: {train: nope, test: cifar10}}}\n",
        ["evaluation.linear_probe.x.train", "'nope'"],
    ),
    ("eval-batch-zero", "evaluation: {batch_size: 0}\n", ["evaluation.batch_size", "0"]),
    ("eval-workers-negative", "evaluation: {num_workers: -1}\n", ["evaluation.num_workers", "-1"]),
    ("eval-unknown-key", "evaluation: {zeroshots: [cifar10]}\n", ["evaluation.zeroshots", "unknown key"]),
    ("data-dir-mismatch", "data_dir: elsewhere\n", ["train.data.train", "'data/synthhier/train'", "elsewhere"]),
    ("train-path-mismatch", "train: {data: {train: data/other/train}}\n", ["train.data.train", "'data/other/train'"]),
    ("train-lr-negative", "train: {optim: {lr: -1}}\n", ["optim.lr", "-1"]),
    ("train-unknown-key", "train: {optim: {lrr: 1}}\n", ["optim.lrr", "unknown key"]),
    (
        "train-cross-field",
        "train: {data: {batch_size: 10}, optim: {grad_accum: 4}}\n",
        ["data.batch_size", "10", "optim.grad_accum", "4"],
    ),
    ("train-device", "train: {runtime: {device: tpu}}\n", ["runtime.device", "'tpu'"]),
    ("override-bad-value", "train_overrides: {meru: {optim: {lr: x}}}\n", ["train_overrides.meru", "optim.lr", "'x'"]),
    ("override-unknown-kind", "train_overrides: {resnet: {}}\n", ["train_overrides.resnet", "unknown key"]),
    ("synth-size-zero", "data: {source: synthhier, synthhier: {train_size: 0}}\n", ["data.synthhier.train_size", "0"]),
    (
        "synth-image-small",
        "data: {source: synthhier, synthhier: {image_size: 8}}\n",
        ["data.synthhier.image_size", "8"],
    ),
    ("synth-level", "data: {source: synthhier, synthhier: {levels: [leaf]}}\n", ["data.synthhier.levels", "'leaf'"]),
    (
        "download-missing",
        "data: {source: redcaps}\ntrain: {data: {train: data/redcaps}}\n",
        ["data.source", "'redcaps'", "annotations"],
    ),
    (
        "download-processes",
        "data: {source: redcaps, download: {annotations: a, processes: 0}}\n",
        ["data.download.processes", "0"],
    ),
    ("resources-family", "resources: {trian: {threads: 1}}\n", ["resources", "'trian'"]),
    ("resources-threads", "resources: {train: {threads: 0}}\n", ["resources.train.threads", "0"]),
    (
        "pretrained-size",
        "pretrained: {checkpoints: [{kind: meru, size: huge, url: 'https://x/y.pth'}]}\n",
        ["pretrained.checkpoints[0].size", "'huge'"],
    ),
    (
        "pretrained-url",
        "pretrained: {checkpoints: [{kind: meru, size: vit-s16, url: 'ftp://x'}]}\n",
        ["pretrained.checkpoints.0.url", "'ftp://x'"],
    ),
    (
        "pretrained-sha",
        "pretrained: {checkpoints: [{kind: clip, size: vit-s16, url: 'https://x/y', sha256: abc}]}\n",
        ["pretrained.checkpoints.0.sha256", "'abc'"],
    ),
    ("results-dir-empty", "results_dir: ''\n", ["results_dir", "''"]),
    ("name-number", "name: 5\n", ["name", "5"]),
    ("duplicate-key", "seeds: [0]\nseeds: [1]\n", ["duplicate key 'seeds'"]),
    # issue 22: wrong configs that used to plan without complaint (or with a traceback)
    ("batch-not-divisible-by-gpus", "resources: {train: {gpu: 3}}\n", ["train.data.batch_size = 128", "gpu = 3"]),
    ("sizes-file-missing", "sizes_file: nope.yaml\n", ["sizes_file = 'nope.yaml'", "no such file"]),
    ("reference-missing", "reference: results/reference/nope\n", ["reference = 'results/reference/nope'", "not a dir"]),
    ("model-twice", "models: [meru, clip, meru]\n", ["models: 'meru' is listed twice"]),
    ("name-missing", "NONAME", ["name: missing"]),
    ("synth-image-odd", "data: {source: synthhier, synthhier: {image_size: 33}}\n", ["image_size = 33", "even"]),
    ("dataset-dotdot", "evaluation: {zeroshot: ['../cifar10']}\n", ["evaluation.zeroshot = '../cifar10'", "directory"]),
    ("path-braces", "results_dir: 'res{x}'\n", ["results_dir = 'res{x}'", "wildcard"]),
    (
        "override-untrained",
        "train_overrides: {euclip: {optim: {lr: 1.0}}}\n",
        ["train_overrides.euclip", "not in models"],
    ),
    (
        "warmup-over-total",
        "train: {optim: {warmup_steps: 10, total_steps: 5}}\n",
        ["warmup_steps = 10", "total_steps = 5"],
    ),
    # issue 21: the missing key, not the whole config; an unknown train key once; did you mean
    (
        "missing-required",
        "pretrained: {checkpoints: [{kind: meru, size: vit-s16}]}\n",
        ["pretrained.checkpoints.0.url: missing"],
    ),
    ("size-did-you-mean", "sizes: [cpu-conf]\n", ["'cpu-conf'", "did you mean 'cpu-conv'"]),
    ("dataset-did-you-mean", "evaluation: {zeroshot: [cifar100s]}\n", ["'cifar100s'", "did you mean 'cifar100'"]),
    ("kind-did-you-mean", "models: [mer]\n", ["'mer'", "did you mean 'meru'"]),
    ("long-value", "evaluation: {zeroshot: [" + "x" * 100_000 + "]}\n", ["evaluation.zeroshot = 'xxx", "..."]),
]


def _copy_workflow(dst: Path) -> Path:
    for name in ("Snakefile", "workflow", "configs", "envs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / name)
    (dst / "results" / "reference" / "default").mkdir(parents=True)  # configs/default.yaml's reference run
    return dst


def _named(text: str, name: str = "case") -> str:
    """A config for ``--configfile``: every run names itself (``NONAME``: a config without ``name``)."""
    if text.startswith("NONAME"):
        return "seeds: [0]\n"
    return text if text.startswith("name:") else f"name: {name}\n" + text


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    return _copy_workflow(tmp_path_factory.mktemp("wf"))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_enough_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 25


@pytest.mark.parametrize("case_id,text,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_workflow_config_one_line(wf, case_id, text, expect):
    cfg = wf / f"{case_id}.yaml"
    cfg.write_text(_named(text))
    r = subprocess.run(
        SNAKEMAKE + ["-n", "--configfile", cfg.name],
        cwd=wf,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )
    out = r.stdout + r.stderr
    lines = [x for x in out.splitlines() if x.strip()]
    assert r.returncode != 0, out
    assert len(lines) <= 2 and "Traceback" not in out, out
    error = next(x for x in lines if x.startswith("config error:"))
    assert len(error) < 2000, len(error)  # echoed values are cut short
    assert cfg.name in error
    for s in expect:
        assert s in error, (s, error)


EVIL = "$(touch PWNED)`touch PWNED`;touch PWNED"
EVIL_NOSPACE = "$(touch${IFS}PWNED)`touch${IFS}PWNED`;touch${IFS}PWNED"  # a URL has no spaces
EVIL_CONFIGS = {
    "paths": f"""
results_dir: "res {EVIL}"
runs_dir: "runs {EVIL}"
data_dir: "d {EVIL}"
train: {{data: {{train: "d {EVIL}/synthhier/train"}}}}
evaluation: {{wordnet_dir: "wn '{EVIL}'", imagenet_hierarchy: true, zeroshot: [imagenet], evalsets_root: "e {EVIL}"}}
""",
    "download": f"""
data: {{source: redcaps, download: {{annotations: "ann {EVIL}", max_samples: 5}}}}
train: {{data: {{train: data/redcaps}}}}
""",
    "pretrained": f"""
pretrained: {{checkpoints: [{{kind: meru, size: vit-s16, url: "https://x/{EVIL_NOSPACE}", sha256: null}}]}}
""",
}


@pytest.mark.parametrize("name", sorted(EVIL_CONFIGS))
def test_no_shell_injection_from_config_values(tmp_path, name):
    wf = _copy_workflow(tmp_path)
    (wf / "evil.yaml").write_text(_named(EVIL_CONFIGS[name], "evil"))
    r = subprocess.run(
        SNAKEMAKE + ["-n", "-p", "--forceall", "--configfile", "evil.yaml"],
        cwd=wf,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    commands = re.findall(r"^Shell command: (.*)$", r.stdout + r.stderr, re.MULTILINE)
    assert len(commands) >= 3 and any("PWNED" in c for c in commands)
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for prog in ("meru", "torchrun", "curl"):
        (stubs / prog).write_text("#!/bin/sh\nexit 0\n")
        (stubs / prog).chmod(stat.S_IRWXU)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {"PATH": f"{stubs}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    for cmd in commands:
        subprocess.run(["bash", "-c", cmd], check=False, cwd=run_dir, env=env, capture_output=True, timeout=60)
    assert not list(run_dir.rglob("PWNED")) and not list(tmp_path.rglob("PWNED")), "a config value ran as code"
