"""Hierarchical metrics: hand-computed cases, an independent set-based reference, and
chance-level expectations (exact enumeration by hand vs a large random sample)."""

import json
import math

import numpy as np
import pytest

from meru.evaluation.tree import METRIC_NAMES, Tree, chance_hierarchical, hierarchical_metrics, summarize_hierarchical

# r -> a -> {a1, a2};  r -> b -> {b1, bx -> {b2, b3}}
EDGES = [("r", "a"), ("r", "b"), ("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "bx"), ("bx", "b2"), ("bx", "b3")]
TREE = Tree.from_edges(EDGES)

# Hand computation, A = proper ancestors (root included, class excluded), S = A + class.
# (true, pred): tie, lca(HyCoCLIP), jaccard, hP, hR, jaccard_full, hP_full, hR_full, hF1_full, lca_height
HAND = {
    # correct: everything perfect, lca error is 1 by HyCoCLIP's "+1"
    ("b3", "b3"): (0, 1, 1, 1, 1, 1, 1, 1, 1, 0),
    # siblings: A(a1) = A(a2) = {a, r}; S share {a, r} of 4 nodes
    ("a1", "a2"): (2, 1, 1, 1, 1, 2 / 4, 2 / 3, 2 / 3, 2 / 3, 1),
    # A(a1) = {a, r}, A(b2) = {bx, b, r}: I = {r}; S sizes 3 and 4, union 6
    ("a1", "b2"): (5, 3, 1 / 4, 1 / 3, 1 / 2, 1 / 6, 1 / 4, 1 / 3, 2 / 7, 3),
    # A(b2) = {bx, b, r}, A(b1) = {b, r}: I = {b, r}; S sizes 4 and 3, inter 2, union 5
    ("b2", "b1"): (3, 1, 2 / 3, 1, 2 / 3, 2 / 5, 2 / 3, 1 / 2, 4 / 7, 2),
}
KEYS = (
    "tie",
    "lca",
    "jaccard",
    "h_precision",
    "h_recall",
    "jaccard_full",
    "h_precision_full",
    "h_recall_full",
    "h_f1_full",
    "lca_height",
)


def test_hand_computed_cases():
    pairs = list(HAND)
    per = hierarchical_metrics(TREE, [t for t, _ in pairs], [p for _, p in pairs])
    assert set(per) == set(METRIC_NAMES)
    for i, pair in enumerate(pairs):
        for key, want in zip(KEYS, HAND[pair]):
            assert per[key][i] == pytest.approx(want), (pair, key)
    assert per["correct"].tolist() == [1, 0, 0, 0]
    assert math.isnan(per["mistake_severity"][0])
    assert per["mistake_severity"][1:].tolist() == [1, 3, 2]


def test_class_index_input_and_summary():
    classes = ["a1", "a2", "b1", "b2", "b3"]
    per = hierarchical_metrics(TREE, [0, 3, 4], [1, 2, 4], classes=classes)
    assert per["tie"].tolist() == [2, 3, 0]
    s = summarize_hierarchical(per)
    assert s["tie"] == pytest.approx(5 / 3)
    assert s["mistake_severity"] == pytest.approx((1 + 2) / 2)  # mistakes only
    assert s["lca_height"] == pytest.approx((1 + 2 + 0) / 3)  # all items
    assert s["n"] == 3 and s["n_mistakes"] == 2
    json.dumps(s, allow_nan=False)
    perfect = summarize_hierarchical(hierarchical_metrics(TREE, ["a1", "b2"], ["a1", "b2"]))
    assert perfect["mistake_severity"] is None and perfect["tie"] == 0 and perfect["jaccard"] == 1
    json.dumps(perfect, allow_nan=False)
    with pytest.raises(ValueError, match="out of range"):
        hierarchical_metrics(TREE, [0], [7], classes=classes)
    with pytest.raises(KeyError, match="not in tree"):
        hierarchical_metrics(TREE, ["a1"], ["zz"])


def _reference(tree, y, p):
    """Independent set-based implementation straight from the definitions."""
    A = lambda n: set(tree.ancestors(n))  # noqa: E731
    S = lambda n: A(n) | {n}  # noqa: E731
    i, u = A(y) & A(p), A(y) | A(p)
    fi, fu = S(y) & S(p), S(y) | S(p)
    # path length by BFS on the undirected graph
    adj = {}
    for a, b in tree.edges():
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    dist, frontier = {y: 0}, [y]
    while frontier:
        nxt = []
        for n in frontier:
            for m in adj[n]:
                if m not in dist:
                    dist[m] = dist[n] + 1
                    nxt.append(m)
        frontier = nxt
    common = fi
    lca = max(common, key=tree.depth)
    hp, hr = len(fi) / len(S(p)), len(fi) / len(S(y))
    return {
        "tie": dist[p],
        "lca": len(A(p)) - len(i) + 1,
        "jaccard": len(i) / len(u),
        "h_precision": len(i) / len(A(p)),
        "h_recall": len(i) / len(A(y)),
        "jaccard_full": len(fi) / len(fu),
        "h_precision_full": hp,
        "h_recall_full": hr,
        "h_f1_full": 2 * hp * hr / (hp + hr),
        "lca_height": tree.height(lca),
    }


def test_matches_independent_reference_on_random_tree():
    rng = np.random.default_rng(0)
    edges = [(f"n{int(rng.integers(0, i))}", f"n{i}") for i in range(1, 60)]
    tree = Tree.from_edges(edges)
    leaves = tree.leaves
    y = [leaves[k] for k in rng.integers(0, len(leaves), 200)]
    p = [leaves[k] for k in rng.integers(0, len(leaves), 200)]
    per = hierarchical_metrics(tree, y, p, batch_size=37)
    for i in range(200):
        ref = _reference(tree, y[i], p[i])
        for k, v in ref.items():
            assert per[k][i] == pytest.approx(v), (y[i], p[i], k)


# Balanced binary tree of depth 2: r -> {a, b}, a -> {a1, a2}, b -> {b1, b2}.
# Uniform truth and uniform independent prediction: P(same) = 1/4, P(sibling) = 1/4,
# P(cousin) = 1/2.  Per case (same, sibling, cousin):
#   tie 0 / 2 / 4                -> E = 0/4 + 2/4 + 4/2 = 2.5
#   lca (HyCoCLIP) 1 / 1 / 2     -> E = 1/4 + 1/4 + 1 = 1.5
#   jaccard 1 / 1 / 1/3          -> E = 1/2 + 1/6 = 2/3
#   hP = hR 1 / 1 / 1/2          -> E = 1/2 + 1/4 = 0.75
#   jaccard_full 1 / 1/2 / 1/5   -> E = 1/4 + 1/8 + 1/10 = 0.475
#   lca_height 0 / 1 / 2         -> E = 1/4 + 1 = 1.25; mistake severity = 1.25 / (3/4) = 5/3
BALANCED = [("r", "a"), ("r", "b"), ("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")]
CHANCE = {
    "correct": 0.25,
    "tie": 2.5,
    "lca": 1.5,
    "jaccard": 2 / 3,
    "jaccard_full": 0.475,
    "lca_height": 1.25,
    "mistake_severity": 5 / 3,
    "h_precision": 0.75,
    "h_recall": 0.75,
}


def test_chance_level_exact_and_sampled():
    tree = Tree.from_edges(BALANCED)
    exact = chance_hierarchical(tree)
    for k, v in CHANCE.items():
        assert exact[k] == pytest.approx(v), k
    rng = np.random.default_rng(0)
    n = 40000
    y = rng.integers(0, 4, n)
    p = rng.integers(0, 4, n)
    sampled = summarize_hierarchical(hierarchical_metrics(tree, y, p, classes=tree.leaves))
    for k, v in CHANCE.items():
        assert sampled[k] == pytest.approx(v, abs=0.03), k


def test_chance_level_weighted_truth():
    # truth always a1: prediction uniform -> tie = (0 + 2 + 4 + 4) / 4 = 2.5, correct = 1/4
    tree = Tree.from_edges(BALANCED)
    exact = chance_hierarchical(tree, true_weights=[1, 0, 0, 0])
    assert exact["tie"] == pytest.approx(2.5) and exact["correct"] == pytest.approx(0.25)
    # unbalanced tree TREE: truth b3, prediction uniform over 5 leaves
    ex = chance_hierarchical(TREE, classes=["a1", "a2", "b1", "b2", "b3"], true_weights=[0, 0, 0, 0, 1])
    assert ex["tie"] == pytest.approx((5 + 5 + 3 + 2 + 0) / 5)
