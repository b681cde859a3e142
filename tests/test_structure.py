"""Structure metrics on constructed hyperbolic / spherical points with a known depth ordering."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from meru.evaluation.structure import evaluate_structure, pair_clusters
from meru.records import EmbeddingCache
from meru.spaces import get_space
from meru.stats import cluster_bootstrap_ci

E1, E2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
POOL_NORMS = [(E1, 0.5, 1), (E1, 1.0, 3), (E1, 2.0, 5), (E2, 0.6, 2), (E2, 1.5, 4)]


def meru_inputs():
    pool = EmbeddingCache(
        task="text-pool",
        space=get_space("meru", 1.0),
        text_emb=torch.stack([d * r for d, r, _ in POOL_NORMS]),
        specificity=torch.tensor([float(s) for *_, s in POOL_NORMS]),
        path="pool",
    )
    cache = EmbeddingCache(
        task="classification",
        space=get_space("meru", 1.0),
        image_emb=torch.stack([3.0 * E1, 2.5 * E2]),
        path="emb",
        meta=[{"true_captions": [0, 1, 2]}, {"true_captions": [3, 4]}],
    )
    return cache, pool


def test_meru_structure_hand_computed():
    cache, pool = meru_inputs()
    res = evaluate_structure(cache, pool, n_boot=20)
    m = res.metrics
    # d0(x) = asinh(||x||) for c = 1
    assert m["image_root_mean"] == pytest.approx((math.asinh(3) + math.asinh(2.5)) / 2, rel=1e-5)
    assert m["text_root_median"] == pytest.approx(math.asinh(1.0), rel=1e-5)
    assert m["spearman_specificity"] == pytest.approx(1.0) and m["kendall_specificity"] == pytest.approx(1.0)
    assert m["image_farther_frac"] == 1.0
    assert m["cone_true_frac"] == 1.0 and m["cone_false_frac"] == 0.0 and m["cone_auc"] == 1.0
    gi = (math.asinh(3) * E1 + math.asinh(2.5) * E2) / 2
    gt = ((math.asinh(0.5) + math.asinh(1) + math.asinh(2)) * E1 + (math.asinh(0.6) + math.asinh(1.5)) * E2) / 5
    assert m["modality_gap"] == pytest.approx(float((gi - gt).norm()), rel=1e-5)
    h = res.plot["histogram"]
    assert sum(h["image_counts"]) == 2 and sum(h["text_counts"]) == 5 and len(h["edges"]) == 31
    assert res.details["n_true_pairs"] == 5 and res.details["n_false_pairs"] == 5


def test_pair_intervals_resample_images_and_captions():
    cache, pool = meru_inputs()
    cache.image_emb = torch.stack([3.0 * E1, 1.2 * E2])  # image 1 nearer the root than caption 4 (1.5 E2)
    res = evaluate_structure(cache, pool, n_boot=50, seed=3)
    farther = np.array([1.0, 1.0, 1.0, 1.0, 0.0])  # true pairs in np.nonzero order: (0,0) (1,0) (2,0) (3,1) (4,1)
    assert res.metrics["image_farther_frac"] == pytest.approx(0.8)
    # every caption is true of one image: the images are the clusters
    assert pair_clusters(np.arange(5), np.array([0, 0, 0, 1, 1]))[1].startswith("images (cluster")
    one_way = cluster_bootstrap_ci(farther, [0, 0, 0, 1, 1], n_boot=50, seed=3)
    assert res.intervals["image_farther_frac"] == pytest.approx(list(one_way))
    assert res.details["interval_units"]["image_root_mean"] == "images"
    # caption 0 also true of image 1: captions are shared, so images and captions are resampled (two-way)
    cache.meta = [{"true_captions": [0, 1, 2]}, {"true_captions": [0, 3, 4]}]
    res = evaluate_structure(cache, pool, n_boot=50, seed=3)
    text_idx, image_idx = np.array([0, 0, 1, 2, 3, 4]), np.array([0, 1, 0, 0, 1, 1])
    clusters, unit = pair_clusters(text_idx, image_idx)
    assert unit.startswith("images x captions") and res.details["interval_units"]["cone_true_frac"] == unit
    farther = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])  # image 1 (asinh 1.2) is farther than caption 0 (asinh 0.5)
    two_way = cluster_bootstrap_ci(farther, clusters, n_boot=50, seed=3)
    assert res.intervals["image_farther_frac"] == pytest.approx(list(two_way))


def test_reversed_depth_gives_negative_correlation_and_images_inside():
    cache, pool = meru_inputs()
    pool.specificity = -pool.specificity
    cache.image_emb = torch.stack([0.2 * E1, 0.2 * E2])  # images nearer the origin than captions
    m = evaluate_structure(cache, pool, n_boot=10).metrics
    assert m["spearman_specificity"] == pytest.approx(-1.0)
    assert m["image_farther_frac"] == 0.0
    assert m["cone_true_frac"] == 0.0  # behind the caption (exterior angle pi) is outside its cone


def test_clip_root_is_mean_caption_direction_and_no_cones():
    pool = EmbeddingCache(
        task="text-pool", space=get_space("clip"), text_emb=torch.stack([E1, E2]), specificity=torch.tensor([0.0, 1.0])
    )
    cache = EmbeddingCache(
        task="classification",
        space=get_space("clip"),
        image_emb=torch.stack([E1, E1]),
        meta=[{"true_captions": [0]}] * 2,
    )
    res = evaluate_structure(cache, pool, n_boot=10)
    m = res.metrics
    assert m["image_root_mean"] == pytest.approx(math.pi / 4, rel=1e-5)
    assert m["modality_gap"] == pytest.approx(math.sqrt(0.5), rel=1e-5)  # |e1 - (e1+e2)/2|
    assert "cone_auc" not in m and m["image_farther_frac"] == 0.0  # equal angles are not farther


def test_models_must_match():
    cache, pool = meru_inputs()
    pool.space = get_space("meru", 2.0)
    with pytest.raises(ValueError, match="different models"):
        evaluate_structure(cache, pool)


def test_root_distance_by_level_groups_captions():
    from meru.evaluation.structure import root_distance_by_level

    levels = np.array([2.0, 0.0, 2.0, 1.0, np.nan])
    dist = np.array([3.0, 1.0, 5.0, 2.0, 9.0])
    out = root_distance_by_level(levels, dist)
    assert out == {"level": [0.0, 1.0, 2.0], "n": [1, 1, 2], "mean": [1.0, 2.0, 4.0], "sd": [0.0, 0.0, 1.0]}


def test_euclip_structure_hand_computed():
    """EuCLIP: [ROOT] = origin, r = ||x||, Euclidean cones of half-aperture asin(0.1 / ||t||)."""
    pool = EmbeddingCache(
        task="text-pool",
        space=get_space("euclip"),
        text_emb=torch.stack([d * r for d, r, _ in POOL_NORMS]),
        specificity=torch.tensor([float(s) for *_, s in POOL_NORMS]),
        path="pool",
    )
    cache = EmbeddingCache(
        task="classification",
        space=get_space("euclip"),
        image_emb=torch.stack([3.0 * E1, 2.5 * E2]),
        path="emb",
        meta=[{"true_captions": [0, 1, 2]}, {"true_captions": [3, 4]}],
    )
    res = evaluate_structure(cache, pool, n_boot=20)
    m = res.metrics
    assert m["image_root_mean"] == pytest.approx(2.75) and m["text_root_median"] == pytest.approx(1.0)
    assert m["spearman_specificity"] == pytest.approx(1.0) and m["image_farther_frac"] == 1.0
    # images lie further along their captions' rays (angle 0): inside; the other axis is at >= 90 deg: outside
    assert m["cone_true_frac"] == 1.0 and m["cone_false_frac"] == 0.0 and m["cone_auc"] == 1.0
    gi, gt = (3.0 * E1 + 2.5 * E2) / 2, (3.5 * E1 + 2.1 * E2) / 5
    assert m["modality_gap"] == pytest.approx(float((gi - gt).norm()), rel=1e-5)
    assert res.details["root"] == "origin"
    # a MERU pool cannot be compared with EuCLIP images
    with pytest.raises(ValueError, match="different models"):
        evaluate_structure(cache, dataclasses.replace(pool, kind="meru", space=get_space("meru", 1.0)))
