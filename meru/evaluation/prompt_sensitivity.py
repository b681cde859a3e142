"""Prompt sensitivity of zero-shot classification: the same classifier built from other template sets.

``meru embed`` stores, beside the eval set's own ``class_text_raw`` (unchanged), the raw projected text
features of the same class names under alternative template sets (cache field ``prompt_sets``)::

    "prompt_sets": {name: {"templates": [T'], "source": str, "class_text_raw": [T', C, D]}}

Template sets (:func:`template_sets`), for a dataset whose MERU name is ``m`` (``None`` for SynthHier):

* ``single``: ``["a photo of a {}."]``;
* ``meru``: MERU's ensemble for ``m`` (``meru/resources/meru_prompts.json``); SynthHier and datasets without
  one: MERU's ImageNet ensemble;
* ``clip_benchmark``: clip-benchmark's English templates for the dataset's clip-benchmark name (the package's
  ``en_zeroshot_classification_templates.json``, looked up as clip-benchmark does: the name, its part after
  ``vtab/`` or ``wds/``, then ``imagenet1k``); SynthHier and CUB: the ``imagenet1k`` list (80 templates).

Class names stay those of the eval set for every template set, so only the templates vary.
``meru evaluate --task prompts`` scores each set (plus ``evalset``, the cache's own templates) with the
zero-shot protocol of :mod:`meru.evaluation.zeroshot`.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import numpy as np

from meru.records import Measurement
from meru.stats import bootstrap_ci

SINGLE_TEMPLATE = "a photo of a {}."
SET_NAMES = ("single", "meru", "clip_benchmark")


@cache
def clip_benchmark_templates() -> dict[str, list[str]]:
    """clip-benchmark's packaged English zero-shot templates, ``{dataset: [template, ...]}``."""
    from clip_benchmark.datasets import builder

    path = Path(os.path.dirname(builder.__file__)) / "en_zeroshot_classification_templates.json"
    return json.loads(path.read_text())


def template_sets(dataset: str) -> dict[str, dict]:
    """``{name: {"templates": [...], "source": str}}`` of the alternative sets for ``dataset`` (see module doc).

    ``dataset``: the cache's dataset name (a MERU or clip-benchmark name, or an eval-set directory name
    such as SynthHier's ``zeroshot_shape``)."""
    from meru.data.evalsets import _meru_name_for, dataset_table, meru_prompts

    meru = _meru_name_for(dataset)
    mp = meru_prompts()["templates"]
    if meru is not None and meru in mp:
        meru_set = {"templates": list(mp[meru]), "source": f"meru_prompts.json:{meru}"}
    else:
        meru_set = {
            "templates": list(mp["imagenet"]),
            "source": "meru_prompts.json:imagenet (no MERU set for this dataset)",
        }
    cb_name = dataset_table()[meru]["clip_benchmark"] if meru is not None else dataset
    table = clip_benchmark_templates()
    keys = [] if cb_name is None else [cb_name, cb_name.split("/", 1)[-1]]
    key = next((k for k in keys if k in table), "imagenet1k")
    note = "" if key in keys else " (no clip-benchmark set for this dataset)"
    return {
        "single": {"templates": [SINGLE_TEMPLATE], "source": "single"},
        "meru": meru_set,
        "clip_benchmark": {"templates": list(table[key]), "source": f"clip_benchmark:{key}{note}"},
    }


def embed_prompt_sets(model, dataset: str, classnames: list[str], batch_size: int = 256) -> dict:
    """Cache field ``prompt_sets``: raw projected text features ``[T', C, D]`` of every alternative set."""
    from meru.evaluation.embed import class_text_raw

    out = {}
    for name, entry in template_sets(dataset).items():
        out[name] = {**entry, "class_text_raw": class_text_raw(model, classnames, entry["templates"], batch_size)}
    return out


def evaluate_prompts(cache: dict, n_boot: int = 1000, seed: int = 0) -> Measurement:
    """Zero-shot top-1 and mean per-class accuracy (%) under every template set of the cache.

    Metrics ``top1_<set>``, ``mean_per_class_<set>``, ``top1_spread`` (max − min of top-1 over the sets);
    details ``prompt_sets``: ``{set: {"n_templates", "source"}}``. Sets: ``evalset`` (the cache's own
    templates) and the cache's ``prompt_sets``."""
    from meru.evaluation.zeroshot import mean_per_class, zeroshot_scores

    if not cache.get("prompt_sets"):
        raise ValueError(
            f"{cache.get('path', 'cache')}: no prompt_sets in this embedding cache (made before "
            "prompt sensitivity existed, or not a zero-shot set); re-run `meru embed`"
        )
    labels = cache["labels"].long()
    lab = labels.numpy()
    sets = {
        "evalset": {
            "templates": cache["templates"],
            "source": "eval set templates",
            "class_text_raw": cache["class_text_raw"],
        }
    }
    sets.update(cache["prompt_sets"])
    metrics, intervals, info = {}, {}, {}
    for name, entry in sets.items():
        scores = zeroshot_scores({**cache, "class_text_raw": entry["class_text_raw"]})
        correct = (scores.argmax(1) == labels).numpy().astype(np.int64)
        top1 = 100.0 * float(correct.mean())
        mpc = 100.0 * mean_per_class(correct, lab)
        metrics[f"top1_{name}"] = top1
        metrics[f"mean_per_class_{name}"] = mpc
        intervals[f"top1_{name}"] = [100.0 * v for v in bootstrap_ci(correct, n_boot=n_boot, seed=seed)]
        info[name] = {"n_templates": len(entry["templates"]), "source": entry["source"]}
    tops = [metrics[f"top1_{name}"] for name in info]
    metrics["top1_spread"] = max(tops) - min(tops)
    return Measurement(metrics, intervals, n=len(lab), details={"prompt_sets": info})
