"""Linear probe on frozen pre-projection image features (CLIP / MERU protocol).

A multinomial logistic regression (``sklearn.linear_model.LogisticRegression(C, max_iter=1000,
random_state=0)``) is trained on the train-set features. The inverse regularisation ``C`` is chosen
on a validation split: by default carved from the train embeddings (``val_fraction``, stratified, seed 0);
given a validation cache (``--val-embeddings``: the dataset's own ``val`` split, as the official MERU evaluator
does where the dataset has one; ``evaluation.linear_probe_val: dataset``, docs/DEVIATIONS.md), the probe fits on
all of train and is scored on it. The search follows the official evaluator (after CLIP): first pass over ``C in {1e-6, 1e-4, 1e-2, 1, 1e2, 1e4, 1e6}``;
then 4 refinement steps that try ``C_best / delta`` and ``C_best * delta`` with ``delta = 10, 10^(1/2),
10^(1/4), 10^(1/8)`` (binary search in log space). Selection criterion: validation mean per-class
accuracy (torchmetrics' macro ``MulticlassAccuracy``, what the official code uses); strict improvement
is needed to move. The final classifier is refit on train + validation (with a carved slice: all of
train) with the chosen C and scored on the test embeddings: ``top1`` and ``mean_per_class`` (in %).

The fits run with BLAS/OpenMP limited to one thread (threadpoolctl): on these small problems
(thousands x hundreds) a multi-threaded BLAS only adds synchronisation; on the 2-vCPU developers' machine
one L-BFGS fit at C = 100 took 10.1 s with 2 threads and 0.6 s with 1, with the same iterates.
"""

from __future__ import annotations

import warnings

import numpy as np

from meru.evaluation.task import Evaluation, Task, bootstrap_options, load_test_cache
from meru.records import EmbeddingCache, Measurement
from meru.stats import bootstrap_ci
from meru.evaluation.zeroshot import _mpc_rows, mean_per_class

FIRST_PASS = (1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6)


def _fit(x, y, cost: float, max_iter: int = 1000):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from threadpoolctl import threadpool_limits

    clf = LogisticRegression(C=cost, max_iter=max_iter, random_state=0)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    return clf


def split_train_val(y: np.ndarray, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, val): stratified when every class has >= 2 items, else a plain random split."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    counts = np.bincount(y)
    strat = y if counts[counts > 0].min() >= 2 else None
    try:
        return train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=strat)
    except ValueError:  # too few items per class for the requested split
        return train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=None)


def search_cost(x_tr, y_tr, x_val, y_val, max_iter: int = 1000) -> tuple[float, float, list]:
    """Two-pass cost search (module doc). Returns (best C, its validation score, [(C, score), ...])."""
    history = []

    def score(cost):
        pred = _fit(x_tr, y_tr, cost, max_iter).predict(x_val)
        s = mean_per_class((pred == y_val).astype(np.float64), y_val)
        history.append((float(cost), float(s)))
        return s

    best_c, best = -1.0, -1.0
    for c in FIRST_PASS:
        s = score(c)
        if s > best:
            best_c, best = c, s
    delta = 10.0
    for _ in range(4):
        for c in (best_c / delta, best_c * delta):
            s = score(c)
            if s > best:
                best_c, best = c, s
        delta = delta**0.5
    return float(best_c), float(best), history


def _features(cache: EmbeddingCache) -> tuple[np.ndarray, np.ndarray]:
    """``(image_feats [N, W] float32, labels [N] int64)`` of a classification cache."""
    return cache.image_feats.float().numpy(), cache.labels.long().numpy()


def _check_val_cache(train_cache: EmbeddingCache, val_cache: EmbeddingCache, width: int) -> None:
    """A validation cache must be of the train set's classes (same names, same order) and feature width."""
    val_cache.require("image_feats", "labels", what="a classification embedding cache")
    if val_cache.image_feats.shape[1] != width:
        raise ValueError(f"validation features have width {val_cache.image_feats.shape[1]} but train features {width}")
    if val_cache.classnames != train_cache.classnames:
        raise ValueError(
            f"the validation cache ({val_cache.dataset}) has other class names than the train cache "
            f"({train_cache.dataset}): embed the val split of the probe's own dataset"
        )


def evaluate_linear_probe(
    train_cache: EmbeddingCache,
    test_cache: EmbeddingCache,
    val_fraction: float = 0.2,
    n_boot: int = 1000,
    seed: int = 0,
    max_iter: int = 1000,
    val_cache: EmbeddingCache | None = None,
) -> Measurement:
    """Fit the probe on ``train_cache`` (with C search on a ``val_fraction`` slice of it, or on ``val_cache``
    when given) and score it on ``test_cache``. Per item: ``correct``, ``pred``, ``label``; details: ``n_train``,
    ``validation`` (``slice`` / ``dataset``), ``n_val``, ``cost`` (chosen C), ``val_mean_per_class`` (%),
    ``cost_search``."""
    for c in (train_cache, test_cache):
        c.require("image_feats", "labels", what="a classification embedding cache")
    x, y = _features(train_cache)
    xt, yt = _features(test_cache)
    if x.shape[1] != xt.shape[1]:
        raise ValueError(f"train features have width {x.shape[1]} but test features {xt.shape[1]}: different models?")
    if val_cache is None:
        tr, va = split_train_val(y, val_fraction)
        x_tr, y_tr, x_val, y_val = x[tr], y[tr], x[va], y[va]
        x_fit, y_fit = x, y
    else:
        _check_val_cache(train_cache, val_cache, x.shape[1])
        (x_tr, y_tr), (x_val, y_val) = (x, y), _features(val_cache)
        x_fit, y_fit = np.concatenate([x, x_val]), np.concatenate([y, y_val])
    best_c, best_val, history = search_cost(x_tr, y_tr, x_val, y_val, max_iter)
    clf = _fit(x_fit, y_fit, best_c, max_iter)
    pred = clf.predict(xt)
    correct = (pred == yt).astype(np.int64)
    metrics = {"top1": 100.0 * correct.mean(), "mean_per_class": 100.0 * mean_per_class(correct, yt)}
    intervals = {
        "top1": [100.0 * v for v in bootstrap_ci(correct, n_boot=n_boot, seed=seed)],
        "mean_per_class": [
            100.0 * v for v in bootstrap_ci(np.stack([correct, yt], 1), statistic=_mpc_rows, n_boot=n_boot, seed=seed)
        ],
    }
    return Measurement(
        metrics,
        intervals,
        n=int(len(yt)),
        per_item={"correct": correct.tolist(), "pred": pred.tolist(), "label": yt.tolist()},
        details={
            "n_train": int(len(y)),
            "validation": "slice" if val_cache is None else "dataset",
            "n_val": int(len(y_val)),
            "cost": best_c,
            "val_mean_per_class": 100.0 * best_val,
            "cost_search": [{"C": c, "val_mean_per_class": 100.0 * s} for c, s in history],
        },
    )


class LinearProbeTask(Task):
    """``linear-probe``: reads two classification caches (their ``image_feats`` and ``labels``, embedded for
    zero-shot): ``--train-embeddings`` fits the probe, ``--embeddings`` scores it (:func:`evaluate_linear_probe`).
    Its clip-benchmark result has keys of its own (``linear_probe_logreg``): the method differs from
    clip-benchmark's torch weight-decay sweep, so merged tables never mix the two."""

    name = "linear-probe"
    tables = ("linear_probe",)
    arguments = (
        ("--train-embeddings", {"help": "linear-probe: embedding cache of the probe's training set"}),
        (
            "--val-embeddings",
            {
                "help": "linear-probe: embedding cache of the dataset's val split, on which C is chosen "
                "(default: a stratified 20%% slice of the training set)"
            },
        ),
    )

    def evaluate(self, args, inputs) -> Evaluation:
        if args.train_embeddings is None:
            raise ValueError(
                "--task linear-probe needs --train-embeddings TRAIN.pt (features of the probe's training set)"
            )
        train = EmbeddingCache.load(args.train_embeddings, "classification")
        cache = load_test_cache(args, "classification")
        val_path = getattr(args, "val_embeddings", None)
        val = EmbeddingCache.load(val_path, "classification") if val_path else None
        res = evaluate_linear_probe(train, cache, val_cache=val, **bootstrap_options(args))
        inputs.train_embeddings = str(args.train_embeddings)
        if val_path:
            inputs.val_embeddings = str(val_path)
        m = res.metrics
        cb = {"logreg_acc1": m["top1"] / 100, "logreg_mean_per_class_recall": m["mean_per_class"] / 100}
        return Evaluation(res, cache, {"task": "linear_probe_logreg", "metrics": cb})
