"""Zero-shot classification from an embedding cache (MERU / CLIP protocol).

Classifier: the T prompt templates of class c give raw projected text features ``r[t, c]``;
``w_c = space.ensemble(r[:, c], textual_alpha)`` (:mod:`meru.spaces`) — MERU: ``exp_0(alpha * mean_t r[t, c])``
(mean in the tangent space at the origin), EuCLIP: ``alpha * mean_t r[t, c]``, CLIP:
``normalise(mean_t normalise(r[t, c]))``. Score of image i for class c: ``space.similarity(x_i, w_c)``
(MERU: Lorentzian inner product ``<x, w>_L``; EuCLIP: ``-||x - w||^2``; CLIP: cosine).

Metrics (in %): ``top1`` (micro accuracy), ``top5`` (true class among the 5 highest scores; all
classes if C < 5), ``mean_per_class`` (mean over classes of per-class recall; MERU's reported metric,
torchmetrics ``MulticlassAccuracy`` with macro averaging). Ties go to the lower class index; a NaN score ranks
worst (an item whose true class scores NaN is wrong at every k); embeddings too large to score and non-finite
scores are refused (:mod:`meru.evaluation.ranking`).
"""

from __future__ import annotations

import numpy as np
import torch

from meru.evaluation.ranking import nan_as_worst, require_finite_scores, require_scorable
from meru.evaluation.task import EmbedOptions, Evaluation, Task, bootstrap_options, load_test_cache
from meru.records import EmbeddingCache, Measurement
from meru.stats import bootstrap_ci, bootstrap_indices


def classifier_weights(cache: EmbeddingCache, class_text_raw: torch.Tensor | None = None) -> torch.Tensor:
    """``[C, D]`` class embeddings: prompt ensemble of ``class_text_raw [T, C, D]`` (see module doc); default the
    cache's own, else another template set's (prompt sensitivity)."""
    if class_text_raw is None:
        cache.require("class_text_raw", what="a classification embedding cache")
        class_text_raw = cache.class_text_raw
    raw = class_text_raw.float()
    if raw.ndim != 3:
        raise ValueError(f"{cache.name}: class_text_raw must be [T, C, D], got {tuple(raw.shape)}")
    alpha = cache.textual_alpha
    return cache.space.ensemble(raw, 1.0 if alpha is None else float(alpha))


def zeroshot_scores(
    cache: EmbeddingCache, batch_size: int = 4096, class_text_raw: torch.Tensor | None = None
) -> torch.Tensor:
    """``[N, C]`` similarity of every image to every class embedding (``class_text_raw``: as
    :func:`classifier_weights`). Refused (ValueError, one line): embeddings too large to score, non-finite scores."""
    cache.require("image_emb", what="an image embedding cache")
    space, w = cache.space, classifier_weights(cache, class_text_raw)
    x = cache.image_emb.float()
    require_scorable(cache.name, image_emb=x, class_embeddings=w)
    scores = torch.cat([space.similarity(x[s : s + batch_size], w) for s in range(0, x.shape[0], batch_size)])
    require_finite_scores(scores, cache.name, "zero-shot")
    return scores


def mean_per_class(correct: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in ``labels`` of the fraction of their items that are correct."""
    labels = np.asarray(labels, dtype=np.int64)
    correct = np.asarray(correct, dtype=np.float64)
    counts = np.bincount(labels)
    hits = np.bincount(labels, weights=correct, minlength=counts.size)
    present = counts > 0
    return float(np.mean(hits[present] / counts[present]))


def _mpc_rows(rows: np.ndarray) -> float:
    return mean_per_class(rows[:, 0], rows[:, 1].astype(np.int64))


def predict(scores: torch.Tensor) -> torch.Tensor:
    """``[N]`` index of the highest score of each row of ``scores [N, C]`` (the lowest index among equal ones;
    NaN ranks worst)."""
    return nan_as_worst(scores).argmax(1)


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> np.ndarray:
    """``[N]`` 0/1: the true class is among the ``min(k, C)`` highest-scoring classes.

    Ties: a class counts as above the true class only if its score is strictly higher, except
    for equal-scoring lower indices (argmax convention: the lower index wins). NaN ranks worst: a NaN class is
    never above the true class, and every other class is above a NaN true class."""
    k = min(k, scores.shape[1])
    clean = nan_as_worst(scores)
    true = clean.gather(1, labels.view(-1, 1))
    idx = torch.arange(scores.shape[1]).view(1, -1)
    above = (clean > true) | ((clean == true) & (idx < labels.view(-1, 1)))
    above |= torch.isnan(scores.gather(1, labels.view(-1, 1))) & (idx != labels.view(-1, 1))
    return (above.sum(1) < k).numpy().astype(np.int64)


def evaluate_zeroshot(cache: EmbeddingCache, tree=None, n_boot: int = 1000, seed: int = 0) -> Measurement:
    """Zero-shot metrics, bootstrap intervals and per-item data for one embedding cache.

    Per item: ``correct``, ``correct_top5`` (0/1), ``pred``, ``label``; details: ``n_classes``. With ``tree`` (a
    :class:`meru.evaluation.tree.Tree`) and ``cache.class_nodes`` also TIE, LCA, Jaccard, hP, hR and
    mistake severity from :func:`meru.evaluation.tree.hierarchical_metrics` on the top-1 predictions
    (:func:`hierarchical`: per-item ``tie``, details ``n_mistakes``).
    """
    cache.require("labels", "classnames", what="a classification embedding cache")
    labels = cache.labels.long()
    scores = zeroshot_scores(cache)
    if scores.shape[1] != len(cache.classnames):
        raise ValueError("class_text_raw and classnames disagree on the number of classes")
    if labels.numel() and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"{cache.name}: labels outside [0, {scores.shape[1]})")
    pred = predict(scores)
    c1 = topk_correct(scores, labels, 1)
    c5 = topk_correct(scores, labels, 5)
    lab = labels.numpy()
    metrics = {"top1": 100.0 * c1.mean(), "top5": 100.0 * c5.mean(), "mean_per_class": 100.0 * mean_per_class(c1, lab)}
    idx = bootstrap_indices(len(c1), n_boot, seed) if len(c1) else None  # drawn once, reused by every metric
    intervals = {
        "top1": [100.0 * v for v in bootstrap_ci(c1, indices=idx)],
        "top5": [100.0 * v for v in bootstrap_ci(c5, indices=idx)],
        "mean_per_class": [100.0 * v for v in bootstrap_ci(np.stack([c1, lab], 1), statistic=_mpc_rows, indices=idx)],
    }
    out = Measurement(
        metrics,
        intervals,
        n=int(len(c1)),
        per_item={"correct": c1.tolist(), "correct_top5": c5.tolist(), "pred": pred.tolist(), "label": lab.tolist()},
        details={"n_classes": int(scores.shape[1])},
    )
    if tree is not None:
        nodes = cache.class_nodes
        if not nodes:
            raise ValueError(
                f"{cache.name}: --tree given but the cache has no class_nodes (the eval "
                "set needs class_nodes.json, or ImageNet-1k class order); re-run `meru embed`"
            )
        out.update(hierarchical(tree, lab, pred.numpy(), nodes, n_boot, seed, indices=idx))
    return out


def hierarchical(
    tree,
    labels: np.ndarray,
    pred: np.ndarray,
    class_nodes,
    n_boot: int = 1000,
    seed: int = 0,
    indices: np.ndarray | None = None,
) -> Measurement:
    """Hierarchical metrics of top-1 predictions (means over items; mistake severity over mistakes only).
    ``indices``: bootstrap indices over all items (``bootstrap_indices(N, n_boot, seed)``) to reuse."""
    from meru.evaluation.tree import hierarchical_metrics, summarize_hierarchical

    per = hierarchical_metrics(tree, labels, pred, classes=list(class_nodes))
    summary = summarize_hierarchical(per)
    metrics, intervals = {}, {}
    for k, v in per.items():
        if k == "correct" or summary.get(k) is None:
            continue
        metrics[k] = summary[k]
        vals = v[~np.isnan(v)] if k == "mistake_severity" else v  # severity: over mistakes only
        reuse = indices is not None and len(vals) == indices.shape[1] and k != "mistake_severity"
        intervals[k] = list(
            bootstrap_ci(vals, indices=indices) if reuse else bootstrap_ci(vals, n_boot=n_boot, seed=seed)
        )
    return Measurement(
        metrics,
        intervals,
        n=int(len(labels)),
        per_item={"tie": per["tie"].tolist()},
        details={"n_mistakes": int(summary.get("n_mistakes", 0))},
    )


class ZeroShotTask(Task):
    """``zeroshot``: classification caches get labels, class names, templates, class nodes and the raw text
    features of every template x class ``[T, C, D]``; evaluated by :func:`evaluate_zeroshot` (with ``--tree``,
    the hierarchical metrics), plus clip-benchmark's ``zeroshot_classification`` result."""

    name = "zeroshot"
    tables = ("zeroshot", "hierarchy", "hierarchy_distance")
    embeds = "classification"
    arguments = (
        ("--tree", {"help": "zeroshot: taxonomy edge file ('parent child' lines) for hierarchical metrics"}),
        ("--tree-names", {"help": "zeroshot: node id -> name JSON for the tree"}),
    )

    def embed(self, model, evalset, images, options: EmbedOptions) -> dict:
        from meru.evaluation.encode import class_text_raw

        classnames, templates = list(evalset.classnames), list(evalset.templates)
        return {
            "labels": torch.tensor(images.labels, dtype=torch.long),
            "classnames": classnames,
            "templates": templates,
            "class_text_raw": class_text_raw(model, classnames, templates, options.batch_size, options.amp),
            "class_nodes": evalset.class_nodes,
        }

    def evaluate(self, args, inputs) -> Evaluation:
        from meru.evaluation.clip_benchmark import clip_benchmark_classification

        cache = load_test_cache(args, "classification")
        tree = None
        if args.tree:
            from meru.evaluation.tree import Tree

            tree = Tree.from_edges_file(args.tree, names=args.tree_names)
            inputs.tree = str(args.tree)
        res = evaluate_zeroshot(cache, tree=tree, **bootstrap_options(args))
        cb = clip_benchmark_classification(zeroshot_scores(cache), cache.labels.long())
        return Evaluation(res, cache, {"task": "zeroshot_classification", "metrics": cb})
