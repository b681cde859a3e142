"""HierarCaps evaluation (Alper & Averbuch-Elor, ECCV 2024): does distance from [ROOT] order captions by
specificity, and does it support retrieving a caption hierarchy for an image?

Data: H hierarchies of 4 captions (level 0 general .. 3 specific) over M images (an image may have
several hierarchies); caption k = (hierarchy h, level l) is row ``4 h + l`` of ``text_emb [4H, D]``, and
``text_to_image [4H]`` its image. All geometry goes through the cache's space (``cache.space``, :mod:`meru.spaces`):
``r_k = space.root_distance(text_emb, root)`` with ``root`` = the embedding of the empty caption (MERU:
ignored, the origin is the root; CLIP: the angle to it), ``s(i, k) = space.similarity`` (MERU:
Lorentzian inner product; CLIP: cosine).

* ``depth_tau``: per hierarchy, Kendall tau-b between ``(r_{4h}, .., r_{4h+3})`` and levels ``(0, 1, 2, 3)``;
  mean over hierarchies where it is defined (not all four distances equal). Ties are not broken.
* Hierarchical retrieval (``steps`` thresholds ``t_1 < .. < t_S`` evenly spaced from min r to max r): for
  image i and threshold t, the prediction is ``argmax_{k: r_k <= t} s(i, k)`` (lowest index among equal
  scores); the sequence of predicted caption strings with adjacent repeats removed is P_i; G_i = the caption
  strings of i's hierarchies. ``hr_precision`` = |set(P_i) ∩ G_i| / |set(P_i)|; ``hr_recall`` = fraction of
  levels l with some hierarchy of i whose level-l caption is in P_i; ``order_recall`` = (longest run of
  strictly increasing consecutive levels in P_i, after mapping each caption in G_i to its level in the first
  hierarchy of i holding it and removing adjacent repeats) / 4, 0 if P_i ∩ G_i is empty. Means over images.
* Entailment: positives = every (caption k, its image), 4H pairs; negatives = ``n_negatives`` pairs (k, j)
  drawn uniformly without replacement (numpy PCG64, ``negative_seed``) among images j that are not k's image
  and whose own captions do not include k's string. Scores: ``similarity`` (s) and, where the space defines
  cones, ``cone`` (1 if j lies in k's entailment cone, else 0). ``entail_ap``/``entail_auroc`` (and
  ``entail_cone_*``) are computed tie-aware: AP = sum_m (R_m - R_{m-1}) P_m over the *distinct* score
  thresholds (sklearn's definition; equal scores enter together), AUROC = P(s_pos > s_neg) + 1/2 P(=)
  (Mann-Whitney with average ranks). Tie diagnostics per score: number of distinct scores, share of the modal
  score among all pairs, share of positive-negative pairs tied, and AP when ties are broken in favour of
  positives (optimistic) or of negatives (pessimistic).

Intervals: percentile bootstrap (:func:`meru.stats.bootstrap_ci`) over images: for tau the hierarchies of one
image are resampled together (:func:`meru.stats.cluster_bootstrap_ci`), for retrieval the images; AP/AUROC over
scored pairs (at most 200 resamples).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from meru.evaluation.ranking import auroc
from meru.evaluation.task import EmbedOptions, Evaluation, Task, bootstrap_options, load_test_cache
from meru.records import EmbeddingCache, Measurement
from meru.stats import bootstrap_ci, cluster_bootstrap_ci

LEVELS = 4


# ----------------------------------------------------------------------------- depth


def depth_tau(radii: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each row of ``radii [H, L]`` against levels ``0..L-1``; NaN where all are equal.

    With x = levels (no ties) and y = radii: tau_b = (C - D) / sqrt(n0 (n0 - T_y)), n0 = L(L-1)/2,
    C/D = concordant/discordant pairs, T_y = pairs with equal radii."""
    radii = np.asarray(radii, dtype=np.float64)
    n_lev = radii.shape[1]
    i, j = np.triu_indices(n_lev, k=1)
    sign = np.sign(radii[:, j] - radii[:, i])  # levels increase from i to j
    n0 = len(i)
    tied = (sign == 0).sum(1)
    denom = np.sqrt(n0 * (n0 - tied).astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tied < n0, sign.sum(1) / np.where(denom > 0, denom, 1.0), np.nan)


# ----------------------------------------------------------------------------- hierarchical retrieval


def _longest_increasing_run(levels: list[int]) -> int:
    dedup = [v for n, v in enumerate(levels) if n == 0 or v != levels[n - 1]]
    best = run = 1
    for a, b in itertools.pairwise(dedup):
        run = run + 1 if b > a else 1
        best = max(best, run)
    return best


def hierarchical_retrieval(
    scores: torch.Tensor,
    radii: torch.Tensor,
    texts: list[str],
    image_hierarchies: list[list[list[str]]],
    steps: int = 50,
) -> dict:
    """Per-image ``hr_precision``, ``hr_recall``, ``order_recall`` and the predicted sequences (module doc).

    scores: ``[M, K]`` similarity of every image to every caption; radii: ``[K]`` distance from [ROOT];
    texts: ``[K]`` caption strings; image_hierarchies[i]: the 4-caption hierarchies of image i."""
    radii = radii.double()
    thresholds = torch.linspace(float(radii.min()), float(radii.max()), steps, dtype=torch.float64)
    thresholds[-1] = radii.max()  # the last threshold admits every caption (no rounding loss)
    preds = []
    for t in thresholds:
        masked = torch.where((radii <= t)[None, :], scores.double(), torch.tensor(-torch.inf, dtype=torch.float64))
        preds.append(masked.argmax(1))  # first (lowest-index) maximum
    preds = torch.stack(preds, 1).numpy()  # [M, steps]
    out = {"hr_precision": [], "hr_recall": [], "order_recall": [], "predictions": []}
    for i, hiers in enumerate(image_hierarchies):
        seq = []
        for k in preds[i]:
            if not seq or seq[-1] != texts[k]:
                seq.append(texts[k])
        gts = {c for h in hiers for c in h}
        found = set(seq)
        out["hr_precision"].append(len(found & gts) / max(1, len(found)))
        out["hr_recall"].append(float(np.mean([any(h[lv] in found for h in hiers) for lv in range(LEVELS)])))
        level_of = {}
        for h in hiers:
            for lv, c in enumerate(h):
                level_of.setdefault(c, lv)
        seq_levels = [level_of[c] for c in seq if c in level_of]
        out["order_recall"].append(_longest_increasing_run(seq_levels) / LEVELS if seq_levels else 0.0)
        out["predictions"].append(seq)
    return out


# ----------------------------------------------------------------------------- tie-aware AP / AUROC


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Tie-aware AP: sum over distinct thresholds (descending) of (R_m - R_{m-1}) P_m."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each group of equal scores
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _ap_ordered(scores: np.ndarray, labels: np.ndarray, positives_first: bool) -> float:
    """AP with ties broken for (``positives_first``) or against the positives (not tie-aware)."""
    y = np.asarray(labels).astype(bool)
    order = np.lexsort((~y if positives_first else y, -np.asarray(scores, dtype=np.float64)))
    y = y[order]
    hits = np.cumsum(y)
    return float(np.sum((hits / np.arange(1, len(y) + 1))[y]) / max(1, y.sum()))


def tie_diagnostics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """``n_distinct``, ``modal_share`` (share of pairs with the most frequent score), ``tied_pos_neg_share``
    (share of positive-negative pairs with equal scores), ``ap_optimistic``, ``ap_pessimistic``."""
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    pos = np.bincount(inverse[y], minlength=len(values))
    neg = counts - pos
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return {
        "n_distinct": len(values),
        "modal_share": float(counts.max() / len(scores)),
        "tied_pos_neg_share": float((pos * neg).sum() / max(1, n_pos * n_neg)),
        "ap_optimistic": _ap_ordered(scores, y, True),
        "ap_pessimistic": _ap_ordered(scores, y, False),
    }


def _ap_rows(rows: np.ndarray) -> float:
    return average_precision(rows[:, 0], rows[:, 1])


def _auroc_rows(rows: np.ndarray) -> float:
    return auroc(rows[:, 0], rows[:, 1])


def sample_negatives(text_to_image: np.ndarray, texts: list[str], image_hierarchies, n: int, seed: int) -> np.ndarray:
    """``[n', 2]`` (caption, image) pairs, n' = min(n, available), uniform without replacement (module doc)."""
    k_count, m_count = len(texts), len(image_hierarchies)
    valid = np.ones((k_count, m_count), dtype=bool)
    valid[np.arange(k_count), text_to_image] = False
    where = {}
    for j, hiers in enumerate(image_hierarchies):
        for c in {c for h in hiers for c in h}:
            where.setdefault(c, []).append(j)
    for k, c in enumerate(texts):
        valid[k, where.get(c, [])] = False
    flat = np.flatnonzero(valid.ravel())
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(flat, size=min(n, len(flat)), replace=False))
    return np.stack([pick // m_count, pick % m_count], 1)


def _cone_scores(
    space, text: torch.Tensor, image: torch.Tensor, pairs: np.ndarray, chunk: int = 16
) -> np.ndarray | None:
    """1.0 where image ``pairs[:, 1]`` lies in caption ``pairs[:, 0]``'s cone; None if the space has no cones."""
    out = np.zeros(len(pairs))
    captions = np.unique(pairs[:, 0])
    try:
        for s in range(0, len(captions), chunk):
            ks = captions[s : s + chunk]
            inside = space.entails(text[torch.as_tensor(ks)], image).numpy()  # [c, M]
            rows = np.searchsorted(ks, pairs[:, 0])
            sel = np.isin(pairs[:, 0], ks)
            out[sel] = inside[rows[sel], pairs[sel, 1]]
    except NotImplementedError:
        return None
    return out


# ----------------------------------------------------------------------------- all metrics


def _hierarchies_of(cache: EmbeddingCache) -> tuple[list[str], np.ndarray, list[list[list[str]]]]:
    """``texts [4H]``, ``text_to_image [4H]`` and each image's caption hierarchies, checked 4 rows apiece."""
    cache.require("image_emb", "texts", "text_emb", "text_to_image", what="a HierarCaps embedding cache")
    texts = list(cache.texts)
    t2i = cache.text_to_image.long().numpy()
    if cache.text_emb.shape[0] % LEVELS or len(texts) != cache.text_emb.shape[0] or len(t2i) != len(texts):
        raise ValueError(
            f"{cache.name}: texts, text_emb and text_to_image must have 4 rows per hierarchy; re-run `meru embed`"
        )
    hierarchies = [[] for _ in range(cache.image_emb.shape[0])]
    for h in range(len(texts) // LEVELS):
        hierarchies[int(t2i[LEVELS * h])].append(texts[LEVELS * h : LEVELS * (h + 1)])
    return texts, t2i, hierarchies


def _depth_part(radii: torch.Tensor, images: np.ndarray, n_boot: int, seed: int) -> tuple[dict, dict, dict, np.ndarray]:
    """``depth_tau`` (metric, interval over images: hierarchies ``[H]`` of image ``images[h]`` resampled together),
    its tie diagnostics and the per-hierarchy taus."""
    n_h = len(images)
    r2 = radii.double().numpy().reshape(n_h, LEVELS)
    tau = depth_tau(r2)
    ok = ~np.isnan(tau)
    defined = tau[ok]
    ties = {
        "undefined_hierarchies": int(np.isnan(tau).sum()),
        "tied_hierarchies_share": float(np.mean([len(np.unique(r)) < LEVELS for r in r2])),
        "n_distinct_radii": len(np.unique(r2)),
    }
    metrics = {"depth_tau": float(defined.mean()) if len(defined) else None}
    ci = cluster_bootstrap_ci(defined, images[ok], n_boot=n_boot, seed=seed) if len(defined) else None
    intervals = {"depth_tau": list(ci)} if ci else {}
    return metrics, intervals, ties, tau


def _retrieval_part(scores, radii, texts, hierarchies, steps: int, n_boot: int, seed: int):
    """Hierarchical retrieval metrics and intervals (per image), and the per-image values."""
    ret = hierarchical_retrieval(scores, radii, texts, hierarchies, steps)
    metrics, intervals = {}, {}
    for name in ("hr_precision", "hr_recall", "order_recall"):
        vals = np.asarray(ret[name])
        metrics[name] = float(vals.mean())
        intervals[name] = list(bootstrap_ci(vals, n_boot=n_boot, seed=seed))
    return metrics, intervals, ret


def _entailment_part(variants: dict, labels: np.ndarray, n_boot: int, seed: int) -> tuple[dict, dict, dict]:
    """AP / AUROC with intervals and tie diagnostics of each score variant (None: the space has no cones)."""
    metrics, intervals, ties = {}, {}, {}
    for prefix, sc in variants.items():
        if sc is None:
            ties[prefix] = None  # the space defines no entailment cones (e.g. CLIP's sphere)
            continue
        metrics[f"{prefix}_ap"] = average_precision(sc, labels)
        metrics[f"{prefix}_auroc"] = auroc(sc, labels)
        rows = np.stack([sc, labels], 1)
        intervals[f"{prefix}_ap"] = list(bootstrap_ci(rows, statistic=_ap_rows, n_boot=n_boot, seed=seed))
        intervals[f"{prefix}_auroc"] = list(bootstrap_ci(rows, statistic=_auroc_rows, n_boot=n_boot, seed=seed))
        ties[prefix] = tie_diagnostics(sc, labels)
    return metrics, intervals, ties


def evaluate_hierarcaps(
    cache: EmbeddingCache,
    n_boot: int = 1000,
    seed: int = 0,
    steps: int = 50,
    n_negatives: int = 100_000,
    negative_seed: int = 0,
    n_boot_pairs: int = 200,
) -> Measurement:
    """HierarCaps metrics from a ``task == "hierarcaps"`` cache (module doc); per item ``hr_precision``,
    ``hr_recall``, ``order_recall`` (per image) and ``depth_tau`` (per hierarchy); details ``n_hierarchies``,
    ``n_positives``, ``n_negatives``, ``steps``, ``negative_seed``, ``ties``. AP/AUROC intervals use ``min(n_boot, n_boot_pairs)``
    resamples of the ~10^5 scored pairs (each resample sorts them; the index matrix is B x pairs)."""
    texts, t2i, hierarchies = _hierarchies_of(cache)
    space = cache.space
    text, image = cache.text_emb.float(), cache.image_emb.float()
    n_h, n_img = text.shape[0] // LEVELS, image.shape[0]
    root = cache.root_emb
    radii = space.root_distance(text, root=None if root is None else root.float().reshape(-1))

    metrics, intervals, depth_ties, tau = _depth_part(radii, t2i[::LEVELS], n_boot, seed)
    scores = torch.cat([space.similarity(image[s : s + 1024], text) for s in range(0, n_img, 1024)])  # [M, K]
    m, i, ret = _retrieval_part(scores, radii, texts, hierarchies, steps, n_boot, seed)
    metrics.update(m)
    intervals.update(i)

    neg = sample_negatives(t2i, texts, hierarchies, n_negatives, negative_seed)
    pos = np.stack([np.arange(len(texts)), t2i], 1)
    pairs = np.concatenate([pos, neg])
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    variants = {
        "entail": scores.double().numpy()[pairs[:, 1], pairs[:, 0]],
        "entail_cone": _cone_scores(space, text, image, pairs),
    }
    m, i, ties = _entailment_part(variants, labels, min(n_boot, n_boot_pairs), seed)
    metrics.update(m)
    intervals.update(i)
    return Measurement(
        metrics,
        intervals,
        n=int(n_img),
        per_item={
            "hr_precision": ret["hr_precision"],
            "hr_recall": ret["hr_recall"],
            "order_recall": ret["order_recall"],
            "depth_tau": [None if np.isnan(v) else float(v) for v in tau],
        },
        details={
            "n_hierarchies": int(n_h),
            "n_positives": len(pos),
            "n_negatives": len(neg),
            "steps": int(steps),
            "negative_seed": int(negative_seed),
            "ties": {"depth": depth_ties, **ties},
        },
    )


class HierarCapsTask(Task):
    """``hierarcaps``: HierarCaps caches get all 4H captions with their levels, image rows and hierarchy ids,
    and the empty caption's embedding as [ROOT]; evaluated by :func:`evaluate_hierarcaps`."""

    name = "hierarcaps"
    embeds = "hierarcaps"

    def embed(self, model, evalset, images, options: EmbedOptions) -> dict:
        """Cache fields of a HierarCaps ``EvalSet`` (:func:`meru.data.evalsets.open_hierarcaps`): images as read
        (resize + centre crop, as HierarCaps' CLIP processor), all 4H captions, and the empty caption as [ROOT]."""
        from meru.evaluation.encode import encode_texts

        hier = evalset.hierarchies
        if images.keys != hier.keys:
            raise ValueError(
                f"{evalset.source}: images and caption hierarchies are out of step; re-run `meru evalsets prepare`"
            )
        return {
            "keys": list(hier.keys),
            "meta": list(hier.meta),
            "texts": list(hier.texts),
            "text_emb": encode_texts(model, hier.texts, True, options.batch_size, options.amp),
            "levels": torch.tensor(hier.levels, dtype=torch.long),
            "text_to_image": torch.tensor(hier.text_to_image, dtype=torch.long),
            "hierarchy_ids": list(hier.hierarchy_ids),
            "root_emb": encode_texts(model, [""], True, 1, options.amp),
        }

    def evaluate(self, args, inputs) -> Evaluation:
        cache = load_test_cache(args, "hierarcaps")
        return Evaluation(evaluate_hierarcaps(cache, **bootstrap_options(args)), cache)
