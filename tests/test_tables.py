"""meru tables on small synthetic metric JSONs: aggregation, MERU-CLIP sign/significance, files."""

import json

import numpy as np
import pandas as pd
import pytest

from meru.reporting import tables


def _write(d, kind, seed, correct, dataset="synth", n_lo=0.05):
    acc = float(np.mean(correct))
    rec = {"model": kind, "kind": kind, "size": "tiny", "seed": seed, "label": f"{kind}-tiny-s{seed}",
           "dataset": dataset, "task": "zeroshot", "metrics": {"top1": acc, "mistake_severity": 1.5},
           "intervals": {"top1": [acc - n_lo, acc + n_lo]}, "n": len(correct),
           "per_item": {"correct": [int(c) for c in correct]}}
    p = d / f"{kind}-tiny-s{seed}" / f"zeroshot-{dataset}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(rec))


def test_aggregate_single_and_multi_seed():
    assert tables.aggregate([0.5], [0.4], [0.6]) == (0.5, 0.4, 0.6)
    m, lo, hi = tables.aggregate([0.4, 0.6], [0.3, 0.5], [0.5, 0.7])
    # t_{0.975,1} = 12.706; sd = 0.1414; h = sqrt(0.1^2 + (12.706*0.1414/sqrt 2)^2)
    h = np.sqrt(0.01 + (12.7062 * np.std([0.4, 0.6], ddof=1) / np.sqrt(2)) ** 2)
    assert m == pytest.approx(0.5) and lo == pytest.approx(0.5 - h, rel=1e-4) and hi == pytest.approx(0.5 + h, rel=1e-4)


def test_seed_interval_is_clipped_to_the_metric_range():
    # two seeds far apart: the t(1 df) interval would run past 100 %
    m, lo, hi = tables.aggregate([90.0, 99.0], [88.0, 98.0], [92.0, 100.0], tables.metric_range("top1"))
    assert m == pytest.approx(94.5) and hi == 100.0 and 0.0 < lo < 90.0
    assert tables.aggregate([0.01, 0.2], [0.0, 0.1], [0.02, 0.3], tables.metric_range("cone_true_frac"))[1] == 0.0
    assert tables.metric_range("t2i_r10") == (0.0, 100.0) and tables.metric_range("spearman_depth") == (-1.0, 1.0)
    assert tables.metric_range("cone_auc") == (0.0, 1.0) and tables.metric_range("tie")[1] == np.inf


def test_paired_bootstrap_sign_and_significance():
    rng = np.random.default_rng(0)
    a = (rng.random((2, 400)) < 0.8).astype(float)
    b = (rng.random((2, 400)) < 0.4).astype(float)
    d, lo, hi, p = tables.paired_bootstrap(a, b)
    assert d == pytest.approx((a - b).mean())
    assert d > 0 and lo > 0 and p < 0.01
    d2, lo2, hi2, p2 = tables.paired_bootstrap(a, a)
    assert d2 == 0 and lo2 == 0 and hi2 == 0 and p2 == 1.0


def test_tables_end_to_end(tmp_path):
    m = tmp_path / "metrics"
    rng = np.random.default_rng(1)
    for seed in (0, 1):
        _write(m, "meru", seed, rng.random(300) < 0.9)
        _write(m, "clip", seed, rng.random(300) < 0.3)
    out = tmp_path / "tables"
    frames = tables.write_tables(m, out)
    for t in tables.TABLES:
        for ext in ("csv", "md", "tex"):
            assert (out / f"{t}.{ext}").stat().st_size > 0
    z = pd.read_csv(out / "zeroshot.csv")
    assert len(z) == 1 and z.n_seeds[0] == 2
    assert z["diff"][0] == pytest.approx(z.meru_mean[0] - z.clip_mean[0])
    assert z["diff"][0] > 0.4 and bool(z.significant[0])
    assert "*" in (out / "zeroshot.md").read_text()
    assert z.meru_wins[0] == "2/2" and z.meru_hi[0] <= 100.0
    h = frames["hierarchy"]
    assert list(h.metric) == ["mistake_severity"] and h.meru_mean[0] == pytest.approx(1.5)


def test_bad_json_names_file(tmp_path):
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(ValueError, match="x.json"):
        tables.load_metrics(tmp_path)


def test_no_meru_minus_clip_for_distances_in_different_spaces(tmp_path):
    for kind, gap in (("meru", 0.3), ("clip", 0.7)):
        p = tmp_path / f"{kind}-tiny-s0" / "structure-synthhier.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps({"kind": kind, "size": "tiny", "seed": 0, "dataset": "synth", "task": "structure",
                                 "metrics": {"modality_gap": gap, "spearman_specificity": gap}, "intervals": {}}))
    df = tables.build_table(tables.load_metrics(tmp_path), "structure").set_index("metric")
    assert df.loc["modality_gap", "meru_mean"] == 0.3 and pd.isna(df.loc["modality_gap", "diff"])
    assert pd.isna(df.loc["modality_gap", "meru_wins"])
    assert df.loc["spearman_specificity", "diff"] == pytest.approx(-0.4)


def test_cli_names_a_missing_metrics_dir(tmp_path, capsys):
    import argparse

    from meru.reporting import plots

    for module, extra in ((tables, []), (plots, ["--runs", str(tmp_path)])):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        args = parser.parse_args(["--metrics", str(tmp_path / "none"), "--out", str(tmp_path / "out")] + extra)
        assert module.run(args) == 2
        assert f"--metrics {tmp_path / 'none'} is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
