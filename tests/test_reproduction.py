"""Reproduction against a reference run or published values, the reference refresh, and the floors on
the committed reference run."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from meru.records import load_metric_records
from meru.reporting import reproduction as rp
from meru.reporting.outputs import released_run

from metric_helpers import record, write

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference" / "default"


def _rec(d: Path, kind, seed, task, dataset, metrics, intervals=None, size="tiny", label=None):
    label = label or f"{kind}-{size}-s{seed}"
    write(d, record(kind, seed, task, dataset, size, metrics=metrics, intervals=intervals or {}, label=label))


def _run(d: Path, shift=0.0, seeds=(0, 1)):
    for seed in seeds:
        for kind in ("meru", "clip"):
            v = 60.0 + seed + shift
            _rec(d, kind, seed, "zeroshot", "synthhier-shape", {"top1": v, "tie": 1.2}, {"top1": [v - 1.0, v + 1.0]})
            _rec(d, kind, seed, "linear-probe", "synthhier-shape", {"top1": 40.0 + shift})


def test_compare_within_and_outside_the_seed_spread(tmp_path):
    _run(tmp_path / "ref" / "metrics")
    ref = rp.reference_from_run(tmp_path / "ref", "synthhier")
    # same values: within; linear probe and zero-shot top-1 share dataset and metric but not the task
    same = rp.compare(ref, load_metric_records(tmp_path / "ref" / "metrics"))
    assert same.within.all() and len(same) == 6 and (same["diff"] == 0).all()
    # seeds 60, 61 -> [60, 61]; tol = max(sd 0.707, bootstrap half-width 1, floor 1) = 1 -> allowed [59, 62]
    _run(tmp_path / "ok" / "metrics", shift=1.4)
    row = rp.compare(ref, load_metric_records(tmp_path / "ok" / "metrics")).query(
        "task == 'zeroshot' and metric == 'top1'"
    )
    assert row.low.iloc[0] == pytest.approx(59.0) and row.high.iloc[0] == pytest.approx(62.0)
    assert row.within.all()
    _run(tmp_path / "bad" / "metrics", shift=3.0)
    df = rp.compare(ref, load_metric_records(tmp_path / "bad" / "metrics"))
    line = rp.summary(df, "test")
    assert line.startswith("differs, ") and "of 6 metrics outside the spread" in line and "synthhier-shape top1" in line
    # TIE did not move: within
    assert df.query("metric == 'tie'").within.all()


def test_reproduce_without_reference_says_so(tmp_path, capsys):
    _run(tmp_path / "metrics")
    df, line = rp.reproduce(tmp_path / "metrics", "none", tmp_path / "out")
    assert df is None and line.startswith("no reference for this config")
    md = (tmp_path / "out" / "reproduction.md").read_text()
    assert "Summary: no reference" in md
    assert list(pd.read_csv(tmp_path / "out" / "reproduction.csv").columns) == rp.COLUMNS


def test_missing_reference_run_is_a_clear_error(tmp_path):
    _run(tmp_path / "metrics")
    with pytest.raises(rp.ReferenceError, match="meru reference refresh"):
        rp.reproduce(tmp_path / "metrics", str(tmp_path / "nowhere"), tmp_path / "out")


def test_published_values_one_code_path(tmp_path):
    """Published rows are references with one value: GRIT checkpoints match records of size vit-s16-grit."""
    csv = tmp_path / "pub.csv"
    csv.write_text(
        "model,size,training_data,task,dataset,metric,value,source,notes\n"
        "meru,vit-s16,grit,zeroshot,imagenet,mean_per_class,35.4,zoo,n1\n"
        "meru,vit-s16,redcaps,zeroshot,imagenet,mean_per_class,34.3,paper,n2\n"
        "clip,vit-s16,redcaps,retrieval,coco,i2t_r10,50,somewhere,n3\n"
    )
    m = tmp_path / "metrics"
    _rec(
        m,
        "meru",
        0,
        "zeroshot",
        "imagenet",
        {"mean_per_class": 35.9},
        {"mean_per_class": [35.5, 36.3]},
        size="vit-s16-grit",
        label="meru-vit-s16-grit-released",
    )
    _rec(
        m,
        "meru",
        0,
        "zeroshot",
        "imagenet",
        {"mean_per_class": 30.0},
        {"mean_per_class": [29.6, 30.4]},
        size="vit-s16",
        label="meru-vit-s16-released",
    )
    df, line = rp.reproduce(m, "published", tmp_path / "out", "redcaps", csv)
    grit, paper, missing = (df.iloc[i] for i in range(3))
    assert grit.fresh == pytest.approx(35.9) and grit.within and grit.source == "zoo" and grit.notes == "n1"
    assert paper.fresh == pytest.approx(30.0) and not paper.within and paper["diff"] == pytest.approx(-4.3)
    assert pd.isna(missing.within) and missing.fresh_n == 0
    assert line.startswith("differs, 1 of 2 metrics") and "1 reference value(s) not evaluated" in line


def test_published_values_file_is_complete_and_planned():
    """Every published row has a number and a source; configs/pretrained.yaml evaluates each row of its kinds
    on its dataset (so `meru reproduce --reference published` compares it), and every other row belongs to a model
    no one released (ATMG's GRIT re-train, known to the leaderboard as "published only")."""
    from meru.config import load_config_file

    pub = rp.read_published()
    assert len(pub) > 0 and (pub.source.str.strip() != "").all() and (pub.notes.str.strip() != "").all()
    cfg = yaml.safe_load((ROOT / "configs" / "pretrained.yaml").read_text())
    board = load_config_file(ROOT / "configs" / "leaderboard.yaml")["pretrained"]["checkpoints"]
    assert board == cfg["pretrained"]["checkpoints"]  # the leaderboard plans the pretrained run's checkpoints

    def sizes(entries):  # (model name, record size): ATMG's entries are kind meru, name atmg
        return {(released_run(c)["model"], released_run(c)["size"]) for c in entries}

    planned = sizes(cfg["pretrained"]["checkpoints"])
    evals = {("zeroshot", d) for d in cfg["evaluation"]["zeroshot"]} | {
        ("retrieval", d) for d in cfg["evaluation"]["retrieval"]
    }
    for r in rp.reference_from_published().itertuples():
        assert (r.kind, r.size) in planned | {("atmg", "vit-s16-grit"), ("atmg", "vit-b16-grit")}, r
        assert (r.task, r.dataset) in evals, f"{r.task} {r.dataset} not evaluated by configs/pretrained.yaml"
    labels = {released_run(c)["label"] for c in cfg["pretrained"]["checkpoints"]}
    assert "meru-vit-s16-grit-released" in labels and "meru-vit-l16-released" in labels


def _reference_values():
    """{(kind, task, dataset, metric): [(label, value), ...]} of the committed reference run."""
    out = {}
    for rec in load_metric_records(REFERENCE / "metrics"):
        for metric, v in rec.metrics.items():
            out.setdefault((rec.kind, rec.task, rec.dataset, metric), []).append((rec.label, v))
    return out


def test_floor_keys_exist_in_the_committed_reference():
    """The floors name real metric keys of the reference's JSON (so the floor test below measures something)."""
    values = _reference_values()
    for f in rp.floors():
        for kind in f["kinds"] or ["meru", "clip"]:
            assert (kind, f["task"], f["dataset"], f["metric"]) in values, f


def test_committed_reference_meets_the_floors():
    """Every seed of the committed reference: leaf zero-shot top-1 >= 60, category >= 90, R@1 >= 60 both ways,
    TIE <= 1.5; MERU also Spearman(specificity, distance) >= 0.5, images farther >= 90%, cone AUC >= 0.8
    (meru/resources/headline_metrics.csv)."""
    values = _reference_values()
    failures = []
    for f in rp.floors():
        for kind in f["kinds"] or sorted({k[0] for k in values}):
            for label, v in values.get((kind, f["task"], f["dataset"], f["metric"]), [(kind, np.nan)]):
                ok = v >= f["floor"] if f["op"] == ">=" else v <= f["floor"]
                if not ok:
                    failures.append(
                        f"{label} {f['task']} {f['dataset']} {f['metric']} = {v:.4g} (needs {f['op']} {f['floor']})"
                    )
    assert not failures, "\n".join(failures)


def test_released_variant_records_carry_the_variant_as_size():
    """Records of `meru-vit-s16-grit-released` get size vit-s16-grit (not vit-s16), so they neither collide
    with the RedCaps checkpoint's records nor miss their published rows: the workflow passes `--size` (from the
    config's checkpoint entry, never parsed from the label) and `meru evaluate` writes it as given."""
    from meru.evaluation.run import identity
    from meru.records import EmbeddingCache
    from meru.spaces import Lorentz

    cache = EmbeddingCache(task="classification", space=Lorentz(1.0), size="vit-s16", seed=None, dataset="imagenet")
    assert identity(cache, "zeroshot", "meru-vit-s16-grit-released", size="vit-s16-grit")["size"] == "vit-s16-grit"
    assert identity(cache, "zeroshot", "meru-vit-s16-grit-released")["size"] == "vit-s16"  # no label parsing
    cache.seed = 3
    assert identity(cache, "zeroshot")["label"] == "meru-vit-s16-s3"
    import subprocess
    import sys

    targets = [
        f"results-pretrained/metrics/{label}/zeroshot-imagenet.json"
        for label in ("meru-vit-s16-grit-released", "meru-vit-s16-released")
    ]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            *targets,
            "-n",
            "-p",
            "--forceall",
            "--configfile",
            "configs/pretrained.yaml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    commands = [line for line in r.stdout.splitlines() if "meru evaluate" in line]
    assert len(commands) == 2
    assert sum("--label meru-vit-s16-grit-released --size vit-s16-grit " in c for c in commands) == 1
    assert sum("--label meru-vit-s16-released --size vit-s16 " in c for c in commands) == 1
    assert rp.run_size("vit-s16", "grit", "redcaps") == "vit-s16-grit"
    grit = released_run({"kind": "clip", "size": "vit-b16", "data": "grit"})
    assert (grit["label"], grit["size"]) == ("clip-vit-b16-grit-released", "vit-b16-grit")
    assert released_run({"kind": "clip", "size": "vit-b16"})["label"] == "clip-vit-b16-released"
