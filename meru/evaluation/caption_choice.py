"""Caption choice (SugarCrepe, ARO VG-Relation / VG-Attribution): the model's own similarity picks a caption.

Each item ``i`` is an image ``x_i`` with captions ``C_i`` (its true caption and ``k_i - 1 >= 1`` hard negatives,
:mod:`meru.data.caption_choice`). Every caption ``j`` in ``C_i`` is scored with the space's evaluation score,
``s_j = space.similarity(x_i, t_j)`` (:mod:`meru.spaces`: MERU the Lorentzian inner product ``<x, t>_L``,
EuCLIP ``-||x - t||^2``, CLIP the cosine), one call per item. clip-benchmark's ``image_caption_selection``
scores every model with the L2-normalised dot product, which for Lorentz embeddings is the cosine of the
space components: it ignores the time component and the norms, i.e. where on the hyperboloid a point is.

Ties: the captions with the highest score are ``T_i = {j : s_j = max_l s_l}`` (exactly equal float32 scores, e.g.
a negative that repeats the true caption). The item's credit is ``c_i = 1[true in T_i] / |T_i|``: 1 for a
clear win, ``1/|T_i|`` when the true caption shares the top score (the expected accuracy of picking among the
tied captions at random), 0 otherwise. (clip-benchmark's ``argmax`` puts the true caption first and so counts
a tie as right; ARO's puts it last and counts it as wrong.) Non-finite scores are refused.

Metrics (in %): ``acc = 100 mean_i c_i`` with a 95% percentile bootstrap interval over items
(:func:`meru.stats.bootstrap_ci`); for sets whose items have groups (ARO: relation or attribute pair)
``acc_macro`` = the mean over groups of the group's accuracy (ARO's macro accuracy over every group; ARO's
notebook further drops the groups it calls symmetric relations in VG-Relation and attribute pairs with < 25
items in VG-Attribution), with a bootstrap interval of the same statistic. Per item ``acc`` (``100 c_i``,
its mean is the metric: the tables' paired test) and ``choice`` (index within ``C_i`` of the first top-scoring
caption; 0 is the true one); details: ``chance`` (``100 mean_i 1/k_i``), ``n_ties``, ``n_captions``, ``n_groups``.
"""

from __future__ import annotations

import numpy as np
import torch

from meru.evaluation.ranking import require_finite_scores, require_scorable
from meru.evaluation.task import EmbedOptions, Evaluation, Task, bootstrap_options, load_test_cache
from meru.records import EmbeddingCache, Measurement
from meru.stats import bootstrap_ci


def item_scores(space, image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor) -> list:
    """Per item ``i`` the scores ``[k_i]`` of its captions (``text_to_image == i``, in caption order):
    ``space.similarity(image_emb[i], text_emb[C_i])``, one call per item."""
    return [
        space.similarity(image_emb[i : i + 1], text_emb[rows])[0]
        for i, rows in enumerate(_item_rows(text_to_image, len(image_emb)))
    ]


def _item_rows(text_to_image: torch.Tensor, n: int) -> list[torch.Tensor]:
    """Per item the indices of its captions, in caption order."""
    order = torch.argsort(text_to_image, stable=True)
    return list(torch.split(order, torch.bincount(text_to_image, minlength=n).tolist()))


def choice_credit(scores: torch.Tensor, truth: torch.Tensor) -> tuple[float, int, bool]:
    """``(credit, choice, tie)`` of one item: ``scores [k]``, ``truth [k]`` (1 at the true caption). Credit
    ``1[true in T] / |T|`` over the top-scoring set ``T`` (module doc); ``choice`` the first index in ``T``;
    ``tie``: ``|T| > 1``."""
    top = scores == scores.max()
    n_top = int(top.sum())
    credit = float(bool((top & truth.bool()).any())) / n_top
    return credit, int(top.nonzero()[0, 0]), n_top > 1


def macro_accuracy(credit: np.ndarray, groups: np.ndarray) -> float:
    """Mean over the groups present of each group's mean credit; ``credit [N]``, ``groups [N]`` integer ids."""
    sums = np.bincount(groups, weights=credit)
    counts = np.bincount(groups)
    present = counts > 0
    return float((sums[present] / counts[present]).mean())


def _group_ids(meta: list | None, n: int) -> np.ndarray | None:
    """Integer group id per item from each item's json ``group`` (None when no item has a group)."""
    groups = [m.get("group") if isinstance(m, dict) else None for m in (meta or [None] * n)]
    if all(g is None for g in groups):
        return None
    names = {g: i for i, g in enumerate(sorted({str(g) for g in groups}))}
    return np.array([names[str(g)] for g in groups], dtype=np.int64)


def evaluate_caption_choice(cache: EmbeddingCache, n_boot: int = 1000, seed: int = 0) -> Measurement:
    """Caption-choice accuracy of a cache (module doc) -> :class:`Measurement`."""
    cache.require("image_emb", "text_emb", "text_to_image", "caption_truth", what="a caption-choice embedding cache")
    require_scorable(cache.name, image_emb=cache.image_emb, text_emb=cache.text_emb)
    t2i, truth = cache.text_to_image.long(), cache.caption_truth.long()
    n = cache.image_emb.shape[0]
    per_true = torch.bincount(t2i[truth == 1], minlength=n)
    if bool((per_true != 1).any()) or bool((torch.bincount(t2i, minlength=n) < 2).any()):
        raise ValueError(
            f"{cache.name}: every item needs one true caption and at least one negative; re-run `meru embed`"
        )
    scores = item_scores(cache.space, cache.image_emb, cache.text_emb, t2i)
    require_finite_scores(torch.cat(scores), cache.name, "image-to-caption")
    outcomes = [choice_credit(sc, truth[rows]) for sc, rows in zip(scores, _item_rows(t2i, n))]
    credit = np.array([c for c, _, _ in outcomes])
    metrics = {"acc": 100.0 * float(credit.mean())}
    intervals = {"acc": [100.0 * v for v in bootstrap_ci(credit, n_boot=n_boot, seed=seed)]}
    groups = _group_ids(cache.meta, n)
    metrics["acc_macro"] = None if groups is None else 100.0 * macro_accuracy(credit, groups)
    if groups is not None:
        rows = np.stack([credit, groups], axis=1)
        lo_hi = bootstrap_ci(
            rows, lambda r: macro_accuracy(r[:, 0], r[:, 1].astype(np.int64)), n_boot=n_boot, seed=seed
        )
        intervals["acc_macro"] = [100.0 * v for v in lo_hi]
    k = np.array([len(s) for s in scores])
    return Measurement(
        metrics,
        intervals,
        n=n,
        per_item={"acc": (100.0 * credit).tolist(), "choice": [c for _, c, _ in outcomes]},
        details={
            "chance": 100.0 * float((1.0 / k).mean()),
            "n_ties": int(sum(t for _, _, t in outcomes)),
            "n_captions": int(k.sum()),
            "n_groups": None if groups is None else int(len(np.unique(groups))),
            "ties": "credit 1/|T| when the true caption is among the |T| top-scoring captions",
        },
    )


class CaptionChoiceTask(Task):
    """``caption-choice``: caption-choice caches get every item's captions (true first) with ``caption_truth``;
    evaluated by :func:`evaluate_caption_choice` (no clip-benchmark result: it scores by the dot product)."""

    name = "caption-choice"
    tables = ("caption_choice",)
    embeds = "caption-choice"

    def embed(self, model, evalset, images, options: EmbedOptions) -> dict:
        """Cache fields of a caption-choice ``EvalSet`` (:func:`meru.data.evalsets.open_caption_choice`)."""
        from meru.evaluation.encode import encode_texts
        from meru.progress import Progress

        choices = evalset.choices
        if images.keys != choices.keys:
            raise ValueError(f"{evalset.source}: images and captions are out of step; re-run `meru evalsets prepare`")
        progress = Progress(f"meru embed {evalset.name}", len(choices.texts), "captions")
        return {
            "meta": list(choices.meta),
            "texts": list(choices.texts),
            "text_emb": encode_texts(model, choices.texts, True, options.batch_size, options.amp, progress),
            "text_to_image": torch.tensor(choices.text_to_image, dtype=torch.long),
            "caption_truth": torch.tensor(choices.truth, dtype=torch.long),
        }

    def evaluate(self, args, inputs) -> Evaluation:
        cache = load_test_cache(args, "caption-choice")
        return Evaluation(evaluate_caption_choice(cache, **bootstrap_options(args)), cache)
