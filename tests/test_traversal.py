"""Image traversals on constructed pools where the nearest caption at every step is known."""

import math

import numpy as np
import pytest
import torch

from meru.evaluation.traversal import ROOT_TEXT, evaluate_traversal, traverse
from meru.records import EmbeddingCache
from meru.spaces import Lorentz, get_space

E1, E2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])


def test_meru_path_is_the_geodesic_to_the_origin():
    x = torch.tensor([2.0, 1.0])
    p = Lorentz(1.0).path_to_root(x, torch.zeros(2), 5)
    torch.testing.assert_close(p[0], x, rtol=1e-5, atol=1e-5)
    assert float(p[-1].norm()) < 1e-6
    d = torch.asinh(p.norm(dim=1))  # distance from the origin, c = 1
    torch.testing.assert_close(d, math.asinh(float(x.norm())) * torch.linspace(1, 0, 5), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p[:-1] / p[:-1].norm(dim=1, keepdim=True), (x / x.norm()).expand(4, 2))


def test_meru_traversal_steps_up_the_hierarchy():
    # captions on the image's ray at increasing distance (specificity 1, 2, 3) + a distractor elsewhere
    norms = [0.5, 1.0, 1.5]
    pool = EmbeddingCache(
        task="text-pool",
        space=get_space("meru", 1.0),
        texts=["general", "middle", "specific", "other"],
        text_emb=torch.stack([E1 * r for r in norms] + [E2 * 1.2]),
        specificity=torch.tensor([1.0, 2.0, 3.0, 3.0]),
    )
    cache = EmbeddingCache(
        task="classification",
        space=get_space("meru", 1.0),
        image_emb=(2.0 * E1)[None],
        keys=["im"],
        meta=[{"true_captions": [0, 1, 2]}],
    )
    steps = 11
    out = traverse(cache, pool, steps=steps)
    listed = out["images"][0]["steps"]
    assert [s["text"] for s in listed] == ["specific", "middle", "general", ROOT_TEXT]
    # a caption is first listed at the first point closer to the origin than it (it no longer entails
    # points beyond... i.e. the previous caption stops entailing): d_k = (1 - t_k) asinh(2)
    ts = np.linspace(0, 1, steps)
    d = (1 - ts) * math.asinh(2.0)

    def first(r):
        return float(ts[np.argmax(d < math.asinh(r))])

    assert [s["t"] for s in listed] == pytest.approx([0.0, first(1.5), first(1.0), first(0.5)])
    assert [s["correct"] for s in listed] == [True, True, True, None]
    s = out["summary"]
    assert s["monotonic_frac"] == 1.0 and s["precision"] == 1.0 and s["mean_unique"] == 4.0
    assert s["mean_specificity_per_step"][0] == 3.0 and s["mean_specificity_per_step"][-1] is None
    assert s["root_frac_per_step"][-1] == 1.0
    # as a metric record's parts: summary numbers -> metrics, listed captions and per-step curves -> plot
    res = evaluate_traversal(cache, pool, steps=steps)
    assert res.metrics == {"monotonic_frac": 1.0, "precision": 1.0, "mean_unique": 4.0} and res.n == 1
    assert res.plot["paths"] == out["images"] and res.plot["per_step"]["root_frac"] == s["root_frac_per_step"]
    assert res.plot["per_step"]["mean_specificity"] == s["mean_specificity_per_step"]
    assert res.details == {"steps": steps, "root": "origin"}


def test_clip_traversal_linear_interpolation_to_mean_caption():
    ang = [0, 30, 60, 90]
    emb = torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in ang])
    pool = EmbeddingCache(
        task="text-pool",
        space=get_space("clip"),
        texts=[f"a{a}" for a in ang],
        text_emb=emb,
        specificity=torch.tensor([3.0, 2.0, 1.0, 0.0]),
    )
    cache = EmbeddingCache(task="classification", space=get_space("clip"), image_emb=emb[:1].clone(), keys=["im"])
    out = traverse(cache, pool, steps=9)
    # root = 45 degrees; path angles go 0 -> 45: nearest a0 until > 15 degrees, then a30; root at the end
    assert [s["text"] for s in out["images"][0]["steps"]] == ["a0", "a30", ROOT_TEXT]
    assert out["summary"]["precision"] is None and out["summary"]["monotonic_frac"] == 1.0


def test_euclip_traversal_steps_up_the_hierarchy():
    """EuCLIP: straight line to the origin; at each point the nearest (by squared distance) caption whose
    Euclidean cone contains the point."""
    norms = [0.5, 1.0, 1.5]
    pool = EmbeddingCache(
        task="text-pool",
        space=get_space("euclip"),
        texts=["general", "middle", "specific", "other"],
        text_emb=torch.stack([E1 * r for r in norms] + [E2 * 1.2]),
        specificity=torch.tensor([1.0, 2.0, 3.0, 3.0]),
    )
    cache = EmbeddingCache(
        task="classification",
        space=get_space("euclip"),
        image_emb=(2.1 * E1)[None],
        keys=["im"],
        meta=[{"true_captions": [0, 1, 2]}],
    )
    steps = 11
    out = traverse(cache, pool, steps=steps)
    listed = out["images"][0]["steps"]
    assert [s["text"] for s in listed] == ["specific", "middle", "general", ROOT_TEXT]
    # point p_k = 2.1 (1 - t_k) e1 (never exactly at a caption): a caption at norm r on the ray entails p_k iff
    # |p_k| > r (angle 0; behind it the angle is pi), so the nearest entailing caption is the largest r < |p_k|;
    # once |p_k| < 0.5 no caption entails it and [ROOT] (the origin, entails everything) is retrieved
    ts = np.linspace(0, 1, steps)
    norm = 2.1 * (1 - ts)

    def first(r):
        return float(ts[np.argmax(norm < r)])

    assert [s["t"] for s in listed] == pytest.approx([0.0, first(1.5), first(1.0), first(0.5)])
    assert out["summary"]["monotonic_frac"] == 1.0 and out["summary"]["root"] == "origin"
