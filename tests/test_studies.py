"""Study tables, verdicts and figures (meru.reporting.studies) on metric records generated with known values,
and model names (a kind or a config variant) through records, tables and plots."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from cli_helpers import cli
from metric_helpers import record, write
from meru.records import MetricRecord
from meru.reporting import studies, tables

N = 200  # test items per evaluation set
LEVELS = ("category", "family", "shape")


def _correct(pct: float, seed: int, n: int = N) -> list[int]:
    """``n`` outcomes of which exactly ``round(pct * n / 100)`` are 1, placed by ``seed``."""
    k = int(round(pct * n / 100))
    out = np.zeros(n, int)
    out[np.random.default_rng(seed).permutation(n)[:k]] = 1
    return out.tolist()


def _records(kind, size, seed, acc: dict, name=None, display=None, structure=None) -> list[MetricRecord]:
    """Zero-shot (per level), retrieval and structure records of one run with the given accuracies (%)."""
    ident = dict(size=size, model_name=name, model_display=display, label=f"{name or kind}-{size}-s{seed}")
    out = []
    for level in LEVELS:
        c = _correct(acc[level], 100 * seed + LEVELS.index(level))
        out.append(
            record(
                kind,
                seed,
                "zeroshot",
                f"synthhier-{level}",
                metrics={"top1": 100.0 * np.mean(c), "tie": 0.5},
                per_item={"correct": c},
                details={"n_classes": 12},
                **ident,
            )  # fmt: skip
        )
    hits = _correct(acc["r1"], 7 + seed)
    ranks = [0 if h else 3 for h in hits]
    m = {"i2t_r1": 100.0 * np.mean(hits), "t2i_r1": 100.0 * np.mean(hits)}
    m.update(i2t_r5=100.0, t2i_r5=100.0)
    out.append(
        record(
            kind,
            seed,
            "retrieval",
            "synthhier-retrieval",
            metrics=m,
            per_item={"i2t_rank": ranks, "t2i_rank": ranks},
            **ident,
        )  # fmt: skip
    )
    if structure is not None:
        out.append(record(kind, seed, "structure", "synthhier-shape", metrics=structure, **ident))
    return out


def _run_config(runs, label, kind, size, batch, steps, name=None):
    cfg = {"model": {"kind": kind, "size": size, "name": name or kind}, "data": {"batch_size": batch},
           "optim": {"total_steps": steps, "grad_accum": 1}, "runtime": {"seed": 0}}  # fmt: skip
    (runs / label).mkdir(parents=True, exist_ok=True)
    (runs / label / "config.yaml").write_text(yaml.safe_dump(cfg))


SIZES = ("tiny", "small-cpu", "cpu-conv")


@pytest.fixture
def sizes_study(tmp_path):
    """MERU leaf accuracy 40 / 70 / 80 against CLIP's 55 / 75 / 75 at three sizes (gap −15, −5, +5: it rises;
    both below the leaf floor at the smallest size); CLIP seed 1 at small-cpu below the category floor."""
    metrics, runs = tmp_path / "metrics", tmp_path / "runs"
    for i, size in enumerate(SIZES):
        for seed in range(3):
            meru = {"category": 95, "family": 90, "shape": (40, 70, 80)[i] + seed, "r1": 70 + 2 * i}
            clip = {"category": 95, "family": 90, "shape": (55, 75, 75)[i] + seed, "r1": 72}
            if size == "small-cpu" and seed == 1:
                clip["category"] = 85
            for kind, acc in (("meru", meru), ("clip", clip)):
                for rec in _records(kind, size, seed, acc):
                    write(metrics, rec)
                _run_config(runs, f"{kind}-{size}-s{seed}", kind, size, batch=64, steps=100)
    return metrics, runs


def test_sizes_table_pairs_trend_and_floors(sizes_study, tmp_path):
    metrics, runs = sizes_study
    out = tmp_path / "study"
    assert cli(studies, ["--type", "sizes", "--metrics", str(metrics), "--runs", str(runs), "--out", str(out),
                         "--n-boot", "300"]) == 0  # fmt: skip
    for name in ("sizes.csv", "sizes.md", "sizes_stats.csv", "sizes_gap.pdf", "sizes_gap.png"):
        assert (out / name).stat().st_size > 0, name
    wide = pd.read_csv(out / "sizes.csv")
    # rows: per size CLIP, MERU and the paired row, sizes by parameter count
    assert list(wide["size"]) == [s for s in SIZES for _ in range(3)]
    assert list(wide["model"])[:3] == ["CLIP", "MERU", "MERU − CLIP"]
    for col in ("params", "train FLOPs", "zero-shot category", "zero-shot shape", "R@1 i→t", "R@5 t→i", "TIE"):
        assert col in wide.columns, col
    params = wide[wide.model == "MERU"]["params"]
    assert params.is_monotonic_increasing and params.iloc[-1] > params.iloc[0]
    flops = wide[wide.model == "MERU"]["train FLOPs"]
    assert flops.is_monotonic_increasing and flops.iloc[0] > 64 * 100  # FLOPs per sample x 64 x 100 steps
    # paired differences: exact means of the generated outcomes (−15, −5, +5 leaf points)
    gaps = wide[wide.model == "MERU − CLIP"]["zero-shot shape"].astype(float).tolist()
    assert gaps == pytest.approx([-15.0, -5.0, 5.0])
    st = pd.read_csv(out / "sizes_stats.csv")
    diff = st[(st.row_type == "difference") & (st.column == "zero-shot shape")]
    assert (diff.method == "bootstrap").all() and (diff.diff_lo <= diff["mean"]).all()
    assert (diff["mean"] <= diff.diff_hi).all() and (diff.n_items == 3 * N).all()
    # the trend: MERU − CLIP rises with log parameters, interval above 0
    trend = st[(st.row_type == "trend") & (st.column == "zero-shot shape")].iloc[0]
    assert trend["mean"] > 0 and trend.diff_lo > 0
    md = (out / "sizes.md").read_text()
    assert "zero-shot shape: MERU − CLIP changes by +" in md and "the gap does change: it rises" in md
    assert "R@1 i→t: MERU − CLIP" in md
    # floors: the mid size's CLIP row is flagged, the smallest size is measured, not enforced
    assert "CLIP†" in md and "BELOW FLOOR: category top1 85 < 90 (s1)" in md
    assert wide.loc[0, "floors"].startswith("not enforced, below: shape top1 55 < 60 (s0)")
    assert "includes rows below a floor" in md.lower()


def test_gap_slope_sign_and_null():
    """Rising gaps give a positive slope whose interval excludes 0; a flat gap one that contains 0."""
    rng = np.random.default_rng(0)
    rising = [rng.normal(g, 1.0, size=(3, 300)) for g in (-10.0, -5.0, 0.0)]
    t = studies.gap_slope([1.0, 2.0, 3.0], rising, n_boot=400)
    assert t["slope"] == pytest.approx(5.0, abs=0.5) and t["ci"][0] > 0
    flat = [rng.normal(-3.0, 5.0, size=(3, 300)) for _ in range(3)]
    t = studies.gap_slope([1.0, 2.0, 3.0], flat, n_boot=400)
    assert t["ci"][0] < 0 < t["ci"][1]
    col = studies.Column("zeroshot", "synthhier-shape", "top1", "zero-shot shape", 1, "accuracy")
    assert "does not change measurably" in studies.trend_sentence(col, "MERU − CLIP", t, "10x parameters")


def test_batch_study_reads_batch_from_configs_and_lists_published_context(tmp_path):
    metrics, runs = tmp_path / "metrics", tmp_path / "runs"
    for batch, gap in ((64, -8), (128, -4), (512, 0)):
        for seed in range(3):
            for kind, leaf in (("meru", 70 + gap), ("clip", 70)):
                name = f"{kind}-b{batch}"
                acc = {"category": 95, "family": 90, "shape": leaf + seed, "r1": 70}
                for rec in _records(kind, "cpu-conv", seed, acc, name=name, display=f"{kind.upper()} b{batch}"):
                    write(metrics, rec)
                _run_config(runs, f"{name}-cpu-conv-s{seed}", kind, "cpu-conv", batch, 51200 // batch, name)
    out = tmp_path / "study"
    assert cli(studies, ["--type", "batch", "--metrics", str(metrics), "--runs", str(runs), "--out", str(out),
                         "--n-boot", "300"]) == 0  # fmt: skip
    wide = pd.read_csv(out / "batch.csv")
    assert list(wide["batch"].astype(str)) == ["64"] * 3 + ["128"] * 3 + ["512"] * 3
    assert set(wide[~wide.model.str.contains("−")]["samples seen"]) == {51200}  # equal samples seen
    gaps = wide[wide.model.str.contains("−")]["zero-shot shape"].astype(float).tolist()
    assert gaps == pytest.approx([-8.0, -4.0, 0.0])
    md = (out / "batch.md").read_text()
    assert "per doubling of the batch" in md and "it rises" in md
    # the published context: HyCoCLIP's GRIT batch-768 ViT-S checkpoints, MERU 35.4 vs CLIP 36.7
    assert "### Published context" in md and "| PalAvik/hycoclip model-zoo.md | vit-s16 | grit | 768 |" in md
    assert "35.4 | 36.7 | -1.3" in md
    # a missing published file: a note, not a failure
    assert cli(studies, ["--type", "batch", "--metrics", str(metrics), "--runs", str(runs), "--out", str(out),
                         "--n-boot", "50", "--published", str(tmp_path / "none.csv")]) == 0  # fmt: skip
    assert "published context skipped" in (out / "batch.md").read_text()
    # without the runs' configs the batch size is unknown: one line naming the file
    assert cli(studies, ["--type", "batch", "--metrics", str(metrics), "--out", str(out)]) == 2


def test_ablation_pairs_every_row_with_full_meru_and_reads_it(tmp_path):
    metrics = tmp_path / "metrics"
    variants = {
        "meru": ("MERU", 70, [0.99, 0.995, 0.985]),
        "meru-noentail": ("MERU, no entailment", 76, [0.70, 0.72, 0.68]),
        "clip": ("CLIP", 75, None),
    }
    for name, (display, leaf, aucs) in variants.items():
        kind = "clip" if name == "clip" else "meru"
        for seed in range(3):
            s = {"spearman_specificity": 0.6 + 0.01 * seed, "image_farther_frac": 0.99}
            if aucs:
                s["cone_auc"] = aucs[seed]
            acc = {"category": 95, "family": 90, "shape": leaf + seed, "r1": 70}
            for rec in _records(kind, "cpu-conv", seed, acc, name=name, display=display, structure=s):
                write(metrics, rec)
    out = tmp_path / "study"
    assert cli(studies, ["--type", "ablation", "--metrics", str(metrics), "--out", str(out), "--n-boot", "300"]) == 0
    wide = pd.read_csv(out / "ablation.csv")
    assert list(wide.model) == ["MERU", "CLIP", "MERU, no entailment", "CLIP − MERU", "MERU, no entailment − MERU"]
    for col in ("zero-shot shape", "R@1 t→i", "Spearman specificity", "image farther than caption", "cone AUC"):
        assert col in wide.columns, col
    row = wide[wide.model == "MERU, no entailment − MERU"].iloc[0]
    assert row["zero-shot shape"] == pytest.approx(6.0) and row["cone AUC"] == pytest.approx(-0.29)
    assert "weaker hierarchy: cone AUC −0.290" in row["reading"].replace("-", "−")
    assert "gains accuracy: zero-shot shape +6.0" in row["reading"]
    md = (out / "ablation.md").read_text()
    assert "- MERU, no entailment: vs MERU: weaker hierarchy: cone AUC" in md
    st = pd.read_csv(out / "ablation_stats.csv")
    auc = st[(st.row_type == "difference") & (st.column == "cone AUC")].iloc[0]
    assert auc.method == "t" and auc.diff_hi < 0  # no per-item data: a t interval over the seeds
    assert (out / "ablation_hierarchy.png").stat().st_size > 0


def test_records_without_model_names_read_as_their_kind(tmp_path):
    rec = record("meru", 0, metrics={"top1": 50.0})
    data = rec.to_dict()
    assert data["model_name"] == "meru" and data["model_display"] == "MERU"
    for key in ("model_name", "model_display"):
        del data[key]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = MetricRecord.load(tmp_path / "old.json")
    assert (old.model_name, old.model_display) == ("meru", "MERU")
    variant = record("meru", 0, metrics={"top1": 1.0}, model_name="meru-fixc", model_display="MERU, fixed curvature")
    back = MetricRecord.load(variant.write(tmp_path / "v.json"))
    assert (back.kind, back.model_name, back.model_display) == ("meru", "meru-fixc", "MERU, fixed curvature")
    bad = {**variant.to_dict(), "model_name": ""}
    with pytest.raises(ValueError, match="model_name"):
        MetricRecord.from_dict(bad, "x.json")


def test_tables_group_by_model_name_and_show_display_names():
    """Two models of one kind are two rows, each paired against CLIP, shown by their display names."""
    spec = next(s for s in tables.SPECS if s.name == "zeroshot")
    recs = []
    for name, display, pct in (("clip", None, 80), ("meru", None, 70), ("meru-fixc", "MERU, fixed curvature", 75)):
        kind = "clip" if name == "clip" else "meru"
        for seed in range(2):
            c = _correct(pct, seed)
            recs.append(record(kind, seed, metrics={"top1": 100.0 * np.mean(c)}, per_item={"correct": c},
                               details={"n_classes": 12}, model_name=name, model_display=display))  # fmt: skip
    df = tables.build(recs, spec, n_boot=50)
    assert list(df.model) == ["CLIP", "MERU", "MERU, fixed curvature", "MERU − CLIP", "MERU, fixed curvature − CLIP"]
    assert list(df.kind) == ["clip", "meru", "meru-fixc", "meru-clip", "meru-fixc-clip"]
    assert df[df.kind == "meru-fixc-clip"]["mean"].iloc[0] == pytest.approx(-5.0)


@pytest.mark.parametrize(
    "cfg,study", [("sizes", "sizes"), ("ablations", "ablation"), ("ablations-short", "ablation"), ("batch", "batch")]
)
def test_study_configs_plan_their_study_outputs(cfg, study):
    """`snakemake -n` of each study config plans one `study` job writing RESULTS/study/ (table, stats, figure)."""
    import subprocess
    import sys
    from pathlib import Path

    from meru.config import load_config_file
    from meru.reporting.outputs import study_outputs

    root = Path(__file__).resolve().parent.parent
    results = load_config_file(root / "configs" / f"{cfg}.yaml")["results_dir"]
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--forceall", "--configfile", f"configs/{cfg}.yaml"],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    block = r.stdout.split("rule study:")[1].split("\n\n")[0]
    for name in study_outputs(study):
        assert f"{results}/study/{name}" in block, name


def test_embedding_cache_and_record_carry_the_training_configs_model_name(tmp_path):
    """`meru embed` reads model.name / model.display from the checkpoint's config; `meru evaluate` copies them
    into the record and builds its default label from the name; without them both are the kind's."""
    from meru.evaluation.run import identity
    from meru.models import build_model
    from meru.records import EmbeddingCache

    model = build_model("meru", "tiny")
    named = {"kind": "meru", "name": "meru-noentail", "display": "MERU, no entailment"}
    model.checkpoint_info = {"step": 5, "config": {"model": named, "runtime": {"seed": 1}}}
    cache = EmbeddingCache.from_dict({**EmbeddingCache.model_fields(model, "m.pt"), "task": "classification"})
    assert (cache.kind, cache.model_name, cache.model_display) == ("meru", "meru-noentail", "MERU, no entailment")
    who = identity(cache, "zeroshot")
    assert (who["model_name"], who["model_display"], who["label"]) == (
        "meru-noentail", "MERU, no entailment", "meru-noentail-tiny-s1",
    )  # fmt: skip
    back = EmbeddingCache.from_dict(cache.to_dict())
    assert back.model_name == "meru-noentail" and back.model_display == "MERU, no entailment"
    model.checkpoint_info = {"step": 5, "config": {"model": {"kind": "meru"}}}
    plain = EmbeddingCache.from_dict({**EmbeddingCache.model_fields(model, "m.pt"), "task": "classification"})
    assert (plain.model_name, plain.model_display) == ("meru", "MERU")


def test_training_curves_name_runs_by_their_config_model_name(tmp_path):
    from meru.reporting.plots import run_identity

    _run_config(tmp_path, "meru-noentail-tiny-s0", "meru", "tiny", 8, 10, name="meru-noentail")
    run = run_identity(tmp_path / "meru-noentail-tiny-s0")
    assert (run["kind"], run["model"], run["display"]) == ("meru", "meru-noentail", "meru-noentail")
    _run_config(tmp_path, "clip-tiny-s0", "clip", "tiny", 8, 10)
    assert run_identity(tmp_path / "clip-tiny-s0")["display"] == "CLIP"


def test_study_columns_follow_the_tables_order_with_attribute_tasks():
    recs = [record("meru", 0, "zeroshot", f"synthhier-{d}", metrics={"top1": 50.0}) for d in ("colour", "shape")]
    recs += [record("meru", 0, "zeroshot", f"synthhier-{d}", metrics={"top1": 50.0}) for d in ("category", "size")]
    recs.append(record("meru", 0, "retrieval", "synthhier-retrieval", metrics={"i2t_r1": 1.0, "t2i_r1": 1.0}))
    labels = [c.label for c in studies.study_columns(recs, "ablation")]
    assert labels == [
        "zero-shot category", "zero-shot shape", "zero-shot colour (attribute)", "zero-shot size (attribute)",
        "R@1 i→t", "R@1 t→i",
    ]  # fmt: skip
