"""Image traversals toward [ROOT] (MERU paper, Section 5; official ``scripts/image_traversals.py``).

For an image embedding ``x`` and ``S`` steps, the path points are ``space.path_to_root(x, root, S)``
(:mod:`meru.spaces`), for ``t_k = k / (S - 1)`` (``k = 0`` is the image, ``k = S - 1`` the root):

* MERU: ``p_k = exp_0((1 - t_k) log_0(x))`` — linear interpolation to [ROOT] = the origin in the tangent
  space at the origin, lifted back onto the hyperboloid (a geodesic through the origin);
* EuCLIP: ``p_k = (1 - t_k) x``, the straight line to [ROOT] = the origin;
* CLIP: ``p_k = normalise((1 - t_k) x + t_k m)`` with [ROOT] ``m`` = the normalised mean caption embedding
  of the pool (the official script reads a stored root embedding; we use the pool mean, normalised so
  [ROOT] is a point of the sphere like every caption).

At each point the nearest caption of the pool plus [ROOT] is retrieved by ``space.similarity``
(MERU: Lorentzian inner product; EuCLIP: negative squared distance; CLIP: cosine). Spaces with entailment
cones (MERU, EuCLIP) only keep captions whose cone contains the point (``space.cone_violation_matrix <= 0``;
[ROOT] entails everything). As in the official script, a caption is listed only the first time it is retrieved.

:func:`traverse` returns ``{"images": [{"key", "steps": [{"t", "text", "specificity", "correct"}]}],
"summary": {...}}``, [ROOT] listed with ``specificity`` and ``correct`` null; :func:`evaluate_traversal` turns
it into the metric record's parts (metrics ``monotonic_frac``, ``precision``, ``mean_unique``; plot data
``paths`` = the images' listed captions and ``per_step`` = ``t``, ``mean_specificity``, ``root_frac``). Summary:
``monotonic_frac`` — over consecutive pairs of listed captions (excluding [ROOT]), the fraction where
specificity does not increase; ``precision`` — fraction of listed captions (excluding [ROOT]) that are
true of the image (``meta["true_captions"]``); ``mean_specificity_per_step`` — for each of the S points,
the mean specificity of the retrieved caption over images (null where all retrieved [ROOT]);
``root_frac_per_step``; ``mean_unique`` — mean number of listed captions per image.
"""

from __future__ import annotations

import numpy as np
import torch

from meru.evaluation.structure import TEXT_POOL_ARGUMENT, check_same_space, load_with_pool
from meru.evaluation.task import Evaluation, Task
from meru.records import EmbeddingCache, Measurement

ROOT_TEXT = "[ROOT]"
NEG = -1e12


def nearest_captions(space, points: torch.Tensor, pool_emb: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """``[S]`` index of the best caption for each point; index ``M`` (= len(pool)) is [ROOT]."""
    scores = space.similarity(points, pool_emb)  # [S, M]
    if space.has_cones:
        viol = space.cone_violation_matrix(pool_emb, points).T  # [S, M]
        scores = scores.masked_fill(viol > 0, NEG)
    root_score = space.similarity(points, root.view(1, -1))  # [ROOT] entails everything
    return torch.cat([scores, root_score], 1).argmax(1)


def traverse(cache: EmbeddingCache, pool: EmbeddingCache, steps: int = 50, max_images: int | None = None) -> dict:
    """Traversals of every image of ``cache`` (or the first ``max_images``) over the caption ``pool``."""
    space = check_same_space(cache, pool)
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    pool.require("texts", what="a caption-pool embedding cache")
    pool_emb = pool.text_emb.float()
    texts = list(pool.texts)
    m = len(texts)
    spec = pool.specificity
    spec = spec.double().numpy() if spec is not None else np.full(m, np.nan)
    root = space.root(pool_emb)
    x = cache.image_emb.float()
    n = x.shape[0] if max_images is None else min(max_images, x.shape[0])
    keys = cache.keys or [str(i) for i in range(x.shape[0])]
    meta = cache.meta or [None] * x.shape[0]
    ts = np.linspace(0.0, 1.0, steps)

    images, per_step = [], np.full((n, steps), np.nan)
    is_root = np.zeros((n, steps), dtype=bool)
    mono, prec = [], []
    for i in range(n):
        nn = nearest_captions(space, space.path_to_root(x[i], root, steps), pool_emb, root).tolist()
        truth = set(meta[i]["true_captions"]) if isinstance(meta[i], dict) and "true_captions" in meta[i] else None
        listed, seen = [], set()
        for k, j in enumerate(nn):
            if j == m:
                is_root[i, k] = True
            else:
                per_step[i, k] = spec[j]
            if j in seen:
                continue
            seen.add(j)
            if j == m:
                listed.append({"t": float(ts[k]), "text": ROOT_TEXT, "specificity": None, "correct": None})
            else:
                s = float(spec[j]) if np.isfinite(spec[j]) else None
                listed.append(
                    {
                        "t": float(ts[k]),
                        "text": texts[j],
                        "specificity": s,
                        "correct": None if truth is None else (j in truth),
                    }
                )
        caps = [e for e in listed if e["text"] != ROOT_TEXT]
        sp = [e["specificity"] for e in caps]
        mono.extend(float(b <= a) for a, b in zip(sp, sp[1:]) if a is not None and b is not None)
        prec.extend(float(e["correct"]) for e in caps if e["correct"] is not None)
        images.append({"key": str(keys[i]), "steps": listed})

    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(per_step), 0)
        means = np.where(counts > 0, np.nansum(per_step, 0) / np.maximum(counts, 1), np.nan)
    summary = {
        "n_images": n,
        "steps": steps,
        "t": ts.tolist(),
        "monotonic_frac": float(np.mean(mono)) if mono else None,
        "precision": float(np.mean(prec)) if prec else None,
        "mean_unique": float(np.mean([len(im["steps"]) for im in images])) if images else None,
        "mean_specificity_per_step": [float(v) if np.isfinite(v) else None for v in means],
        "root_frac_per_step": is_root.mean(0).tolist() if n else [None] * steps,
        "root": space.root_name,
    }
    return {"images": images, "summary": summary}


def evaluate_traversal(cache: dict, pool: dict, steps: int = 50, max_images: int | None = None) -> Measurement:
    """:func:`traverse` as a metric record's parts (module doc); ``n`` = the number of images traversed."""
    out = traverse(cache, pool, steps=steps, max_images=max_images)
    s = out["summary"]
    return Measurement(
        {k: s[k] for k in ("monotonic_frac", "precision", "mean_unique")},
        n=int(s["n_images"]),
        plot={
            "paths": out["images"],
            "per_step": {
                "t": s["t"],
                "mean_specificity": s["mean_specificity_per_step"],
                "root_frac": s["root_frac_per_step"],
            },
        },
        details={"steps": int(s["steps"]), "root": s["root"]},
    )


class TraversalTask(Task):
    """``traversal``: reads an image cache and the caption pool embedded for ``structure``; ``--steps`` points
    per path, ``--max-images`` the first N images (:func:`evaluate_traversal`)."""

    name = "traversal"
    tables = ("traversal",)
    arguments = (
        TEXT_POOL_ARGUMENT,
        ("--steps", {"type": int, "default": 50, "help": "traversal: points from image to [ROOT]"}),
        ("--max-images", {"type": int, "help": "traversal: only the first N images"}),
    )

    def evaluate(self, args, inputs) -> Evaluation:
        cache, pool = load_with_pool(args, inputs, self.name)
        return Evaluation(evaluate_traversal(cache, pool, steps=args.steps, max_images=args.max_images), cache)
