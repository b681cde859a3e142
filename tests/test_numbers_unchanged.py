"""Refactors keep the numbers: the smoke pipeline, run in-process, gives the metrics recorded before them.

The pipeline is the smoke workflow's, run without Snakemake: SynthHier (256 train / 96 test images) and its
probe draw -> MERU, CLIP and EuCLIP ``tiny`` trained 30 steps each from ``configs/smoke.yaml`` (one thread)
-> ``meru embed`` of every SynthHier set and the caption pool -> ``meru evaluate`` for every task. Every
metric of every record must equal the golden values recorded on the same kind of CPU to 1e-9 (relative).

Golden values are per CPU: float32 kernels (oneDNN / OpenBLAS paths chosen by the CPU's vector units) round
differently, so the same code gives other last bits on another processor, and the tiny linear probe then
converges elsewhere (measured: the Intel Xeon values moved by up to 3 points on an AMD EPYC with AVX2). Each
``tests/data/golden/smoke_metrics-*.json`` names its ``machine`` (CPU model and torch's CPU capability) and the
commit it was recorded at; the test uses the file of the machine it runs on and skips, naming the command,
where none was recorded. Record with ``python tests/test_numbers_unchanged.py --write`` on a commit *before* a
refactor (commit the file), never to make a refactor pass; regenerate only for a change meant to move numbers,
and say so in the commit.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = Path(__file__).parent / "data" / "golden"
KINDS = ("meru", "clip", "euclip")
LEVELS = ("category", "family", "shape")


def this_machine() -> dict[str, str]:
    """The CPU model name and torch's CPU capability (``AVX2``, ``AVX512``, ...): what decides float rounding."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "capability": torch.backends.cpu.get_cpu_capability()}


def golden_for(machine: dict[str, str]) -> Path | None:
    """The golden file recorded on this kind of machine (a file without a capability matches any capability)."""
    for path in sorted(GOLDEN_DIR.glob("smoke_metrics-*.json")):
        recorded = json.loads(path.read_text()).get("machine", {})
        if recorded.get("cpu") == machine["cpu"] and recorded.get("capability") in (None, machine["capability"]):
            return path
    return None


def run_pipeline(work: Path, synth: Path, probe: Path) -> dict[str, dict[str, float | None]]:
    """``{"KIND/TASK-SET": metrics}`` of the smoke pipeline run under ``work``."""
    from meru.cli import main as cli_main
    from meru.config import load_train_config
    from meru.training.train import train

    torch.set_num_threads(1)
    out: dict[str, dict] = {}
    for kind in KINDS:
        run = work / f"{kind}-tiny-s0"
        cfg = load_train_config(
            ROOT / "configs" / "smoke.yaml", kind, "tiny", 0, [f"data.train={synth / 'train'}", "runtime.threads=1"]
        )
        train(cfg, run)
        ckpt, emb, met = run / "model.pt", work / "emb" / kind, work / "metrics" / kind
        sources = {f"synthhier-{lv}": ["--evalset", str(synth / "eval" / f"zeroshot_{lv}")] for lv in LEVELS}
        sources["synthhier-retrieval"] = ["--evalset", str(synth / "eval" / "retrieval")]
        sources["synthhier-probe"] = ["--evalset", str(probe / "eval" / "zeroshot_shape")]
        sources["textpool-synthhier"] = ["--text-pool", str(synth / "eval" / "captions.jsonl")]
        argv = ["embed", "--checkpoint", str(ckpt), "--batch-size", "64"]
        for name, flag in sources.items():
            argv += flag + ["--out", str(emb / f"{name}.pt")]
        assert cli_main(argv) == 0
        e = {name: str(emb / f"{name}.pt") for name in sources}
        tree = ["--tree", str(synth / "taxonomy.txt"), "--tree-names", str(synth / "taxonomy_names.json")]
        jobs = {f"zeroshot-synthhier-{lv}": ["zeroshot", "--embeddings", e[f"synthhier-{lv}"]] for lv in LEVELS}
        jobs["zeroshot-synthhier-shape"] += tree
        jobs |= {f"prompts-synthhier-{lv}": ["prompts", "--embeddings", e[f"synthhier-{lv}"]] for lv in LEVELS}
        jobs["retrieval-synthhier"] = ["retrieval", "--embeddings", e["synthhier-retrieval"]]
        jobs["linear-probe-synthhier"] = ["linear-probe", "--train-embeddings", e["synthhier-probe"]]
        jobs["linear-probe-synthhier"] += ["--embeddings", e["synthhier-shape"]]
        pool = ["--embeddings", e["synthhier-shape"], "--text-pool", e["textpool-synthhier"]]
        jobs["structure-synthhier"] = ["structure", *pool]
        jobs["traversal-synthhier"] = ["traversal", *pool, "--max-images", "64"]
        for name, (task, *args) in jobs.items():
            path = met / f"{name}.json"
            assert cli_main(["evaluate", "--task", task, *args, "--out", str(path), "--label", run.name]) == 0
            out[f"{kind}/{name}"] = json.loads(path.read_text())["metrics"]
    return out


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_smoke_pipeline_metrics_equal_the_recorded_ones(synthhier, tmp_path):
    machine = this_machine()
    path = golden_for(machine)
    if path is None:
        pytest.skip(
            f"no golden metrics recorded on {machine}: run `python tests/test_numbers_unchanged.py --write` "
            "on the commit before a refactor and commit the file"
        )
    recorded = json.loads(path.read_text())
    golden = recorded["metrics"]
    # kinds whose numbers a deliberate change moved after this file was recorded on a CPU not available to
    # re-record it ({"euclip": "why"}): their records must still exist, their values are not compared
    stale = recorded.get("stale_kinds", {})
    got = run_pipeline(tmp_path, synthhier(256, 96, shard_size=128), synthhier(1, 96, seed=1000, shard_size=128))
    assert sorted(got) == sorted(golden)
    diffs = [
        f"{rec}.{m}: {got[rec].get(m)} != recorded {v}"
        for rec, metrics in golden.items()
        if rec.split("/")[0] not in stale
        for m, v in metrics.items()
        if not _same(got[rec].get(m), v)
    ]
    assert not diffs, f"{len(diffs)} metric(s) moved:\n" + "\n".join(diffs[:20])

    def defined(metrics):  # a metric undefined on this data may be written as null or left out
        return sorted(k for k, v in metrics.items() if v is not None)

    assert all(defined(got[r]) == defined(golden[r]) for r in golden), "metric names changed"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import subprocess
    import tempfile

    import meru

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for name, extra in (("s", ["--train-size", "256"]), ("p", ["--train-size", "1", "--seed", "1000"])):
            argv = [sys.executable, "-m", "meru", "synth", "--out", str(d / name), *extra]
            subprocess.run(argv + ["--test-size", "96", "--shard-size", "128"], check=True, capture_output=True)
        metrics = run_pipeline(d / "work", d / "s", d / "p")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    machine = this_machine()
    slug = "-".join(re.findall(r"[a-z0-9]+", f"{machine['cpu']} {machine['capability']}".lower()))[:60]
    out = golden_for(machine) or GOLDEN_DIR / f"smoke_metrics-{slug}.json"
    record = {"commit": commit.stdout.strip(), "meru": meru.__version__, "machine": machine, "metrics": metrics}
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} ({sum(len(m) for m in metrics.values())} values)")
