"""Zero-shot classification on constructed embeddings with hand-computed answers."""

import math

import pytest
import torch

from meru.evaluation.tree import Tree
from meru.records import EmbeddingCache
from meru.spaces import get_space
from meru.evaluation.zeroshot import classifier_weights, evaluate_zeroshot, predict, topk_correct, zeroshot_scores


def clip_cache(image_emb, raw, labels):
    return EmbeddingCache(
        task="classification",
        space=get_space("clip"),
        textual_alpha=None,
        image_emb=image_emb,
        class_text_raw=raw,
        labels=torch.tensor(labels),
        classnames=[f"c{i}" for i in range(raw.shape[1])],
    )


def test_clip_hand_computed_accuracies():
    e = torch.eye(3)
    raw = e[None]  # one template, classes = axes
    # images: 4 of class 0 (3 correct), 1 of class 1 (correct), 1 of class 2 (wrong -> predicted 1)
    x = torch.tensor([[1, 0.1, 0], [1, 0, 0.2], [0.9, 0.1, 0.1], [0, 1, 0.0], [0, 1, 0.0], [0.1, 0.8, 0.3]])
    labels = [0, 0, 0, 0, 1, 2]
    res = evaluate_zeroshot(clip_cache(x, raw, labels), n_boot=50)
    m = res.metrics
    assert m["top1"] == pytest.approx(100 * 4 / 6)
    assert m["mean_per_class"] == pytest.approx(100 * (3 / 4 + 1 + 0) / 3)
    assert m["top5"] == 100.0  # C = 3 < 5
    assert res.per_item["correct"] == [1, 1, 1, 0, 1, 0]
    lo, hi = res.intervals["top1"]
    assert lo <= m["top1"] <= hi


def test_clip_ensemble_normalise_mean_normalise():
    torch.manual_seed(0)
    raw = torch.randn(4, 3, 5) * torch.tensor([1, 5, 0.2, 3])[:, None, None]
    w = classifier_weights(EmbeddingCache(task="classification", space=get_space("clip"), class_text_raw=raw))
    n = raw / raw.norm(dim=-1, keepdim=True)
    m = n.mean(0)
    torch.testing.assert_close(w, m / m.norm(dim=-1, keepdim=True))


def test_meru_ensemble_is_tangent_space_average():
    torch.manual_seed(0)
    raw, c, alpha = torch.randn(5, 3, 4), 0.7, 0.3
    cache = EmbeddingCache(task="classification", space=get_space("meru", c), textual_alpha=alpha, class_text_raw=raw)
    w = classifier_weights(cache)
    for k in range(3):
        v = alpha * raw[:, k].mean(0).double()
        r = math.sqrt(c) * v.norm()
        expect = torch.sinh(r) * v / r  # exp map at the origin, space components
        torch.testing.assert_close(w[k].double(), expect, rtol=1e-5, atol=1e-6)
    # not the same as averaging the lifted prompt embeddings
    per_prompt = raw * alpha
    lifted = (
        torch.sinh(math.sqrt(c) * per_prompt.norm(dim=-1, keepdim=True))
        * per_prompt
        / (math.sqrt(c) * per_prompt.norm(dim=-1, keepdim=True))
    )
    assert not torch.allclose(w, lifted.mean(0), atol=1e-4)


def test_meru_score_is_lorentzian_inner_product():
    torch.manual_seed(1)
    c = 1.3
    cache = EmbeddingCache(
        task="classification",
        space=get_space("meru", c),
        textual_alpha=0.5,
        class_text_raw=torch.randn(2, 4, 3),
        image_emb=torch.randn(6, 3),
    )
    s = zeroshot_scores(cache)
    w = classifier_weights(cache)
    x = cache.image_emb
    xt = torch.sqrt(1 / c + (x**2).sum(1))
    wt = torch.sqrt(1 / c + (w**2).sum(1))
    torch.testing.assert_close(s, x @ w.T - xt[:, None] * wt[None], rtol=1e-5, atol=1e-5)


def test_topk_ties_and_k_larger_than_classes():
    scores = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    assert topk_correct(scores, torch.tensor([1, 2]), 1).tolist() == [0, 0]  # tie: lower index wins
    assert topk_correct(scores, torch.tensor([1, 2]), 2).tolist() == [1, 1]
    assert topk_correct(scores, torch.tensor([0, 0]), 10).tolist() == [1, 1]


def test_random_embeddings_are_at_chance():
    g = torch.Generator().manual_seed(0)
    C, N = 10, 4000
    cache = clip_cache(
        torch.randn(N, 16, generator=g),
        torch.randn(3, C, 16, generator=g),
        torch.randint(0, C, (N,), generator=g).tolist(),
    )
    m = evaluate_zeroshot(cache, n_boot=20).metrics
    assert abs(m["top1"] - 100 / C) < 2.0  # sd ~ 0.47 points
    assert abs(m["top5"] - 500 / C) < 4.0


def test_hierarchical_metrics_on_a_small_tree():
    tree = Tree.from_edges([("r", "a"), ("r", "b"), ("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")])
    classes = ["a1", "a2", "b1", "b2"]
    raw = torch.eye(4)[None]
    # true a1 each time; predictions a1, a2 (sibling), b1 (cousin)
    x = torch.eye(4)[[0, 1, 2]]
    cache = clip_cache(x, raw, [0, 0, 0])
    cache.class_nodes = classes
    res = evaluate_zeroshot(cache, tree=tree, n_boot=20)
    h = res.metrics
    assert h["tie"] == pytest.approx((0 + 2 + 4) / 3)
    assert h["mistake_severity"] == pytest.approx((1 + 2) / 2)  # lca heights a, r
    assert h["lca_height"] == pytest.approx((0 + 1 + 2) / 3)
    assert res.per_item["tie"] == [0, 2, 4] and res.details == {"n_classes": 4, "n_mistakes": 2}


def test_tree_without_class_nodes_is_an_error():
    tree = Tree.from_edges([("r", "a"), ("r", "b")])
    with pytest.raises(ValueError, match="class_nodes"):
        evaluate_zeroshot(clip_cache(torch.eye(2), torch.eye(2)[None], [0, 1]), tree=tree, n_boot=5)


def test_topk_nan_ranks_worst():
    nan = float("nan")
    scores = torch.tensor([[nan, nan, nan], [nan, 0.5, 0.1], [0.2, nan, 0.9], [0.9, 0.1, nan]])
    labels = torch.tensor([0, 1, 1, 0])
    assert topk_correct(scores, labels, 1).tolist() == [0, 1, 0, 1]  # a NaN right answer ranks last
    assert topk_correct(scores, labels, 2).tolist() == [0, 1, 0, 1]
    assert topk_correct(scores, labels, 3).tolist() == [1, 1, 1, 1]  # k = C: every class is in the top k
    assert predict(scores).tolist()[1:] == [1, 2, 0]  # argmax would pick the NaN


@pytest.mark.parametrize("scale", [1e30, 1e19])
def test_huge_embeddings_are_refused(scale):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=gen) * scale
    with pytest.raises(ValueError, match="image_emb holds embeddings too large to score"):
        evaluate_zeroshot(clip_cache(x, torch.eye(3)[None], [0, 1, 2, 0, 1, 2]), n_boot=5)


def test_nonfinite_scores_are_refused():
    cache = clip_cache(torch.eye(3), torch.eye(3)[None], [0, 1, 2])
    cache.space.similarity = lambda x, w: torch.full((x.shape[0], w.shape[0]), float("nan"))
    with pytest.raises(ValueError, match="9 of 9 zero-shot scores are not finite"):
        zeroshot_scores(cache)
