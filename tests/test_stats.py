"""Statistics helpers: hand-computed McNemar / t-interval cases and bootstrap sanity."""

import json
import math

import numpy as np
import pytest

from meru.stats import (
    aggregate_seeds,
    bootstrap_ci,
    bootstrap_ci_multi,
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
