"""Prompt sensitivity of zero-shot classification: the same classifier built from other template sets.

``meru embed`` stores, beside the eval set's own ``class_text_raw`` (unchanged), the raw projected text
features of the same class names under alternative template sets (cache field ``prompt_sets``)::

    "prompt_sets": {name: {"templates": [T'], "source": str, "class_text_raw": [T', C, D]}}

Template sets: :func:`meru.data.evalsets.prompt_sets` (which sets exist for a dataset: ``single``,
``meru``, ``clip_benchmark``; the ``EvalSet`` carries them as ``prompt_sets``); this module encodes and
scores them.

Class names stay those of the eval set for every template set, so only the templates vary.
``meru evaluate --task prompts`` scores each set (plus ``evalset``, the cache's own templates) with the
zero-shot protocol of :mod:`meru.evaluation.zeroshot`.
"""

from __future__ import annotations

import numpy as np

from meru.evaluation.task import EmbedOptions, Evaluation, Task, bootstrap_options, load_test_cache
from meru.records import EmbeddingCache, Measurement, PromptSet
from meru.stats import bootstrap_ci


def embed_prompt_sets(model, sets: dict, classnames: list[str], batch_size: int = 256, amp: str = "auto") -> dict:
    """Cache field ``prompt_sets``: ``{name: {"templates", "source", "class_text_raw" [T', C, D]}}`` of every
    set in ``sets`` (``EvalSet.prompt_sets``: ``{name: {"templates", "source"}}``)."""
    from meru.evaluation.encode import class_text_raw

    out = {}
    for name, entry in (sets or {}).items():
        out[name] = {**entry, "class_text_raw": class_text_raw(model, classnames, entry["templates"], batch_size, amp)}
    return out


def evaluate_prompts(cache: EmbeddingCache, n_boot: int = 1000, seed: int = 0) -> Measurement:
    """Zero-shot top-1 and mean per-class accuracy (%) under every template set of the cache.

    Metrics ``top1_<set>``, ``mean_per_class_<set>``, ``top1_spread`` (max − min of top-1 over the sets);
    details ``prompt_sets``: ``{set: {"n_templates", "source"}}``. Sets: ``evalset`` (the cache's own
    templates) and the cache's ``prompt_sets``."""
    from meru.evaluation.zeroshot import mean_per_class, zeroshot_scores

    if not cache.prompt_sets:
        raise ValueError(
            f"{cache.name}: no prompt_sets in this embedding cache (made before "
            "prompt sensitivity existed, or not a zero-shot set); re-run `meru embed`"
        )
    cache.require("labels", "templates", "class_text_raw", what="a classification embedding cache")
    labels = cache.labels.long()
    lab = labels.numpy()
    sets = {"evalset": PromptSet(cache.templates, "eval set templates", cache.class_text_raw), **cache.prompt_sets}
    metrics, intervals, info = {}, {}, {}
    for name, entry in sets.items():
        scores = zeroshot_scores(cache, class_text_raw=entry.class_text_raw)
        correct = (scores.argmax(1) == labels).numpy().astype(np.int64)
        top1 = 100.0 * float(correct.mean())
        mpc = 100.0 * mean_per_class(correct, lab)
        metrics[f"top1_{name}"] = top1
        metrics[f"mean_per_class_{name}"] = mpc
        intervals[f"top1_{name}"] = [100.0 * v for v in bootstrap_ci(correct, n_boot=n_boot, seed=seed)]
        info[name] = {"n_templates": len(entry.templates), "source": entry.source}
    tops = [metrics[f"top1_{name}"] for name in info]
    metrics["top1_spread"] = max(tops) - min(tops)
    return Measurement(metrics, intervals, n=len(lab), details={"prompt_sets": info})


class PromptSensitivityTask(Task):
    """``prompts``: classification caches get the alternative template sets (``prompt_sets``; skipped with
    ``meru embed --no-prompt-sets``); evaluated by :func:`evaluate_prompts`. Its table is written by
    ``meru prompt-sensitivity`` (:mod:`meru.reporting.prompt_sensitivity`), not ``meru tables``."""

    name = "prompts"
    embeds = "classification"

    def embed(self, model, evalset, images, options: EmbedOptions) -> dict:
        if not options.prompt_sets:
            return {}
        sets = embed_prompt_sets(model, evalset.prompt_sets, list(evalset.classnames), options.batch_size, options.amp)
        return {"prompt_sets": sets}

    def evaluate(self, args, inputs) -> Evaluation:
        cache = load_test_cache(args, "classification")
        return Evaluation(evaluate_prompts(cache, **bootstrap_options(args)), cache)
