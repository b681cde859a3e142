"""`meru evaluate`: metrics from cached embeddings (see ``meru.evaluation.embed``) -> a metric record.

Tasks: the registry :data:`meru.evaluation.tasks.TASKS` (``zeroshot``, ``retrieval``, ``linear-probe``,
``structure``, ``traversal``, ``prompts``, ``hierarcaps``, ``caption-choice``); ``--task T`` runs
``TASKS[T].evaluate``, which reads its caches and returns a :class:`meru.records.Measurement`
(:class:`meru.evaluation.task.Evaluation`); this module adds the identity (:func:`identity`: ``kind``,
``model_name``, ``model_display``, ``size``, ``seed``, ``label``, ``dataset``, ``task``,
``geometry`` from :meth:`meru.spaces.Space.geometry`, so reporting labels axes without knowing model kinds)
and the input files (``provenance``) and writes the :class:`meru.records.MetricRecord` to ``--out M.json``
(atomically, strict JSON). Tasks that clip-benchmark also has (zero-shot, retrieval, linear-probe) also write
``M.clip_benchmark.json`` beside it, a result file that ``clip_benchmark build`` reads (``{"dataset", "model", "pretrained", "task",
"metrics", "language"}``; see :func:`clip_benchmark_record`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meru.evaluation.task import Evaluation
from meru.evaluation.tasks import TASKS
from meru.io import write_json
from meru.records import EmbeddingCache, MetricRecord, Provenance
from meru.runs import run_label
from meru.arguments import add_evaluate_arguments as add_arguments  # noqa: F401  (light: fast --help)


def identity(
    cache: EmbeddingCache, task: str, label: str | None = None, seed: int | None = None, size: str | None = None
) -> dict:
    """Identity fields of a metric record, from the cache (checkpoint) unless given (``--label``, ``--seed``,
    ``--size``; released checkpoints trained on other data get ``--size {size}-{data}`` from the workflow)."""
    seed = cache.seed if seed is None else seed
    size = cache.size if size is None else size
    seed = int(seed) if seed is not None else 0
    return {
        "kind": cache.kind,
        "model_name": cache.model_name,
        "model_display": cache.model_display,
        "size": size,
        "seed": seed,
        # an open_clip model has no training seed: no made-up "-s0" in its label
        "label": label or run_label(cache.model_name, size, None if _is_openclip(cache) else seed),
        "dataset": cache.dataset,
        "task": task,
        "geometry": cache.space.geometry(),
    }


def _is_openclip(cache: EmbeddingCache) -> bool:
    """Whether the cache embeds an open_clip model (``--checkpoint openclip:...``), which has no training seed."""
    return str(cache.checkpoint or "").startswith("openclip:")


def clip_benchmark_record(rec: MetricRecord, result: dict | None) -> dict | None:
    """A result file that ``clip_benchmark build`` reads: its keys (``dataset``, ``model``, ``pretrained``,
    ``task``, ``metrics``, ``language``), from the task's ``{"task", "metrics"}`` (None: the task has none).
    ``model`` is ``NAME-SIZE`` (the model name: its kind unless a variant) and ``pretrained`` the rest of the run label (``s0``, ``released``), like
    clip-benchmark's architecture / weights pair."""
    if result is None:
        return None
    model = f"{rec.model_name}-{rec.size}"
    label = rec.label
    pretrained = label[len(model) + 1 :] if label.startswith(model + "-") else label
    if label == model and str(rec.provenance.checkpoint or "").startswith("openclip:"):  # its weights, as cb does
        pretrained = Path(rec.provenance.checkpoint.split(":")[-1]).name
    return {
        "dataset": rec.dataset,
        "model": model,
        "pretrained": pretrained,
        "task": result["task"],
        "metrics": result["metrics"],
        "language": "en",
    }


def clip_benchmark_path(out: Path) -> Path:
    return out.with_name(
        out.name[:-5] + ".clip_benchmark.json" if out.name.endswith(".json") else out.name + ".clip_benchmark.json"
    )


def evaluate(args: argparse.Namespace) -> tuple[MetricRecord, dict | None]:
    """The metric record of ``args`` (task :data:`meru.evaluation.tasks.TASKS` ``[args.task]``) and the task's
    clip-benchmark result ``{"task", "metrics"}`` (None for tasks clip-benchmark does not have)."""
    if args.embeddings is None:
        raise ValueError("--embeddings EMB.pt is required")
    inputs = Provenance(embeddings=str(args.embeddings))
    result: Evaluation = TASKS[args.task].evaluate(args, inputs)
    inputs.checkpoint = result.cache.checkpoint
    who = identity(result.cache, args.task, args.label, args.seed, args.size)
    return MetricRecord.of(result.measurement, inputs, **who), result.clip_benchmark


def task_arguments() -> dict[str, dict]:
    """Flag -> argparse options of every task's own flags (``Task.arguments``), each flag once; a flag that two
    tasks declare differently is a programming error."""
    out: dict[str, dict] = {}
    for task in TASKS.values():
        for flag, options in task.arguments:
            if out.setdefault(flag, options) != options:
                raise ValueError(f"task {task.name} declares {flag} unlike another task: {options} vs {out[flag]}")
    return out


def run(args: argparse.Namespace) -> int:
    from meru.models.tensor_files import CheckpointError
    from meru.records import CLIP_BENCHMARK_SUFFIX

    if args.out.endswith(CLIP_BENCHMARK_SUFFIX):  # every reader would skip it as a clip-benchmark side file
        print(
            f"meru evaluate: --out {args.out}: a record may not end in {CLIP_BENCHMARK_SUFFIX}; name it NAME.json",
            file=sys.stderr,
        )
        return 2
    try:
        rec, cb_metrics = evaluate(args)
    except (FileNotFoundError, KeyError, ValueError, CheckpointError) as e:
        print(f"meru evaluate: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    cb = clip_benchmark_record(rec, cb_metrics)
    if cb is not None:  # side file first: M.json appearing last marks the evaluation finished
        write_json(clip_benchmark_path(out), cb, nonfinite="null")
    rec.write(out)
    shown = {k: round(float(v), 4) for k, v in rec.metrics.items() if isinstance(v, (int, float)) and v == v}
    print(f"meru evaluate: {args.task} {rec.dataset} ({rec.label}): {shown} -> {out}")
    return 0
