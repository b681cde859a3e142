"""Statistics helpers: hand-computed McNemar / t-interval cases and bootstrap sanity."""

import json
import math

import numpy as np
import pytest

from meru.stats import (
    aggregate_seeds,
    bootstrap_ci,
    bootstrap_ci_multi,
    bootstrap_indices,
    cluster_bootstrap_ci,
    cluster_count_blocks,
    mcnemar,
    paired_bootstrap,
)


def test_bootstrap_constant_and_deterministic():
    assert bootstrap_ci(np.full(50, 0.3)) == pytest.approx((0.3, 0.3))
    x = np.random.default_rng(1).normal(size=200)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)


def test_bootstrap_width_matches_normal_theory():
    # mean of n iid N(0,1): 95% interval half-width ~ 1.96 / sqrt(n)
    n = 2000
    x = np.random.default_rng(0).normal(size=n)
    lo, hi = bootstrap_ci(x, n_boot=2000)
    assert lo < x.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(1.96 * x.std() / math.sqrt(n), rel=0.12)


def _coverage(draw, intervals, trials: int = 300) -> dict[str, float]:
    """Share of ``trials`` simulated data sets (``draw(rng)`` -> data with true mean 0) whose interval covers 0."""
    rng = np.random.default_rng(12345)
    hits: dict[str, int] = {}
    for trial in range(trials):
        data = draw(rng)
        for name, (lo, hi) in intervals(data, trial).items():
            hits[name] = hits.get(name, 0) + int(lo <= 0 <= hi)
    return {name: h / trials for name, h in hits.items()}


def test_cluster_bootstrap_covers_where_the_item_bootstrap_does_not():
    # 40 images x 8 pairs, y = u_image + e (ICC 0.5, design effect 4.5): the pair-level bootstrap is sqrt(4.5) x too
    # narrow; resampling images gives ~95% (percentile bootstrap with 40 clusters: a little under)
    clusters = np.repeat(np.arange(40), 8)

    def draw(rng):
        return np.repeat(rng.normal(size=40), 8) + rng.normal(size=320)

    def intervals(y, trial):
        return {
            "items": bootstrap_ci(y, n_boot=200, seed=trial),
            "clusters": cluster_bootstrap_ci(y, clusters, n_boot=200, seed=trial),
        }

    cover = _coverage(draw, intervals)
    assert cover["items"] < 0.75
    assert 0.90 <= cover["clusters"] <= 0.98


def test_two_way_cluster_bootstrap_covers_crossed_pairs():
    # (image, caption) pairs sharing both: y = a_image + b_caption + e over 30 images x 6 of 30 captions each;
    # resampling pairs or images only is too narrow, resampling both factors (pigeonhole bootstrap) is not
    def draw(rng):
        img = np.repeat(np.arange(30), 6)
        cap = np.concatenate([rng.choice(30, 6, replace=False) for _ in range(30)])
        y = rng.normal(size=30)[img] + rng.normal(size=30)[cap] + rng.normal(size=img.size)
        return y, img, cap

    def intervals(data, trial):
        y, img, cap = data
        return {
            "items": bootstrap_ci(y, n_boot=200, seed=trial),
            "images": cluster_bootstrap_ci(y, img, n_boot=200, seed=trial),
            "both": cluster_bootstrap_ci(y, (img, cap), n_boot=200, seed=trial),
        }

    cover = _coverage(draw, intervals)
    assert cover["items"] < 0.75 and cover["images"] < 0.88
    assert 0.92 <= cover["both"] <= 0.99


def test_cluster_bootstrap_draws_and_degenerate_cases():
    # the counts are those of bootstrap_indices over clusters, built a block at a time
    counts = np.concatenate(list(cluster_count_blocks(13, 50, seed=4, block=7)))
    expected = np.stack([np.bincount(row, minlength=13) for row in bootstrap_indices(13, 50, seed=4)])
    np.testing.assert_array_equal(counts, expected)
    # singleton clusters: the item bootstrap (same draws; sums in another order)
    x = np.random.default_rng(6).random(300)
    assert cluster_bootstrap_ci(x, np.arange(300), seed=2) == pytest.approx(bootstrap_ci(x, seed=2), rel=1e-12)
    # labels are any ints; a constant within clusters gives the spread of cluster means
    y = np.repeat([0.0, 1.0], 50)
    lo, hi = cluster_bootstrap_ci(y, np.repeat([7, -3], 50), n_boot=500)
    assert lo == 0.0 and hi == 1.0
    assert cluster_bootstrap_ci(np.full(20, 0.25), (np.arange(20) % 4, np.arange(20) % 5)) == (0.25, 0.25)
    assert all(math.isnan(v) for v in cluster_bootstrap_ci(np.r_[x[:-1], np.nan], np.arange(300) % 7))
    with pytest.raises(ValueError, match="one cluster label per item"):
        cluster_bootstrap_ci(x, np.arange(10))
    with pytest.raises(ValueError, match="one or two"):
        cluster_bootstrap_ci(x, (np.arange(300),) * 3)


def test_bootstrap_custom_statistic_and_multi():
    x = np.arange(11, dtype=float)
    lo, hi = bootstrap_ci(x, statistic=np.median, n_boot=500)
    assert 0 <= lo <= 5 <= hi <= 10
    lo2, hi2 = bootstrap_ci(x, statistic=lambda v: float(np.max(v)), n_boot=200)
    assert hi2 == 10 and lo2 <= 10
    multi = bootstrap_ci_multi({"a": x, "b": 2 * x}, n_boot=300)
    # same resamples for both metrics -> b's interval is exactly twice a's
    assert multi["b"] == pytest.approx([2 * multi["a"][0], 2 * multi["a"][1]])
    arr = bootstrap_ci_multi(np.stack([x, 2 * x], axis=1), n_boot=300)
    assert arr[1] == pytest.approx(multi["b"])
    with pytest.raises(ValueError, match="different item counts"):
        bootstrap_ci_multi({"a": x, "b": x[:5]})
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])


def test_paired_bootstrap_identity_and_shift():
    a = np.random.default_rng(2).random(300)
    same = paired_bootstrap(a, a, n_boot=400)
    assert same["diff"] == 0 and same["ci"] == [0, 0] and same["p_value"] == 1.0
    shift = paired_bootstrap(a + 1, a, n_boot=400)
    assert shift["diff"] == pytest.approx(1.0)
    assert shift["ci"] == pytest.approx([1.0, 1.0])
    assert shift["p_value"] == pytest.approx(1 / 400)  # floored at the resolution 1/B
    json.dumps(shift, allow_nan=False)
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap(a, a[:10])


def test_paired_bootstrap_is_tighter_than_unpaired_for_correlated_models():
    rng = np.random.default_rng(5)
    base = rng.random(500)
    a, b = base + 0.01 * rng.random(500), base
    res = paired_bootstrap(a, b, n_boot=500)
    width_paired = res["ci"][1] - res["ci"][0]
    la, ha = bootstrap_ci(a, n_boot=500)
    assert width_paired < (ha - la) / 10
    assert res["ci"][0] > 0 and res["p_value"] <= 1 / 500 + 1e-12


def test_mcnemar_exact_hand_computed():
    # n01 = 2 (a wrong, b right), n10 = 8: p = 2 * P(Bin(10, .5) <= 2) = 2 * 56 / 1024
    ca = np.array([0] * 2 + [1] * 8 + [1] * 5 + [0] * 5)
    cb = np.array([1] * 2 + [0] * 8 + [1] * 5 + [0] * 5)
    r = mcnemar(ca, cb)
    assert (r["n01"], r["n10"], r["method"]) == (2, 8, "exact-binomial")
    assert r["p_value"] == pytest.approx(112 / 1024)
    assert mcnemar(cb, ca)["p_value"] == pytest.approx(112 / 1024)


def test_mcnemar_chi2_hand_computed_and_degenerate():
    ca = np.array([0] * 30 + [1] * 10)
    cb = 1 - ca
    r = mcnemar(ca, cb)
    assert r["method"] == "chi2-continuity"
    assert r["statistic"] == pytest.approx((20 - 1) ** 2 / 40)
    # chi-square(1) survival function = erfc(sqrt(x / 2))
    assert r["p_value"] == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    same = mcnemar([1, 0, 1], [1, 0, 1])
    assert same["p_value"] == 1.0 and same["n01"] == same["n10"] == 0
    # equal discordant counts, exact: p = min(1, 2 * P(X <= 3 | n=6)) = 1
    assert mcnemar([1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1])["p_value"] == 1.0


def test_aggregate_seeds_t_interval():
    r = aggregate_seeds([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["std"] == pytest.approx(1.0) and r["n"] == 3
    t975_df2 = 4.302652729911275  # Student t quantile, 2 degrees of freedom
    half = t975_df2 / math.sqrt(3)
    assert r["ci"] == pytest.approx([2 - half, 2 + half])
    one = aggregate_seeds([0.7])
    assert one == {"mean": 0.7, "std": None, "n": 1, "ci": None}
    json.dumps(one, allow_nan=False)
    assert aggregate_seeds([])["mean"] is None
    with pytest.raises(ValueError, match="non-finite"):
        aggregate_seeds([1.0, float("nan")])
