"""clip-benchmark's zero-shot metrics, computed its way, for the ``M.clip_benchmark.json`` result files.

Its own ``accuracy`` cannot run under numpy 2 (``float()`` of a 1-element array), so
:func:`clip_benchmark_accuracy` is the same computation ending in ``.item()``; retrieval uses its
``recall_at_k`` / ``batchify`` directly.
"""

from __future__ import annotations

import torch

from meru.records import EmbeddingCache

CB_RECALL_KS = (1, 5, 10)


def clip_benchmark_accuracy(logits, target, topk=(1,)) -> list[float]:
    """clip-benchmark's ``accuracy``: fraction of rows whose target is among ``torch.topk(logits, k)`` (its
    tie order)."""
    pred = logits.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


def clip_benchmark_classification(logits: torch.Tensor, target: torch.Tensor) -> dict:
    """clip-benchmark's zero-shot classification metrics of ``[N, C]`` scores: its top-k ``accuracy`` and
    scikit-learn's ``balanced_accuracy_score`` of the argmax; ``acc5`` is NaN when the dataset has fewer than 5
    classes, as clip-benchmark writes it (our strict JSON stores it as ``null``)."""
    from sklearn.metrics import balanced_accuracy_score

    if logits.shape[1] >= 5:
        acc1, acc5 = clip_benchmark_accuracy(logits, target, topk=(1, 5))
    else:
        (acc1,), acc5 = clip_benchmark_accuracy(logits, target, topk=(1,)), float("nan")
    pred = logits.argmax(1)
    return {
        "acc1": float(acc1),
        "acc5": float(acc5),
        "mean_per_class_recall": float(balanced_accuracy_score(target.numpy(), pred.numpy())),
    }


def clip_benchmark_retrieval(cache: EmbeddingCache, ks=CB_RECALL_KS, batch_size: int = 64) -> dict:
    """clip-benchmark's retrieval recalls, computed its way: ``scores = sim(texts, images)`` ``[M, N]``,
    ``image_retrieval_recall@k`` = mean over texts of ``recall_at_k(scores, positives, k) > 0``,
    ``text_retrieval_recall@k`` the same on the transposes. ``sim`` is the model's own similarity
    (MERU: Lorentzian inner product; CLIP: cosine). Only ``k`` up to the gallery size."""
    from clip_benchmark.metrics.zeroshot_retrieval import batchify, recall_at_k

    images, texts = cache.image_emb.float(), cache.text_emb.float()
    scores = cache.space.similarity(texts, images)
    positive = torch.zeros(scores.shape, dtype=torch.bool)
    positive[range(len(texts)), cache.text_to_image.long()] = True
    out = {}
    for k in ks:
        if k <= images.shape[0]:
            hits = batchify(recall_at_k, scores, positive, batch_size, "cpu", k=k) > 0
            out[f"image_retrieval_recall@{k}"] = float(hits.float().mean())
        if k <= texts.shape[0]:
            hits = batchify(recall_at_k, scores.T, positive.T, batch_size, "cpu", k=k) > 0
            out[f"text_retrieval_recall@{k}"] = float(hits.float().mean())
    return out
