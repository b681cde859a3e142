"""meru claims: verdict rules on constructed metric records, kinds discovered from the records."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meru.records import MetricRecord
from meru.reporting import claims

from metric_helpers import record, write

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference" / "default" / "metrics"


def test_decide_rule():
    assert claims.decide([[0.1, 0.3], [0.2, 0.4]], 0.0) == claims.HOLDS
    assert claims.decide([[0.1, 0.3], [-0.1, 0.4]], 0.0) == claims.UNSURE
    assert claims.decide([[-0.3, -0.1], [-0.4, -0.2]], 0.0) == claims.FAILS
    assert claims.decide([[-0.3, -0.1]], 0.0, "<") == claims.HOLDS
    assert claims.decide([], 0.0) == claims.NA
    assert claims.decide([None], 0.0) == claims.UNSURE


def _write(d: Path, kind, seed, task, metrics, **fields):
    dataset = "synthhier-shape" if task != "retrieval" else "synthhier-retrieval"
    write(d, record(kind, seed, task, dataset, metrics=metrics, **fields))


def _structure(kind, spearman, farther_iv, cones=True):
    m = {
        "image_root_mean": 2.0,
        "text_root_mean": 1.0,
        "spearman_specificity": spearman,
        "image_farther_frac": float(np.mean(farther_iv)),
    }
    iv = {"image_root_mean": [1.9, 2.1], "text_root_mean": [0.9, 1.1], "image_farther_frac": farther_iv}
    if cones:
        m.update(cone_true_frac=0.8, cone_false_frac=0.1)
        iv["cone_true_frac"] = [0.78, 0.82]
    root = "origin" if kind != "clip" else "normalised mean pool caption direction"
    details = {"n_texts": 500, "root": root, "n_true_pairs": 10, "n_false_pairs": 990}
    return {"metrics": m, "intervals": iv, "details": details}


def test_claims_end_to_end_three_kinds(tmp_path):
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        meru_correct = (rng.random(400) < 0.9).astype(int)
        for kind, correct in (
            ("meru", meru_correct),
            ("clip", (rng.random(400) < 0.5).astype(int)),
            ("euclip", meru_correct),
        ):  # EUCLIP = MERU item for item: no difference
            _write(
                tmp_path,
                kind,
                seed,
                "zeroshot",
                {"top1": 100 * correct.mean() + (0.01 if kind == "meru" else 0)},
                per_item={"correct": correct.tolist()},
            )
        _write(tmp_path, "meru", seed, "structure", **_structure("meru", 0.6, [0.9, 0.95]))
        _write(tmp_path, "clip", seed, "structure", **_structure("clip", -0.5, [0.4, 0.6], cones=False))
        _write(tmp_path, "euclip", seed, "structure", **_structure("euclip", 0.6, [0.2, 0.3], cones=False))
    wide, line = claims.write_claims(tmp_path, tmp_path / "out")
    assert {"meru_verdict", "clip_verdict", "euclip_verdict"} <= set(wide.columns)
    zs = wide[wide.claim_id == "zeroshot"].iloc[0]
    assert zs.clip_verdict == claims.HOLDS and zs.clip_diff_lo > 0  # MERU 90% vs CLIP 50%, both seeds
    assert zs.euclip_verdict == claims.UNSURE and zs.euclip_diff == 0
    far = wide[wide.claim_id == "image_farther"].iloc[0]
    assert (far.meru_verdict, far.clip_verdict, far.euclip_verdict) == (claims.HOLDS, claims.UNSURE, claims.FAILS)
    assert far.reading == "MERU only"
    gen = wide[wide.claim_id == "generic_nearer"].iloc[0]
    assert (gen.meru_verdict, gen.clip_verdict, gen.euclip_verdict) == (claims.HOLDS, claims.FAILS, claims.HOLDS)
    assert gen.reading == "shared: EUCLIP"
    cones = wide[wide.claim_id == "cones"].iloc[0]
    assert cones.meru_verdict == claims.HOLDS and cones.clip_verdict == claims.NA
    md = (tmp_path / "out" / "claims.md").read_text()
    assert "| EuCLIP" in md and "Summary: MERU claims" in md and line in md
    assert len(pd.read_csv(tmp_path / "out" / "claims.csv")) == len(wide)
    # compact table: one row per claim present, short cells, numbers from the CSV's rows
    table = [r for r in md.splitlines() if r.startswith("| ") and not r.startswith("| claim")]
    assert len(table) == wide.claim_id.nunique()
    assert max(len(cell.strip()) for r in table for cell in r.split("|")) <= 40
    far_row = next(r for r in table if r.startswith("| " + claims.SHORT["image_farther"]))
    assert f"holds: {far.meru_value:.3g} [{far.meru_lo:.3g}, {far.meru_hi:.3g}]" in far_row
    zs_row = next(r for r in table if r.startswith("| " + claims.SHORT["zeroshot"]))
    assert "(reference)" in zs_row and f"holds: Δ {zs.clip_diff:.3g}" in zs_row


def test_traversal_items_tau_and_precision():
    paths = {
        "paths": [
            {
                "steps": [
                    {"specificity": 4.0, "correct": True},
                    {"specificity": 2.0, "correct": True},
                    {"specificity": 1.0, "correct": False},
                    {"specificity": None, "correct": None},
                ]
            },
            {"steps": [{"specificity": 3.0, "correct": False}]},
        ]
    }
    items = claims.traversal_items(record("meru", task="traversal", plot=paths))
    assert items[0, 0] == pytest.approx(-1.0) and np.isnan(items[1, 0])
    assert claims._true_share(items) == pytest.approx(2 / 4)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="no committed reference run")
def test_retrieval_outcomes_match_the_recorded_recall():
    """hit@k from per-item ranks reproduces the record's R@k (so the paired test tests the reported metric)."""
    rec = MetricRecord.load(next(REFERENCE.glob("*/retrieval-synthhier.json")))
    for d in ("i2t", "t2i"):
        for k in (1, 5, 10):
            assert claims.retrieval_outcomes(d, k)(rec).mean() == pytest.approx(rec.metrics[f"{d}_r{k}"])


def test_spearman_ci_fisher_z():
    from meru import stats

    lo, hi = stats.spearman_ci(0.5, 103)
    se = np.sqrt(1.06 / 100)
    assert lo == pytest.approx(np.tanh(np.arctanh(0.5) - 1.959964 * se), rel=1e-6)
    assert hi == pytest.approx(np.tanh(np.arctanh(0.5) + 1.959964 * se), rel=1e-6)
    assert lo < 0.5 < hi and stats.spearman_ci(1.0, 50) is None and stats.spearman_ci(0.2, 3) is None
    # coverage on bivariate normal samples (Pearson r = 0.75): about 95% of intervals cover the population Spearman
    rng = np.random.default_rng(0)
    from scipy import stats as sst

    x = rng.standard_normal((200, 200))
    y = 0.75 * x + 0.66 * rng.standard_normal((200, 200))
    big = 6 / np.pi * np.arcsin(0.75 / np.hypot(0.75, 0.66) / 2)  # population Spearman of a bivariate normal
    ivs = [stats.spearman_ci(sst.spearmanr(a, b).statistic, 200) for a, b in zip(x, y)]
    cover = np.mean([lo <= big <= hi for lo, hi in ivs])
    assert 0.9 <= cover <= 0.99
