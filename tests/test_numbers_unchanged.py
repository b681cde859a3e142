"""Refactors keep the numbers: the smoke pipeline, run in-process, gives the metrics recorded before them.

The pipeline is the smoke workflow's, run without Snakemake: SynthHier (256 train / 96 test images) and its
probe draw -> MERU, CLIP and EuCLIP ``tiny`` trained 30 steps each from ``configs/smoke.yaml`` (one thread)
-> ``meru embed`` of every SynthHier set and the caption pool -> ``meru evaluate`` for every task. Every
metric of every record must equal ``tests/data/golden/smoke_metrics.json`` to 1e-9 (relative). Those values
were recorded by this file (``python tests/test_numbers_unchanged.py --write``; commit in the file), before the
stage records were given types (issue 10); regenerate them only for a change that is meant to move numbers,
and say so in the commit.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "data" / "golden" / "smoke_metrics.json"
KINDS = ("meru", "clip", "euclip")
LEVELS = ("category", "family", "shape")


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


@pytest.mark.skipif(not GOLDEN.is_file(), reason="no golden metrics recorded")
def test_smoke_pipeline_metrics_equal_the_recorded_ones(synthhier, tmp_path):
    golden = json.loads(GOLDEN.read_text())["metrics"]
    got = run_pipeline(tmp_path, synthhier(256, 96, shard_size=128), synthhier(1, 96, seed=1000, shard_size=128))
    assert sorted(got) == sorted(golden)
    diffs = [
        f"{rec}.{m}: {got[rec].get(m)} != recorded {v}"
        for rec, metrics in golden.items()
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
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(
        json.dumps({"commit": commit.stdout.strip(), "meru": meru.__version__, "metrics": metrics}, indent=1) + "\n"
    )
    print(f"wrote {GOLDEN} ({sum(len(m) for m in metrics.values())} values)")
