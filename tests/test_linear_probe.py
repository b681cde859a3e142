"""Linear probe: separable data is solved, the cost search follows the documented schedule."""

import numpy as np
import pytest
import torch

from meru.evaluation import linear_probe as lp
from meru.records import EmbeddingCache
from meru.spaces import get_space


def blobs(n, seed, sep=6.0, dim=8, classes=3):
    rng = np.random.default_rng(seed)
    centers = np.eye(classes, dim) * sep
    y = np.arange(n) % classes
    return torch.tensor(centers[y] + rng.normal(size=(n, dim)), dtype=torch.float32), torch.tensor(y)


def cache(x, y):
    return EmbeddingCache(task="classification", space=get_space("clip"), image_feats=x, labels=y)


def test_separable_blobs_are_classified_perfectly():
    torch.set_num_threads(1)
    res = lp.evaluate_linear_probe(cache(*blobs(60, 0)), cache(*blobs(30, 1)), n_boot=20)
    assert res.metrics["top1"] == 100.0 and res.metrics["mean_per_class"] == 100.0
    assert 1e-6 / 10 <= res.details["cost"] <= 1e6 * 10
    assert len(res.details["cost_search"]) == 7 + 8  # first pass + 4 steps x 2


def test_cost_search_schedule(monkeypatch):
    tried = []

    class Fake:
        def __init__(self, c):
            self.c = c

        def predict(self, x):  # validation accuracy peaks at C = 100
            return np.where(np.full(len(x), abs(np.log10(self.c) - 2) < 0.1), 0, 1)

    monkeypatch.setattr(lp, "_fit", lambda x, y, c, max_iter=1000: tried.append(c) or Fake(c))
    y = np.zeros(4, dtype=np.int64)
    best, score, hist = lp.search_cost(None, y, np.zeros((4, 1)), y)
    assert best == 100.0 and score == 1.0
    assert tried[:7] == list(lp.FIRST_PASS)
    expect = []
    d = 10.0
    for _ in range(4):
        expect += [100.0 / d, 100.0 * d]
        d = d**0.5
    assert tried[7:] == pytest.approx(expect)


def test_feature_width_mismatch_is_an_error():
    with pytest.raises(ValueError, match="width"):
        lp.evaluate_linear_probe(cache(*blobs(30, 0)), cache(torch.zeros(3, 4), torch.tensor([0, 1, 2])), n_boot=5)
