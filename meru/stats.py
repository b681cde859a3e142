"""Statistics for comparing runs: bootstrap intervals, paired tests, seed aggregation.

All functions take plain per-item arrays (one value per test image / query) and return
JSON-safe Python floats; an undefined quantity is ``None`` (never NaN), so results can go
straight into strict metric JSON. Definitions are stated in docs/METRICS.md.

* :func:`bootstrap_ci` — percentile bootstrap over items (Efron & Tibshirani 1993, ch. 13).
* :func:`bootstrap_indices` — the resampled item indices, drawn once and passed as ``indices=`` to
  several :func:`bootstrap_ci` calls on the same items (same result as drawing per call with the
  same seed, without redrawing the ``[n_boot, N]`` matrix each time).
* :func:`paired_bootstrap` — the same resampling applied jointly to two models' per-item
  values on the same items; CI of ``stat(a) - stat(b)`` and a two-sided p-value.
* :func:`mcnemar` — McNemar's test on paired 0/1 correctness (exact binomial for few
  discordant pairs, continuity-corrected chi-square otherwise).
* :func:`aggregate_seeds` — mean, sample std and Student-t interval across training seeds.
* :func:`cluster_bootstrap_ci` — percentile bootstrap of a pooled mean whose items come in clusters (pairs
  sharing an image, captions sharing an image): whole clusters are resampled (one-way), or the clusters of two
  crossed factors independently (two-way, Owen's pigeonhole bootstrap), through per-cluster resample counts.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
from scipy import stats as _sps

Statistic = Callable[[np.ndarray], float]


def _as_items(values, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        raise ValueError(f"{name}: expected a 1-D per-item array, got a scalar")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: empty per-item array; nothing to resample")
    return arr


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] item indices drawn uniformly with replacement (numpy PCG64, ``seed``)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_boot, n))


def bootstrap_indices(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n_boot, n]`` bootstrap item indices, exactly those :func:`bootstrap_ci` draws for ``N = n``
    items with this ``n_boot`` and ``seed``; reuse them across metrics via ``bootstrap_ci(..., indices=)``."""
    if n < 1:
        raise ValueError(f"bootstrap_indices: need at least one item, got n={n}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    return _resample_indices(int(n), int(n_boot), seed)


def _apply(statistic: Statistic, arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """statistic over each bootstrap replicate; vectorised for np.mean / np.median."""
    if statistic is np.mean and arr.ndim == 1:
        return arr[idx].mean(axis=1)
    if statistic is np.median and arr.ndim == 1:
        return np.median(arr[idx], axis=1)
    return np.array([float(statistic(arr[row])) for row in idx])


def bootstrap_ci(
    values,
    statistic: Statistic = np.mean,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    indices: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap ``(1 - alpha)`` interval of ``statistic(values)``.

    values: per-item array ``[N]`` (or ``[N, ...]``; rows are resampled). Draw ``n_boot``
    samples of N rows with replacement, evaluate the statistic on each, and return the
    ``alpha/2`` and ``1 - alpha/2`` quantiles (numpy's linear interpolation). NaN items are
    the caller's business: pass ``np.nanmean`` as the statistic to ignore them.
    indices: ``[B, N]`` from :func:`bootstrap_indices` to reuse (then ``n_boot`` and ``seed`` are
    not used); must index the same N items.
    """
    arr = _as_items(values)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if indices is None:
        if n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {n_boot}")
        indices = _resample_indices(arr.shape[0], n_boot, seed)
    elif indices.ndim != 2 or indices.shape[1] != arr.shape[0]:
        raise ValueError(f"bootstrap_ci: indices of shape {indices.shape} do not resample {arr.shape[0]} items")
    reps = _apply(statistic, arr, indices)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci_multi(
    values: Mapping[str, object] | np.ndarray,
    statistic: Statistic = np.mean,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, list[float | None]] | list[list[float | None]]:
    """:func:`bootstrap_ci` for several per-item metrics on the same items.

    values: ``{name: [N] array}`` -> ``{name: [lo, hi]}``; or a 2-D array ``[N, K]`` ->
    ``[[lo, hi]] * K``. The same resampled item sets are used for every metric (one
    ``seed``), so the intervals are jointly consistent. Non-finite bounds become ``None``.
    """
    if isinstance(values, Mapping):
        arrays = {k: _as_items(v, k) for k, v in values.items()}
        sizes = {a.shape[0] for a in arrays.values()}
        if len(sizes) > 1:
            raise ValueError(f"bootstrap_ci_multi: metrics have different item counts {sorted(sizes)}")
        if not arrays:
            return {}
        idx = _resample_indices(sizes.pop(), n_boot, seed)
        out = {}
        for k, a in arrays.items():
            lo, hi = np.quantile(_apply(statistic, a, idx), [alpha / 2, 1 - alpha / 2])
            out[k] = [_finite_or_none(lo), _finite_or_none(hi)]
        return out
    arr = _as_items(values)
    if arr.ndim != 2:
        raise ValueError(f"bootstrap_ci_multi: expected a mapping or a 2-D [N, K] array, got shape {arr.shape}")
    idx = _resample_indices(arr.shape[0], n_boot, seed)
    out_list = []
    for k in range(arr.shape[1]):
        lo, hi = np.quantile(_apply(statistic, arr[:, k], idx), [alpha / 2, 1 - alpha / 2])
        out_list.append([_finite_or_none(lo), _finite_or_none(hi)])
    return out_list


def paired_bootstrap(
    a,
    b,
    statistic: Statistic = np.mean,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Paired bootstrap of ``d = statistic(a) - statistic(b)`` over shared items.

    a, b: per-item values ``[N]`` of two models on the *same* N items (same order). Each
    replicate resamples item indices once and applies them to both arrays, keeping the
    pairing. Returns ``{"diff": d, "ci": [lo, hi], "p_value": p}`` where ``[lo, hi]`` are
    the percentile bounds of the replicate differences and
    ``p = min(1, 2 * min(P*(d* <= 0), P*(d* >= 0)))`` (two-sided, from the bootstrap
    distribution; with B replicates its resolution is 1/B, and it is floored at 1/B
    instead of reporting 0).
    """
    a = _as_items(a, "a")
    b = _as_items(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap: a and b must cover the same items, got shapes {a.shape} and {b.shape}")
    idx = _resample_indices(a.shape[0], n_boot, seed)
    reps = _apply(statistic, a, idx) - _apply(statistic, b, idx)
    diff = float(statistic(a)) - float(statistic(b))
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    p = 2.0 * min(np.mean(reps <= 0), np.mean(reps >= 0))
    p = float(min(1.0, max(p, 1.0 / n_boot)))
    return {"diff": _finite_or_none(diff), "ci": [_finite_or_none(lo), _finite_or_none(hi)], "p_value": p}


def cluster_labels(labels, n: int | None = None, name: str = "clusters") -> tuple[np.ndarray, int]:
    """``[N]`` cluster labels (any hashable ints) -> ``([N]`` codes in ``0..C-1``, ``C)``; ``n``: the expected N."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        raise ValueError(f"{name}: expected one cluster label per item ({n} items), got shape {arr.shape}")
    uniq, codes = np.unique(arr, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), int(uniq.size)


def cluster_count_blocks(n_clusters: int, n_boot: int, seed: int, block: int):
    """Yield ``[b, C]`` resample counts, ``block`` replicates at a time (``sum b = n_boot``): row r counts how
    often each of the C clusters is drawn in replicate r of :func:`bootstrap_indices` ``(C, n_boot, seed)``
    (the same draws, never held as one ``[n_boot, C]`` index matrix; each row sums to C)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, block):
        rows = min(block, n_boot - start)
        idx = rng.integers(0, n_clusters, size=(rows, n_clusters))
        flat = (idx + n_clusters * np.arange(rows)[:, None]).ravel()
        yield np.bincount(flat, minlength=rows * n_clusters).reshape(rows, n_clusters)


#: replicates whose cluster counts are held at once (memory ~ BLOCK * (C_a + C_b) * 8 bytes)
BLOCK = 64


def _cluster_replicates(values: np.ndarray, codes: list[np.ndarray], sizes: list[int], n_boot: int, seed: int):
    """``[B]`` replicate pooled means ``sum_i w_i y_i / sum_i w_i``. One factor: ``w_i`` = the count ``w_c`` of
    item i's cluster, computed as ``w @ S / w @ n`` from per-cluster sums ``S [C]`` and sizes ``n [C]``. Two
    factors (a, b): ``w_i = w_a(i) u_b(i)`` (second factor drawn with ``seed + 1``), computed as
    ``sum_a w_a (Y u)_a`` with ``Y [C_a, C_b]`` the sparse item sums per (a, b) cell."""
    from scipy import sparse

    if len(codes) == 1:
        y_sum = np.bincount(codes[0], weights=values, minlength=sizes[0])
        y_len = np.bincount(codes[0], minlength=sizes[0]).astype(np.float64)
    else:
        cells = (codes[0], codes[1])
        y_sum = sparse.csr_matrix((values, cells), shape=tuple(sizes))
        y_len = sparse.csr_matrix((np.ones_like(values), cells), shape=tuple(sizes))
    reps = np.empty(n_boot)
    blocks = zip(*(cluster_count_blocks(c, n_boot, seed + f, BLOCK) for f, c in enumerate(sizes)))
    for start, counts in zip(range(0, n_boot, BLOCK), blocks):
        w = counts[0].astype(np.float64)  # [b, C_a]
        if len(codes) == 1:
            num, den = w @ y_sum, w @ y_len
        else:
            u = counts[1].T.astype(np.float64)  # [C_b, b]
            num, den = np.einsum("ba,ab->b", w, y_sum @ u), np.einsum("ba,ab->b", w, y_len @ u)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps[start : start + len(num)] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return reps


def cluster_bootstrap_ci(
    values,
    clusters,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile cluster-bootstrap ``(1 - alpha)`` interval of the pooled mean of ``values [N]``.

    clusters: ``[N]`` labels (one factor, e.g. the image of each caption-image pair) or a tuple of two such
    arrays (two crossed factors, e.g. ``(image, caption)``). One factor: each replicate draws C clusters with
    replacement (the draws of :func:`bootstrap_indices` ``(C, n_boot, seed)``), so cluster c gets count
    ``w_c`` and the replicate is ``sum_c w_c S_c / sum_c w_c n_c`` (S_c, n_c: the cluster's sum and size;
    Davison & Hinkley 1997, sec. 3.8). With singleton clusters this is :func:`bootstrap_ci` (same draws).
    Two factors: each factor is resampled independently (seeds ``seed``, ``seed + 1``) and item i weighs
    ``w_{a(i)} u_{b(i)}`` (Owen 2007, the pigeonhole bootstrap; slightly conservative). Replicates in which no
    item has weight are left out; a NaN item makes the interval NaN (as ``np.mean`` in :func:`bootstrap_ci`). Counts are built :data:`BLOCK` replicates at a time: memory
    ``O(BLOCK * C + N)``, never an ``[n_boot, N]`` index matrix.
    """
    arr = _as_items(values)
    if arr.ndim != 1:
        raise ValueError(f"cluster_bootstrap_ci: expected a 1-D per-item array, got shape {arr.shape}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    factors = list(clusters) if isinstance(clusters, tuple) else [clusters]
    if not 1 <= len(factors) <= 2:
        raise ValueError(f"cluster_bootstrap_ci: one or two cluster factors, got {len(factors)}")
    coded = [cluster_labels(f, arr.shape[0], f"clusters[{k}]") for k, f in enumerate(factors)]
    if not np.isfinite(arr).all():
        return float("nan"), float("nan")
    reps = _cluster_replicates(arr, [c for c, _ in coded], [m for _, m in coded], int(n_boot), seed)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def mcnemar(correct_a, correct_b, exact: bool | None = None) -> dict:
    """McNemar's test for two classifiers' 0/1 correctness on the same items.

    n01 = #(a wrong, b right), n10 = #(a right, b wrong). Exact version: two-sided binomial
    test of n01 ~ Bin(n01 + n10, 1/2), ``p = min(1, 2 * P(X <= min(n01, n10)))``.
    Asymptotic version: ``chi2 = (|n01 - n10| - 1)^2 / (n01 + n10)`` (Edwards' continuity
    correction), p from chi-square with 1 degree of freedom. ``exact=None`` picks the exact
    test when ``n01 + n10 < 25``. With no discordant pairs p = 1.
    """
    ca = np.asarray(correct_a).astype(bool)
    cb = np.asarray(correct_b).astype(bool)
    if ca.shape != cb.shape or ca.ndim != 1:
        raise ValueError(f"mcnemar: need two 1-D 0/1 arrays over the same items, got shapes {ca.shape} and {cb.shape}")
    n01 = int(np.sum(~ca & cb))
    n10 = int(np.sum(ca & ~cb))
    n = n01 + n10
    if exact is None:
        exact = n < 25
    if n == 0:
        return {
            "n01": 0,
            "n10": 0,
            "statistic": 0.0,
            "p_value": 1.0,
            "method": "exact-binomial" if exact else "chi2-continuity",
        }
    if exact:
        k = min(n01, n10)
        p = min(1.0, 2.0 * float(_sps.binom.cdf(k, n, 0.5)))
        return {"n01": n01, "n10": n10, "statistic": float(k), "p_value": p, "method": "exact-binomial"}
    stat = (abs(n01 - n10) - 1.0) ** 2 / n
    p = float(_sps.chi2.sf(stat, df=1))
    return {"n01": n01, "n10": n10, "statistic": float(stat), "p_value": p, "method": "chi2-continuity"}


def aggregate_seeds(values, alpha: float = 0.05) -> dict:
    """Mean over training seeds with a Student-t interval.

    values: one metric value per seed (n of them). Returns ``{"mean", "std", "n", "ci"}``:
    std is the sample standard deviation (ddof=1; ``None`` when n < 2) and
    ``ci = mean ± t_{1-alpha/2, n-1} * std / sqrt(n)`` (``None`` when n < 2). Non-finite
    inputs are rejected rather than propagated into the JSON.
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    n = int(arr.size)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "ci": None}
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"aggregate_seeds: non-finite value among {arr.tolist()}")
    mean = float(arr.mean())
    if n < 2:
        return {"mean": mean, "std": None, "n": n, "ci": None}
    std = float(arr.std(ddof=1))
    half = float(_sps.t.ppf(1 - alpha / 2, df=n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "ci": [mean - half, mean + half]}


def spearman_ci(rho: float, n: int, alpha: float = 0.05) -> list[float] | None:
    """``(1 - alpha)`` interval of a Spearman correlation ``rho`` over ``n`` items (Fisher z).

    z = atanh(rho), se = sqrt(1.06 / (n - 3)) (Fieller, Hartley & Pearson 1957, Biometrika 44),
    interval = tanh(z ± z_{1-alpha/2}·se). ``None`` when n <= 3 or |rho| = 1 (z undefined).
    """
    if rho is None or n is None or n <= 3 or not -1 < rho < 1:
        return None
    z, se = math.atanh(rho), math.sqrt(1.06 / (n - 3))
    q = float(_sps.norm.ppf(1 - alpha / 2))
    return [math.tanh(z - q * se), math.tanh(z + q * se)]
