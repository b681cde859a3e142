"""meru tables on small synthetic metric JSONs: wide layout, seed statistics, paired tests, files."""

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from meru import stats
from meru.records import RecordError, load_metric_records
from meru.reporting import tables

from metric_helpers import record, write

SPEC = {s.name: s for s in tables.SPECS}


def _write(d, kind, seed, correct, dataset="synthhier-shape", n_classes=12, size="tiny"):
    correct = np.asarray(correct, int)
    acc = 100.0 * correct.mean()
    rec = record(
        kind,
        seed,
        "zeroshot",
        dataset,
        size,
        metrics={"top1": acc, "top5": 100.0, "mistake_severity": 1.5},
        intervals={"top1": [acc - 5, acc + 5], "top5": [100.0, 100.0]},
        n=len(correct),
        per_item={"correct": correct.tolist(), "correct_top5": [1] * len(correct)},
        details={"n_classes": n_classes},
    )
    write(d, rec)
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
        _write(m, k, 0, [1, 0, 1, 1], dataset="synthhier-category", n_classes=2)
        _write(m, k, 0, [1, 0, 0, 1], dataset="synthhier-shape", n_classes=12)
    df = tables.build(load_metric_records(m), SPEC["zeroshot"])
    assert set(df[df.block == "Top-5"].column) == {"shape"}
    assert set(df[df.block == "Top-1"].column) == {"category", "shape"}
    assert tables.trivial(record("meru", details={"n_classes": 5}), "top5")
    assert not tables.trivial(record("meru", details={"n_classes": 6}), "top5")


def test_single_seed_shows_bootstrap_interval_unless_uninformative(tmp_path):
    m = tmp_path / "metrics"
    _write(m, "meru", 0, [1, 0] * 50)
    rec = _write(m, "clip", 0, [1, 0] * 50)
    rec.intervals["top1"] = [0.0, 100.0]  # spans the whole range: says nothing
    write(m, rec)
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
            per_item = {f"{d}_rank": r.tolist() for d, r in ranks.items()}
            write(tmp_path, record(k, s, "retrieval", "coco", metrics=met, n=200, per_item=per_item))
    df = tables.build(load_metric_records(tmp_path), SPEC["retrieval"])
    c = df[(df.row_type == "comparison") & (df.block == "R@5") & (df.column == "coco image→text")].iloc[0]
    assert c["n_items"] == 400 and c["diff_lo"] > 0 and c["p_value"] < 0.01


def test_bad_json_and_duplicate_seeds_name_files(tmp_path):
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(RecordError, match="x.json: not valid strict JSON"):
        load_metric_records(tmp_path)
    (tmp_path / "x.json").unlink()
    _write(tmp_path / "a", "meru", 0, [1, 0])
    _write(tmp_path / "b", "meru", 0, [1, 1])
    with pytest.raises(ValueError, match="remove the stale one"):
        tables.build(load_metric_records(tmp_path), SPEC["zeroshot"])


def test_distances_in_own_space_get_their_unit_and_no_difference(tmp_path):
    for kind, gap, geometry in (
        ("meru", 0.3, {"space": "lorentz", "root_distance": "geodesic distance from the origin"}),
        ("clip", 0.7, {"space": "sphere", "root_distance": "angle (rad)"}),
    ):
        metrics = {"modality_gap": gap, "spearman_specificity": gap}
        write(tmp_path, record(kind, 0, "structure", "synthhier-shape", metrics=metrics, geometry=geometry))
    recs = load_metric_records(tmp_path)
    dist = tables.build(recs, SPEC["root_distance"])
    assert set(dist.row_type) == {"model"}
    assert dict(zip(dist.kind, dist.unit)) == {"clip": "angle (rad)", "meru": "geodesic distance from the origin"}
    corr = tables.build(recs, SPEC["structure"]).set_index("model")
    assert corr.loc["MERU − CLIP", "mean"] == pytest.approx(-0.4) and pd.isna(corr.loc["MERU − CLIP", "p_value"])


def test_clip_benchmark_side_files_are_skipped(tmp_path):
    _write(tmp_path, "meru", 0, [1, 0])
    (tmp_path / "meru-tiny-s0" / "zeroshot-x.clip_benchmark.json").write_text(
        json.dumps(
            {"dataset": "x", "model": "meru-tiny-s0", "task": "zeroshot_classification", "metrics": {"acc1": 0.5}}
        )
    )
    assert [r.task for r in load_metric_records(tmp_path)] == ["zeroshot"]


def test_cli_names_a_missing_metrics_dir(tmp_path, capsys):
    from meru.reporting import plots

    for module, extra in ((tables, []), (plots, ["--runs", str(tmp_path)])):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        args = parser.parse_args(["--metrics", str(tmp_path / "none"), "--out", str(tmp_path / "out")] + extra)
        assert module.run(args) == 2
        assert f"--metrics {tmp_path / 'none'} is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _tables_cli(metrics, out, capsys) -> tuple[int, str]:
    from meru.cli import main

    code = main(["tables", "--metrics", str(metrics), "--out", str(out), "--n-boot", "50"])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("bad", ["1e999", '"71.5"', "true", "[71.5]"])
def test_unusable_metric_value_is_refused_in_one_line(tmp_path, capsys, bad):
    """A metric written as 1e999 (read as inf), a string, a boolean or a list is not skipped silently."""
    m = tmp_path / "metrics"
    for seed in (0, 1, 2):
        _write(m, "meru", seed, [1, 0, 1])
    path = m / "meru-tiny-s2" / "zeroshot-synthhier-shape.json"
    text = path.read_text()
    top1 = json.dumps(json.loads(text)["metrics"]["top1"])
    path.write_text(text.replace(f'"top1": {top1}', f'"top1": {bad}', 1))
    code, err = _tables_cli(m, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1 and str(path) in err and "top1" in err
    assert not (tmp_path / "out" / "zeroshot.md").exists()


def test_record_named_like_a_side_file_is_refused(tmp_path, capsys):
    m = tmp_path / "metrics"
    for seed in (0, 1):
        _write(m, "meru", seed, [1, 0, 1])
    rec = m / "meru-tiny-s1" / "zeroshot-synthhier-shape.json"
    rec.rename(rec.with_name("zeroshot-synthhier-shape.clip_benchmark.json"))
    code, err = _tables_cli(m, tmp_path / "out", capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "zeroshot-synthhier-shape.clip_benchmark.json" in err
    assert "rename it to NAME.json" in err
    # a real clip-benchmark side file beside its record is no record: accepted
    rec.with_name("zeroshot-synthhier-shape.clip_benchmark.json").unlink()
    _write(m, "meru", 1, [1, 0, 1])
    (m / "meru-tiny-s1" / "zeroshot-synthhier-shape.clip_benchmark.json").write_text('{"metrics": {"acc1": 0.5}}')
    assert _tables_cli(m, tmp_path / "out", capsys)[0] == 0


def test_evaluate_refuses_a_side_file_name_for_its_record(tmp_path, capsys):
    from meru.cli import main

    out = tmp_path / "x.clip_benchmark.json"
    assert main(["evaluate", "--task", "zeroshot", "--embeddings", "none.pt", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "may not end in .clip_benchmark.json" in err and not out.exists()


def test_seeds_column_counts_the_values_used(tmp_path):
    """Seeds are counted from the values used: a seed whose record has no value (null top-5) or no record (the
    family dataset of seed 2) is not counted in that cell; a row whose cells differ says 2–3 and marks (S=2)."""
    m = tmp_path / "metrics"
    for seed in (0, 1, 2):
        rec = _write(m, "meru", seed, [1, 0, 1, 1])
        if seed == 2:
            rec.metrics["top5"] = None
            rec.intervals.pop("top5")
            write(m, rec)
        else:
            _write(m, "meru", seed, [1, 1, 1, 0], dataset="synthhier-family")
    tables.write_tables(m, tmp_path / "out", n_boot=50)
    wide = pd.read_csv(tmp_path / "out" / "zeroshot.csv").set_index("metric")
    assert wide.loc["Top-1", "seeds"] == "2–3" and str(wide.loc["Top-5", "seeds"]) == "2"
    md = (tmp_path / "out" / "zeroshot.md").read_text()
    top1 = next(line for line in md.splitlines() if line.startswith("| Top-1 | MERU"))
    assert "| 2–3 |" in top1 and top1.count("(S=2)") == 1 and "(S=k): only k of the row's seeds" in md
