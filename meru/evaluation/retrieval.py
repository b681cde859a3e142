"""Zero-shot image-text retrieval from an embedding cache (MERU / CLIP protocol).

Score = ``space.similarity`` (MERU: Lorentzian inner product; EuCLIP: ``-||x - y||^2``; CLIP: cosine). For a query q with
paired (positive) gallery items P(q), its rank is the 0-based position of its best-scoring positive
in the gallery sorted by decreasing score: ``rank(q) = #{g not in P(q) : s(q, g) > max_{p in P(q)} s(q, p)}``
(ties resolved in favour of the positive; NaN scores rank worst: a query whose positives all score NaN gets the
last rank, ``#{g not in P(q)}``; embeddings too large to score and non-finite scores are refused,
:mod:`meru.evaluation.ranking`). Recall@K (in %) = ``100 * mean_q 1[rank(q) < K]``: a query is
correct if any paired item is in its top K (official MERU ``_compute_recall``).

Intervals: 95% percentile bootstrap over images (``details.interval_units``): i2t resamples the image queries;
t2i resamples images with all their captions (a cluster bootstrap, :func:`meru.stats.cluster_bootstrap_ci`),
since the captions of one image are not independent queries.

Directions: ``i2t`` = image queries over all captions (positives: the image's captions);
``t2i`` = caption queries over all images (positive: its image). clip-benchmark calls t2i
"image_retrieval" and i2t "text_retrieval".
"""

from __future__ import annotations

import numpy as np
import torch

from meru.evaluation.ranking import nan_as_worst, require_finite_scores, require_scorable
from meru.evaluation.task import EmbedOptions, Evaluation, Task, bootstrap_options, load_test_cache
from meru.records import EmbeddingCache, Measurement
from meru.stats import bootstrap_ci, cluster_bootstrap_ci

KS = (1, 5, 10)


def best_positive_ranks(scores: torch.Tensor, positive: torch.Tensor) -> np.ndarray:
    """``scores [Q, G]``, ``positive [Q, G]`` bool (>= 1 True per row) -> ``[Q]`` rank of the best positive."""
    if not bool(positive.any(1).all()):
        bad = int((~positive.any(1)).nonzero()[0, 0])
        raise ValueError(f"retrieval query {bad} has no paired gallery item")
    clean = nan_as_worst(scores)
    best = clean.masked_fill(~positive, float("-inf")).max(1, keepdim=True).values
    ranks = ((clean > best) & ~positive).sum(1)
    all_nan = (torch.isnan(scores) | ~positive).all(1)  # every positive scores NaN: below every other item
    ranks = torch.where(all_nan, (~positive).sum(1), ranks)
    return ranks.numpy().astype(np.int64)


def retrieval_ranks(
    space,
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor,
    batch_size: int = 1024,
    source: str = "retrieval",
) -> dict[str, np.ndarray]:
    """``{"i2t": [N], "t2i": [M]}`` ranks (see module doc), computed in query chunks; non-finite scores are
    refused (ValueError naming ``source``)."""
    image_emb, text_emb, t2i = image_emb.float(), text_emb.float(), text_to_image.long()
    n = image_emb.shape[0]
    i2t, t2i_r = [], []
    for s in range(0, n, batch_size):
        rows = torch.arange(s, min(s + batch_size, n))
        sc = space.similarity(image_emb[rows], text_emb)
        require_finite_scores(sc, source, "image-to-text")
        i2t.append(best_positive_ranks(sc, t2i.view(1, -1) == rows.view(-1, 1)))
    for s in range(0, text_emb.shape[0], batch_size):
        q = t2i[s : s + batch_size]
        sc = space.similarity(text_emb[s : s + batch_size], image_emb)
        require_finite_scores(sc, source, "text-to-image")
        t2i_r.append(best_positive_ranks(sc, torch.arange(n).view(1, -1) == q.view(-1, 1)))
    return {"i2t": np.concatenate(i2t), "t2i": np.concatenate(t2i_r)}


def evaluate_retrieval(cache: EmbeddingCache, ks=KS, n_boot: int = 1000, seed: int = 0) -> Measurement:
    """Recall@K both directions with bootstrap intervals over images (module doc); per item the ranks
    ``i2t_rank [N]`` (image queries) and ``t2i_rank [M]`` (caption queries); details ``n_texts`` = M and
    ``interval_units``."""
    cache.require("image_emb", "text_emb", "text_to_image", what="a retrieval embedding cache")
    require_scorable(cache.name, image_emb=cache.image_emb, text_emb=cache.text_emb)
    ranks = retrieval_ranks(cache.space, cache.image_emb, cache.text_emb, cache.text_to_image, source=cache.name)
    metrics, intervals = {}, {}
    for d in ("i2t", "t2i"):
        for k in ks:
            hit = (ranks[d] < k).astype(np.float64)
            metrics[f"{d}_r{k}"] = 100.0 * hit.mean()
            if d == "i2t":
                ci = bootstrap_ci(hit, n_boot=n_boot, seed=seed)
            else:
                ci = cluster_bootstrap_ci(hit, cache.text_to_image.long().numpy(), n_boot=n_boot, seed=seed)
            intervals[f"{d}_r{k}"] = [100.0 * v for v in ci]
    units = {"i2t": "images (queries)", "t2i": "images (cluster bootstrap over their captions)"}
    return Measurement(
        metrics,
        intervals,
        n=int(len(ranks["i2t"])),
        per_item={"i2t_rank": ranks["i2t"].tolist(), "t2i_rank": ranks["t2i"].tolist()},
        details={
            "n_texts": int(len(ranks["t2i"])),
            "interval_units": {f"{d}_r{k}": units[d] for d in units for k in ks},
        },
    )


class RetrievalTask(Task):
    """``retrieval``: retrieval caches get every caption ``[M, D]`` and ``text_to_image [M]``; evaluated by
    :func:`evaluate_retrieval`, plus clip-benchmark's ``zeroshot_retrieval`` result."""

    name = "retrieval"
    tables = ("retrieval",)
    embeds = "retrieval"

    def embed(self, model, evalset, images, options: EmbedOptions) -> dict:
        from meru.evaluation.encode import encode_texts
        from meru.progress import Progress

        texts, t2i = [], []
        for row, captions in enumerate(images.captions):
            texts.extend(captions)
            t2i.extend([row] * len(captions))
        progress = Progress(f"meru embed {evalset.name}", len(texts), "captions")
        return {
            "texts": texts,
            "text_emb": encode_texts(model, texts, True, options.batch_size, options.amp, progress),
            "text_to_image": torch.tensor(t2i, dtype=torch.long),
        }

    def evaluate(self, args, inputs) -> Evaluation:
        from meru.evaluation.clip_benchmark import clip_benchmark_retrieval

        cache = load_test_cache(args, "retrieval")
        res = evaluate_retrieval(cache, **bootstrap_options(args))
        return Evaluation(res, cache, {"task": "zeroshot_retrieval", "metrics": clip_benchmark_retrieval(cache)})
