"""meru tables on small synthetic metric JSONs: wide layout, seed statistics, paired tests, files."""

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from meru import stats
from meru.reporting import tables

SPEC = {s.name: s for s in tables.SPECS}


def _write(d, kind, seed, correct, dataset="zeroshot_shape", n_classes=12, size="tiny"):
    correct = np.asarray(correct, int)
    acc = 100.0 * correct.mean()
    rec = {
        "model": kind,
        "kind": kind,
        "size": size,
        "seed": seed,
        "label": f"{kind}-{size}-s{seed}",
        "dataset": dataset,
        "task": "zeroshot",
        "n_classes": n_classes,
        "metrics": {"top1": acc, "top5": 100.0, "mistake_severity": 1.5},
        "intervals": {"top1": [acc - 5, acc + 5], "top5": [100.0, 100.0]},
        "n": len(correct),
        "per_item": {"correct": correct.tolist(), "correct_top5": [1] * len(correct)},
    }
    p = d / f"{kind}-{size}-s{seed}" / f"zeroshot-{dataset}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(rec))
    return rec


def test_wide_layout_seed_stats_and_pooled_paired_test(tmp_path):
    m = tmp_path / "metrics"
    rng = np.random.default_rng(1)
    cor = {(k, s): rng.random(300) < p for k, p in (("meru", 0.9), ("clip", 0.3), ("euclip", 0.3)) for s in (0, 1, 2)}
    for (k, s), c in cor.items():
        _write(m, k, s, c)
    frames = tables.write_tables(m, tmp_path / "out", n_boot=500)
    df = frames["zeroshot"]
    top1 = df[df.block == "Top-1"].set_index("model")
    # rows: every kind present, CLIP first, then one comparison per other kind against CLIP
    assert list(top1.index) == ["CLIP", "EuCLIP", "MERU", "EuCLIP − CLIP", "MERU − CLIP"]
    vals = [100 * cor[("meru", s)].mean() for s in (0, 1, 2)]
    r = top1.loc["MERU"]
    assert r["mean"] == pytest.approx(np.mean(vals)) and r["sd"] == pytest.approx(np.std(vals, ddof=1))
    assert (r["min"], r["max"]) == (pytest.approx(min(vals)), pytest.approx(max(vals)))
    # the paired test pools (seed, item) pairs: same numbers as meru.stats on the concatenation
    want = stats.paired_bootstrap(
        np.concatenate([100.0 * cor[("meru", s)] for s in (0, 1, 2)]),
        np.concatenate([100.0 * cor[("clip", s)] for s in (0, 1, 2)]),
        n_boot=500,
    )
    c = top1.loc["MERU − CLIP"]
    assert [c["diff_lo"], c["diff_hi"]] == pytest.approx(want["ci"]) and c["n_items"] == 900
    assert c["p_value"] == pytest.approx(1 / 500) and c["wins"] == 3  # floored at 1/B, never 0
    md = (tmp_path / "out" / "zeroshot.md").read_text()
    assert "p < 0.002 (3/3)" in md and "p = 0.0 " not in md
    # top-5 with 12 classes is not trivial; the wide CSV has one column per dataset
    wide = pd.read_csv(tmp_path / "out" / "zeroshot.csv")
    assert list(wide.columns) == ["metric", "model", "size", "seeds", "shape"]
    assert set(wide.metric) == {"Top-1", "Top-5"}


def test_trivial_top5_is_dropped(tmp_path):
    m = tmp_path / "metrics"
    for k in ("meru", "clip"):
        _write(m, k, 0, [1, 0, 1, 1], dataset="zeroshot_category", n_classes=2)
        _write(m, k, 0, [1, 0, 0, 1], dataset="zeroshot_shape", n_classes=12)
    df = tables.build(tables.load_metrics(m), SPEC["zeroshot"])
    assert set(df[df.block == "Top-5"].column) == {"shape"}
    assert set(df[df.block == "Top-1"].column) == {"category", "shape"}
    # records without n_classes: inferred from the class indices, trivial only when the value is 100
    rec = {"metrics": {"top5": 100.0}, "per_item": {"label": [0, 1, 2], "pred": [1, 1, 0]}}
    assert tables.trivial(rec, "top5") and not tables.trivial(dict(rec, metrics={"top5": 90.0}), "top5")


def test_single_seed_shows_bootstrap_interval_unless_uninformative(tmp_path):
    m = tmp_path / "metrics"
    _write(m, "meru", 0, [1, 0] * 50)
    p = m / "clip-tiny-s0" / "zeroshot-zeroshot_shape.json"
    rec = _write(m, "clip", 0, [1, 0] * 50)
    rec["intervals"]["top1"] = [0.0, 100.0]  # spans the whole range: says nothing
    p.write_text(json.dumps(rec))
    tables.write_tables(m, tmp_path / "out")
    rows = {
        line.split(" | ")[1]: line
        for line in (tmp_path / "out" / "zeroshot.md").read_text().splitlines()
        if line.startswith("| Top-1")
    }
    assert rows["MERU"].endswith("| 50.0 [45.0, 55.0] |")
    assert rows["CLIP"].endswith("| 50.0 |")


def test_tex_is_booktabs_and_escaped(tmp_path):
    m = tmp_path / "metrics"
    for k in ("meru", "clip"):
        for s in (0, 1):
            _write(m, k, s, np.arange(40) % (2 + s) == 0)
    tables.write_tables(m, tmp_path / "out")
    tex = (tmp_path / "out" / "zeroshot.tex").read_text()
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{", r"\label{tab:zeroshot}"):
        assert cmd in tex
    assert "±" not in tex and r"$\pm$" in tex and r"accuracy, \%" in tex
    for name in tables.output_names():
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_retrieval_recall_test_uses_per_query_ranks(tmp_path):
    rng = np.random.default_rng(0)
    for k, scale in (("meru", 2), ("clip", 8)):
        for s in (0, 1):
            ranks = {d: rng.integers(0, scale * 5, 200) for d in ("i2t", "t2i")}
            met = {f"{d}_r{n}": 100 * float(np.mean(ranks[d] < n)) for d in ranks for n in (1, 5, 10)}
            p = tmp_path / f"{k}-tiny-s{s}" / "retrieval-synth.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(
                json.dumps(
                    {
                        "kind": k,
                        "size": "tiny",
                        "seed": s,
                        "dataset": "coco",
                        "task": "retrieval",
                        "metrics": met,
                        "intervals": {},
                        "per_query": {f"{d}_rank": r.tolist() for d, r in ranks.items()},
                    }
                )
            )
    df = tables.build(tables.load_metrics(tmp_path), SPEC["retrieval"])
    c = df[(df.row_type == "comparison") & (df.block == "R@5") & (df.column == "coco image→text")].iloc[0]
    assert c["n_items"] == 400 and c["diff_lo"] > 0 and c["p_value"] < 0.01


def test_bad_json_and_duplicate_seeds_name_files(tmp_path):
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(ValueError, match="x.json"):
        tables.load_metrics(tmp_path)
    (tmp_path / "x.json").unlink()
    _write(tmp_path / "a", "meru", 0, [1, 0])
    _write(tmp_path / "b", "meru", 0, [1, 1])
    with pytest.raises(ValueError, match="remove the stale one"):
        tables.build(tables.load_metrics(tmp_path), SPEC["zeroshot"])


def test_distances_in_own_space_get_their_unit_and_no_difference(tmp_path):
    for kind, gap, geometry in (
        ("meru", 0.3, None),
        ("clip", 0.7, {"space": "sphere", "root_distance": "angle (rad)"}),
    ):
        p = tmp_path / f"{kind}-tiny-s0" / "structure-synthhier.json"
        p.parent.mkdir(parents=True)
        rec = {
            "kind": kind,
            "size": "tiny",
            "seed": 0,
            "dataset": "synth",
            "task": "structure",
            "metrics": {"modality_gap": gap, "spearman_specificity": gap},
            "intervals": {},
        }
        if geometry:
            rec["geometry"] = geometry
        p.write_text(json.dumps(rec))
    recs = tables.load_metrics(tmp_path)
    dist = tables.build(recs, SPEC["root_distance"])
    assert set(dist.row_type) == {"model"}
    assert dict(zip(dist.kind, dist.unit)) == {
        "clip": "angle (rad)",
        "meru": "geodesic distance from the origin (hyperboloid)",
    }
    corr = tables.build(recs, SPEC["structure"]).set_index("model")
    assert corr.loc["MERU − CLIP", "mean"] == pytest.approx(-0.4) and pd.isna(corr.loc["MERU − CLIP", "p_value"])


def test_clip_benchmark_side_files_are_skipped(tmp_path):
    _write(tmp_path, "meru", 0, [1, 0])
    (tmp_path / "meru-tiny-s0" / "zeroshot-x.clip_benchmark.json").write_text(
        json.dumps(
            {"dataset": "x", "model": "meru-tiny-s0", "task": "zeroshot_classification", "metrics": {"acc1": 0.5}}
        )
    )
    assert [r["task"] for r in tables.load_metrics(tmp_path)] == ["zeroshot"]


def test_cli_names_a_missing_metrics_dir(tmp_path, capsys):
    from meru.reporting import plots

    for module, extra in ((tables, []), (plots, ["--runs", str(tmp_path)])):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        args = parser.parse_args(["--metrics", str(tmp_path / "none"), "--out", str(tmp_path / "out")] + extra)
        assert module.run(args) == 2
        assert f"--metrics {tmp_path / 'none'} is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
