"""Retrieval recall with known ranks, including images with several captions."""

import numpy as np
import pytest
import torch

from meru.evaluation.retrieval import best_positive_ranks, evaluate_retrieval
from meru.stats import bootstrap_ci, cluster_bootstrap_ci
from meru.records import EmbeddingCache
from meru.spaces import get_space


def test_best_positive_rank_by_hand():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    pos = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]], dtype=torch.bool)
    assert best_positive_ranks(scores, pos).tolist() == [1, 3, 3]


def test_query_without_positive_is_an_error():
    with pytest.raises(ValueError, match="no paired"):
        best_positive_ranks(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool))


def test_recall_clip_multi_caption():
    # 3 images on the axes; 4 captions: img0 has captions 0 and 1, img1 caption 2, img2 caption 3.
    img = torch.eye(3)
    txt = torch.tensor(
        [
            [0.1, 1.0, 0.0],  # caption of img0, but closest to img1
            [1.0, 0.2, 0.0],  # caption of img0
            [1.0, 0.5, 0.0],  # caption of img1, closest to img0
            [0.0, 0.0, 1.0],
        ]
    )  # caption of img2
    t2i = torch.tensor([0, 0, 1, 2])
    cache = EmbeddingCache(task="retrieval", space=get_space("clip"), image_emb=img, text_emb=txt, text_to_image=t2i)
    res = evaluate_retrieval(cache, n_boot=20)
    # i2t ranks: img0 -> captions sorted by x: c1(1/|.|), c2, c0 ... best positive c1 -> rank 0
    #            img1 -> by y/|t|: c0 (0.995), c2 (0.447) -> rank 1 ; img2 -> c3 rank 0
    assert res.per_item["i2t_rank"] == [0, 1, 0]
    # t2i: c0 -> img1 first, img0 second -> rank 1; c1 -> img0 rank 0; c2 -> img0 first -> rank 1; c3 -> 0
    assert res.per_item["t2i_rank"] == [1, 0, 1, 0]
    m = res.metrics
    assert m["i2t_r1"] == pytest.approx(200 / 3) and m["i2t_r5"] == 100.0
    assert m["t2i_r1"] == pytest.approx(50.0) and m["t2i_r10"] == 100.0
    assert res.n == 3 and res.details["n_texts"] == 4
    # t2i intervals resample images with their captions (img0's two captions together), i2t the image queries
    hits = np.array([0.0, 1.0, 0.0, 1.0])
    assert res.intervals["t2i_r1"] == pytest.approx([100 * v for v in cluster_bootstrap_ci(hits, [0, 0, 1, 2], 20)])
    assert res.intervals["i2t_r1"] == pytest.approx([100 * v for v in bootstrap_ci([1.0, 0.0, 1.0], n_boot=20)])
    assert res.details["interval_units"]["t2i_r1"].startswith("images (cluster")


def test_meru_uses_lorentzian_inner_product():
    # same direction, different norms: cosine ties, the Lorentzian inner product prefers the nearest point
    img = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    txt = torch.tensor([[3.1, 0.0], [0.9, 0.0]])
    t2i = torch.tensor([1, 0])
    cache = EmbeddingCache(
        task="retrieval", space=get_space("meru", 1.0), image_emb=img, text_emb=txt, text_to_image=t2i
    )
    assert evaluate_retrieval(cache, n_boot=5).metrics["i2t_r1"] == 100.0
    cache = EmbeddingCache(task="retrieval", space=get_space("clip"), image_emb=img, text_emb=txt, text_to_image=t2i)
    assert evaluate_retrieval(cache, n_boot=5).per_item["i2t_rank"] == [0, 0]  # ties favour positives


def test_nan_scores_rank_worst():
    """A NaN is never a tie in the right answer's favour: a NaN positive ranks below every other item, a NaN
    negative never beats a finite positive; finite rows rank as before."""
    nan = float("nan")
    scores = torch.tensor([[nan, nan, nan, nan], [0.9, nan, 0.5, nan], [nan, 0.2, 0.9, 0.1], [0.3, 0.9, 0.5, 0.1]])
    pos = torch.tensor([[1, 0, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    assert best_positive_ranks(scores, pos).tolist() == [3, 1, 1, 1]


@pytest.mark.parametrize("kind", ["clip", "meru", "euclip"])
def test_huge_embeddings_are_refused_not_perfect(kind):
    """Finite but huge embeddings (~1e30) made every score NaN (MERU, EuCLIP) or 0 (CLIP) and R@1 = 100."""
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(8, 16, generator=gen) * 1e30, torch.randn(8, 16, generator=gen) * 1e30
    space = get_space(kind, 1.0) if kind == "meru" else get_space(kind)
    cache = EmbeddingCache(task="retrieval", space=space, image_emb=img, text_emb=txt, text_to_image=torch.arange(8))
    with pytest.raises(ValueError, match="too large to score.*largest \\|x\\| = "):
        evaluate_retrieval(cache, n_boot=5)
