"""Scores that can be ranked: the one rule for NaN in a ranking, and the refusal of embeddings too large to score.

A NaN score ranks worst: below every number, ``-inf`` included (``torch.argmax`` would pick it, and a NaN
compared with ``>`` is never beaten, so a NaN right answer would count as a hit). Finite scores rank as before.
Embeddings whose squared norm overflows float32 (entries of about 1e19 and up) make every space's similarity
NaN, infinite, or a constant 0 (the sphere's normalisation divides by an infinite norm); they are refused.
"""

from __future__ import annotations

import numpy as np
import torch


def nan_as_worst(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` with NaN replaced by ``-inf`` (same shape), so that a ranking of the result puts NaN last; a
    right answer whose own score is NaN is ranked below everything by the callers."""
    return torch.where(torch.isnan(scores), torch.full_like(scores, float("-inf")), scores)


def require_scorable(source: str, **embeddings: torch.Tensor) -> None:
    """Raise ValueError (one line naming ``source`` and the tensor) when an embedding's norm overflows float32,
    i.e. its scores would be NaN/inf or meaningless; each value of ``embeddings`` is ``[..., D]``."""
    for name, x in embeddings.items():
        if x is None or not x.numel():
            continue
        norms = torch.linalg.vector_norm(x.float(), dim=-1)
        if not bool(torch.isfinite(norms).all()):
            largest = float(x.detach().abs().max())
            raise ValueError(
                f"{source}: {name} holds embeddings too large to score (largest |x| = {largest:.3g}; their squared "
                "norm overflows float32, so every similarity would be NaN, inf or 0); the model's weights are "
                "broken: retrain it with a lower optim.lr, then re-run `meru embed`"
            )


def require_finite_scores(scores: torch.Tensor, source: str, what: str) -> None:
    """Raise ValueError (one line) when any of ``scores`` is NaN or infinite."""
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        raise ValueError(
            f"{source}: {bad} of {scores.numel()} {what} scores are not finite (NaN/inf: the embeddings are too "
            "large or broken); retrain the model with a lower optim.lr, then re-run `meru embed`"
        )


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC ``= P(s_pos > s_neg) + 1/2 P(s_pos = s_neg)`` (Mann-Whitney U / (P N); equals the trapezoidal
    area of the ROC curve, sklearn's ``roc_auc_score``). scores ``[K]``, labels ``[K]`` (truthy = positive);
    NaN when a class is empty or a score is NaN. Exact: the negatives are sorted once and each positive counts the negatives
    below (``lt``) and not above (``le``) it; ``U = sum (lt + le) / 2`` in integers, divided once."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores).ravel()
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if n_pos == 0 or n_neg == 0 or np.isnan(s).any():
        return float("nan")
    neg = np.sort(s[~y])
    pos = s[y]
    twice_u = int(np.searchsorted(neg, pos, "left").sum()) + int(np.searchsorted(neg, pos, "right").sum())
    return twice_u / (2 * n_pos * n_neg)
