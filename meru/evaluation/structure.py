"""Hierarchy quality of an embedding space (images of an eval set + a caption pool).

Definitions (``x`` image embeddings ``[N, D]``, ``t`` pool caption embeddings ``[M, D]``):

* distance from the root ``r(.) = space.root_distance`` (:mod:`meru.spaces`; its unit is the ``"geometry"``
  field of the metric JSON): MERU — geodesic distance from the hyperboloid origin
  ``dist0(x) = asinh(sqrt(c) ||x||) / sqrt(c)``; EuCLIP — the Euclidean norm ``||x||`` ([ROOT] = origin);
  CLIP (no origin) — the angle ``acos(<x, m>)`` to ``m = normalise(mean_j t_j)``, the mean caption direction of
  the pool (the paper's CLIP [ROOT]). Reported: mean/median for images and captions and a histogram with shared bins.
* ``spearman_*`` / ``kendall_*`` (tau-b): rank correlation over pool captions between ``r(t_j)`` and the
  caption's ``specificity`` (depth + #attributes) or concept ``depth`` (HierarCaps-style; positive = more
  specific captions lie farther from the root).
* true pairs ``(j, i)``: pool caption j is true of image i (``meta[i]["true_captions"]``); if the images
  carry no such field but the cache is a retrieval set, the pairs are (caption, its image) instead.
  ``image_farther_frac`` = fraction of true pairs with ``r(x_i) > r(t_j)``.
* spaces with entailment cones (MERU, EuCLIP): cone violation ``v(j, i) = ext(t_j, x_i) - aper(t_j)`` (the
  space's exterior angle and half-aperture; ``<= 0``: image i lies in caption j's cone). ``cone_true_frac`` /
  ``cone_false_frac`` = fraction of true / false pairs inside the cone; ``cone_auc`` = ROC AUC of ``-v``
  separating true from false pairs (1 = perfect).
* intervals (95% percentile bootstrap, ``details.interval_units`` names each one's unit): ``image_root_mean`` over
  images, ``text_root_mean`` over pool captions; the pair fractions ``image_farther_frac`` / ``cone_true_frac``
  over the clusters the pairs share (:func:`pair_clusters`): a pool caption is true of many images and an image
  has many true captions, so images and captions are resampled independently (two-way cluster bootstrap,
  :func:`meru.stats.cluster_bootstrap_ci`); paired captions (one image each) resample images.
* ``modality_gap`` (``space.modality_gap``): distance between the image and caption centroids — CLIP and
  EuCLIP: ``||mean x - mean t||`` (Liang et al., NeurIPS 2022); MERU: the same in the tangent space at the
  origin, ``||mean log_0(x) - mean log_0(t)||`` (the centroid of hyperboloid points is not on the hyperboloid).
"""

from __future__ import annotations

import numpy as np

from meru.evaluation.ranking import auroc
from meru.evaluation.task import EmbedOptions, Evaluation, Task, bootstrap_options, load_test_cache
from meru.records import EmbeddingCache, Measurement
from meru.spaces import Space
from meru.stats import bootstrap_ci, cluster_bootstrap_ci

HIST_BINS = 30


def true_pair_mask(cache: EmbeddingCache, n_pool: int) -> tuple[np.ndarray | None, str | None]:
    """``[M, N]`` bool of true (pool caption, image) pairs from ``meta[i]["true_captions"]``."""
    meta = cache.meta
    n = cache.image_emb.shape[0]
    if not meta or not all(isinstance(m, dict) and "true_captions" in m for m in meta):
        return None, None
    mask = np.zeros((n_pool, n), dtype=bool)
    for i, m in enumerate(meta):
        idx = np.asarray(m["true_captions"], dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_pool):
            raise ValueError(
                f"{cache.name}: image {i} has true_captions outside the pool "
                f"(size {n_pool}); use the caption pool of the same SynthHier directory"
            )
        mask[idx, i] = True
    return mask, "pool_true_captions"


def pair_clusters(text_idx: np.ndarray, image_idx: np.ndarray) -> tuple[object, str]:
    """Cluster labels of true pairs ``(text_idx[p], image_idx[p])`` for :func:`meru.stats.cluster_bootstrap_ci` and
    their unit: ``(image, caption)`` when some caption is in several pairs (crossed), else the image."""
    if np.unique(text_idx).size < text_idx.size:
        return (image_idx, text_idx), "images x captions (two-way cluster bootstrap)"
    return image_idx, "images (cluster bootstrap)"


def _rank_corr(a: np.ndarray, b: np.ndarray) -> dict:
    from scipy import stats

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.unique(a[ok]).size < 2 or np.unique(b[ok]).size < 2:
        return {"spearman": None, "spearman_p": None, "kendall": None, "kendall_p": None}
    sp = stats.spearmanr(a[ok], b[ok])
    kt = stats.kendalltau(a[ok], b[ok])
    return {
        "spearman": float(sp.statistic),
        "spearman_p": float(sp.pvalue),
        "kendall": float(kt.statistic),
        "kendall_p": float(kt.pvalue),
    }


def root_distance_by_level(levels: np.ndarray, dist: np.ndarray) -> dict:
    """Pool captions grouped by ``levels`` (specificity or depth, ``[M]``): per level the caption count and the
    mean and sd (ddof 0) of their distance from the root ``dist [M]`` (for the reporting plots)."""
    out = {"level": [], "n": [], "mean": [], "sd": []}
    for lv in np.unique(levels[np.isfinite(levels)]):
        d = dist[levels == lv]
        out["level"].append(float(lv))
        out["n"].append(int(d.size))
        out["mean"].append(float(d.mean()))
        out["sd"].append(float(d.std()))
    return out


def check_same_space(cache: EmbeddingCache, pool: EmbeddingCache) -> Space:
    """The space of ``cache``; raises if ``pool`` was embedded in a different one (another model)."""
    if not cache.space.matches(pool.space):
        raise ValueError(
            f"{pool.name} and {cache.name} come from different models "
            "(kind/curvature differ); embed the pool with the same checkpoint"
        )
    pool.require("text_emb", what="a caption-pool embedding cache")
    cache.require("image_emb", what="an image embedding cache")
    return cache.space


def pair_metrics(space: Space, x, t, rx: np.ndarray, rt: np.ndarray, mask: np.ndarray, n_boot: int, seed: int):
    """Metrics, intervals and interval units over (caption, image) pairs (module doc): images ``x [N, D]`` at root
    distance ``rx [N]``, captions ``t [M, D]`` at ``rt [M]``, true pairs ``mask [M, N]``."""
    ti, ii = np.nonzero(mask)
    clusters, unit = pair_clusters(ti, ii)
    farther = (rx[ii] > rt[ti]).astype(np.float64)
    metrics = {"image_farther_frac": farther.mean()}
    intervals = {"image_farther_frac": list(cluster_bootstrap_ci(farther, clusters, n_boot=n_boot, seed=seed))}
    units = {"image_farther_frac": unit}
    if space.has_cones:
        v = space.cone_violation_matrix(t, x).numpy()
        inside = v <= 0
        true_inside = inside[ti, ii].astype(np.float64)  # the same pairs, in the same order as inside[mask]
        metrics["cone_true_frac"] = inside[mask].mean()
        intervals["cone_true_frac"] = list(cluster_bootstrap_ci(true_inside, clusters, n_boot=n_boot, seed=seed))
        units["cone_true_frac"] = unit
        if (~mask).any():
            metrics["cone_false_frac"] = inside[~mask].mean()
            metrics["cone_auc"] = auroc(-v, mask)
    return metrics, intervals, units


def evaluate_structure(
    cache: EmbeddingCache, pool: EmbeddingCache, n_boot: int = 1000, seed: int = 0, bins: int = HIST_BINS
) -> Measurement:
    """Structure metrics (module doc) of ``cache`` (images) against the caption pool ``pool``.

    Plot data: ``histogram`` (``edges``, ``image_counts``, ``text_counts``), ``text_root_by_{specificity,depth}``
    (:func:`root_distance_by_level`). Details: ``n_texts`` (pool size), ``root``, ``{spearman,kendall}_*_p``,
    ``pair_source``, ``n_true_pairs``, ``n_false_pairs``, ``interval_units`` (what each interval resamples)."""
    space = check_same_space(cache, pool)
    x, t = cache.image_emb.float(), pool.text_emb.float()
    root = space.root(t)
    rx, rt = space.root_distance(x, root).numpy(), space.root_distance(t, root).numpy()
    metrics = {
        "image_root_mean": rx.mean(),
        "image_root_median": np.median(rx),
        "text_root_mean": rt.mean(),
        "text_root_median": np.median(rt),
        "modality_gap": space.modality_gap(x, t),
    }
    intervals = {
        "image_root_mean": list(bootstrap_ci(rx, n_boot=n_boot, seed=seed)),
        "text_root_mean": list(bootstrap_ci(rt, n_boot=n_boot, seed=seed)),
    }
    units = {"image_root_mean": "images", "text_root_mean": "pool captions"}
    extra: dict = {"interval_units": units}
    for name, levels in (("specificity", pool.specificity), ("depth", pool.depth)):
        if levels is not None:
            c = _rank_corr(levels.double().numpy(), rt.astype(np.float64))
            metrics[f"spearman_{name}"], metrics[f"kendall_{name}"] = c["spearman"], c["kendall"]
            extra[f"spearman_{name}_p"], extra[f"kendall_{name}_p"] = c["spearman_p"], c["kendall_p"]
            extra[f"text_root_by_{name}"] = root_distance_by_level(levels.double().numpy(), rt)
    lo, hi = float(min(rx.min(), rt.min())), float(max(rx.max(), rt.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    histogram = {
        "edges": edges.tolist(),
        "image_counts": np.histogram(rx, edges)[0].tolist(),
        "text_counts": np.histogram(rt, edges)[0].tolist(),
    }

    # true / false (caption, image) pairs
    mask, source = true_pair_mask(cache, t.shape[0])
    pair_text, pair_rt = t, rt
    if mask is None and cache.text_emb is not None and cache.text_to_image is not None:
        pair_text = cache.text_emb.float()
        pair_rt = space.root_distance(pair_text, root).numpy()
        t2i = cache.text_to_image.long().numpy()
        mask = np.zeros((pair_text.shape[0], x.shape[0]), dtype=bool)
        mask[np.arange(len(t2i)), t2i] = True
        source = "paired_captions"
    if mask is not None and mask.any():
        pairs = pair_metrics(space, x, pair_text, rx, pair_rt, mask, n_boot, seed)
        for part, values in zip((metrics, intervals, units), pairs):
            part.update(values)
        extra.update(pair_source=source, n_true_pairs=int(mask.sum()), n_false_pairs=int((~mask).sum()))
    plot = {"histogram": histogram, **{k: extra.pop(k) for k in list(extra) if k.startswith("text_root_by_")}}
    return Measurement(
        metrics,
        intervals,
        n=int(x.shape[0]),
        plot=plot,
        details={"n_texts": int(t.shape[0]), "root": space.root_name, **extra},
    )


#: the caption-pool flag of ``structure`` and ``traversal``
TEXT_POOL_ARGUMENT = ("--text-pool", {"help": "structure/traversal: caption-pool cache (meru embed --text-pool)"})


def load_with_pool(args, inputs, task: str) -> tuple[EmbeddingCache, EmbeddingCache]:
    """The image cache (``--embeddings``: classification or retrieval) and the caption-pool cache
    (``--text-pool``) of ``meru evaluate --task structure | traversal``."""
    if args.text_pool is None:
        raise ValueError(f"--task {task} needs --text-pool POOL.pt (`meru embed --text-pool captions.jsonl`)")
    cache = load_test_cache(args, "classification", "retrieval")
    pool = EmbeddingCache.load(args.text_pool, "text-pool")
    inputs.text_pool = str(args.text_pool)
    return cache, pool


class StructureTask(Task):
    """``structure``: caption-pool caches (``meru embed --text-pool``) get every caption ``[M, D]`` with its
    ``specificity``, ``depth``, ``node`` and ``attributes``; evaluated by :func:`evaluate_structure` against an
    image cache."""

    name = "structure"
    tables = ("structure", "structure_pairs", "root_distance")
    embeds = "text-pool"
    arguments = (TEXT_POOL_ARGUMENT,)

    def embed(self, model, pool, images, options: EmbedOptions) -> dict:
        import torch

        from meru.evaluation.encode import encode_texts
        from meru.progress import Progress

        rows, nan = pool.rows, float("nan")
        texts = [r["text"] for r in rows]
        progress = Progress(f"meru embed {pool.name}", len(texts), "captions")
        return {
            "texts": texts,
            "text_emb": encode_texts(model, texts, True, options.batch_size, options.amp, progress),
            "specificity": torch.tensor([float(r.get("specificity", nan)) for r in rows]),
            "depth": torch.tensor([float(r.get("depth", nan)) for r in rows]),
            "node": [r.get("node") for r in rows],
            "attributes": [r.get("attributes") for r in rows],
        }

    def evaluate(self, args, inputs) -> Evaluation:
        cache, pool = load_with_pool(args, inputs, self.name)
        return Evaluation(evaluate_structure(cache, pool, **bootstrap_options(args)), cache)
