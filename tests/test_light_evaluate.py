"""Evaluation jobs stay light: `meru evaluate` reads caches and builds spaces without importing timm or open_clip
(the model code), which cost 4-5 of a zero-shot job's 9-11 CPU-seconds (results/benchmarks/evaluate.json)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from meru.kinds import KINDS
from meru.records import EmbeddingCache
from meru.spaces import SPACES, get_space

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("timm", "open_clip", "meru.models.clip_meru", "meru.losses")
PROBE = """
import json, sys
from meru.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
print(json.dumps({"codes": codes, "loaded": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


def in_fresh_interpreter(code: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def caches(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """A 4-image classification cache with true captions and a 6-caption pool of ``kind``, written to disk."""
    space = get_space(kind, 1.0 if KINDS[kind].space == "lorentz" else None)
    gen = torch.Generator().manual_seed(0)
    pool = EmbeddingCache(
        task="text-pool",
        space=space,
        kind=kind,
        text_emb=0.3 * torch.randn(6, 3, generator=gen),
        texts=[f"caption {j}" for j in range(6)],
        specificity=torch.arange(6.0),
        path="pool",
    )
    images = EmbeddingCache(
        task="classification",
        space=space,
        kind=kind,
        image_emb=torch.randn(4, 3, generator=gen),
        path="emb",
        meta=[{"true_captions": [i, (i + 1) % 6, 5]} for i in range(4)],
    )
    return images.save(tmp_path / f"{kind}-emb.pt"), pool.save(tmp_path / f"{kind}-pool.pt")


def test_evaluate_imports_no_model_code(tmp_path):
    """Every kind's caches are read and evaluated (its space built) in one fresh interpreter."""
    runs, outs = [], []
    for kind in sorted(KINDS):
        emb, pool = caches(tmp_path, kind)
        for task in ("structure", "traversal"):
            outs.append(tmp_path / f"{kind}-{task}.json")
            runs.append(["evaluate", "--task", task, "--embeddings", str(emb), "--text-pool", str(pool)])
            runs[-1] += ["--out", str(outs[-1])]
    res = json.loads(in_fresh_interpreter(PROBE, json.dumps(runs), json.dumps(MODELS)))
    assert res == {"codes": [0] * len(runs), "loaded": []}
    assert [json.loads(out.read_text())["task"] for out in outs] == [run[2] for run in runs]


def test_evaluate_and_reporting_modules_import_no_model_code():
    modules = ["meru.evaluation.run", "meru.evaluation.tasks", "meru.records", "meru.models.tensor_files"]
    modules += ["meru.reporting.tables", "meru.reporting.plots", "meru.reporting.claims"]
    code = (
        f"import sys, json\nimport {', '.join(modules)}\nprint(json.dumps(sorted(set(sys.modules) & {set(MODELS)!r})))"
    )
    assert json.loads(in_fresh_interpreter(code)) == []


def test_the_light_space_lookup_is_each_kinds_own_space():
    for name, kind in KINDS.items():
        assert SPACES.get(kind.space, kind.space_class) is kind.space_class, name


def test_checkpoint_helpers_keep_their_names():
    from meru.models import checkpoints, tensor_files

    for name in ("safe_load", "save_torch", "CheckpointError", "UnsafeFileError", "require_finite", "require_sane"):
        assert getattr(checkpoints, name) is getattr(tensor_files, name)
