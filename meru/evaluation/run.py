"""`meru evaluate`: metrics from cached embeddings (see ``meru.evaluation.embed``) -> a metric record.

Tasks: ``zeroshot``, ``retrieval``, ``linear-probe``, ``structure``, ``traversal``, ``prompts`` (zero-shot
accuracy per template set, :mod:`meru.evaluation.prompt_sensitivity`), ``hierarcaps``
(:mod:`meru.evaluation.hierarcaps`). Every evaluator returns a :class:`meru.records.Measurement`; this module
adds the identity (:func:`identity`: ``kind``, ``size``, ``seed``, ``label``, ``dataset``, ``task``,
``geometry`` from :meth:`meru.spaces.Space.geometry`, so reporting labels axes without knowing model kinds)
and the input files (``provenance``) and writes the :class:`meru.records.MetricRecord` to ``--out M.json``
(atomically, strict JSON). Zero-shot, retrieval and linear-probe also write ``M.clip_benchmark.json`` beside
it, a result file that ``clip_benchmark build`` reads (``{"dataset", "model", "pretrained", "task",
"metrics", "language"}``; see :func:`clip_benchmark_record`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meru.arguments import add_evaluate_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru.io import write_json
from meru.records import EmbeddingCache, MetricRecord, Provenance

TASKS = ("zeroshot", "retrieval", "linear-probe", "structure", "traversal", "prompts", "hierarcaps")


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
        "size": size,
        "seed": seed,
        "label": label or f"{cache.kind}-{size}-s{seed}",
        "dataset": cache.dataset,
        "task": task,
        "geometry": cache.space.geometry(),
    }


CB_RECALL_KS = (1, 5, 10)


def clip_benchmark_accuracy(logits, target, topk=(1,)) -> list[float]:
    """clip-benchmark's ``accuracy``: fraction of rows whose target is among ``torch.topk(logits, k)`` (its
    tie order). Its own function cannot run under numpy 2 (``float()`` of a 1-element array), so this
    is the same computation ending in ``.item()``."""
    pred = logits.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


def clip_benchmark_zeroshot(cache: EmbeddingCache) -> dict:
    """clip-benchmark's zero-shot classification metrics, computed its way (its top-k ``accuracy`` on the
    ``[N, C]`` scores, scikit-learn's ``balanced_accuracy_score`` of the argmax); ``acc5`` is NaN when the
    dataset has fewer than 5 classes, as clip-benchmark writes it (our strict JSON stores it as ``null``)."""
    from sklearn.metrics import balanced_accuracy_score

    from meru.evaluation.zeroshot import zeroshot_scores

    logits, target = zeroshot_scores(cache), cache.labels.long()
    if logits.shape[1] >= 5:
        acc1, acc5 = clip_benchmark_accuracy(logits, target, topk=(1, 5))
    else:
        (acc1,), acc5 = clip_benchmark_accuracy(logits, target, topk=(1,)), float("nan")
    pred = logits.argmax(1)
    return {
        "acc1": float(acc1),
        "acc5": float(acc5),
        "mean_per_class_recall": float(balanced_accuracy_score(target.numpy(), pred.numpy())),
    }


def clip_benchmark_retrieval(cache: EmbeddingCache, ks=CB_RECALL_KS, batch_size: int = 64) -> dict:
    """clip-benchmark's retrieval recalls, computed its way: ``scores = sim(texts, images)`` ``[M, N]``,
    ``image_retrieval_recall@k`` = mean over texts of ``recall_at_k(scores, positives, k) > 0``,
    ``text_retrieval_recall@k`` the same on the transposes. ``sim`` is the model's own similarity
    (MERU: Lorentzian inner product; CLIP: cosine). Only ``k`` up to the gallery size."""
    import torch
    from clip_benchmark.metrics.zeroshot_retrieval import batchify, recall_at_k

    images, texts = cache.image_emb.float(), cache.text_emb.float()
    scores = cache.space.similarity(texts, images)
    positive = torch.zeros(scores.shape, dtype=torch.bool)
    positive[range(len(texts)), cache.text_to_image.long()] = True
    out = {}
    for k in ks:
        if k <= images.shape[0]:
            hits = batchify(recall_at_k, scores, positive, batch_size, "cpu", k=k) > 0
            out[f"image_retrieval_recall@{k}"] = float(hits.float().mean())
        if k <= texts.shape[0]:
            hits = batchify(recall_at_k, scores.T, positive.T, batch_size, "cpu", k=k) > 0
            out[f"text_retrieval_recall@{k}"] = float(hits.float().mean())
    return out


def clip_benchmark_record(rec: MetricRecord, cb_metrics: dict | None) -> dict | None:
    """A result file that ``clip_benchmark build`` reads: its keys (``dataset``, ``model``, ``pretrained``,
    ``task``, ``metrics``, ``language``). ``model`` is ``KIND-SIZE`` and ``pretrained`` the rest of the run
    label (``s0``, ``released``), like clip-benchmark's architecture / weights pair.

    Zero-shot and retrieval carry clip-benchmark's metric names, computed its way (``cb_metrics``). Our
    linear probe is a different method (scikit-learn logistic regression with a C search, not
    clip-benchmark's torch weight-decay sweep), so it gets keys of its own: task ``linear_probe_logreg``,
    metrics ``logreg_acc1`` and ``logreg_mean_per_class_recall``; merged tables never mix the two."""
    m = rec.metrics
    if rec.task == "zeroshot":
        task, metrics = "zeroshot_classification", cb_metrics
    elif rec.task == "retrieval":
        task, metrics = "zeroshot_retrieval", cb_metrics
    elif rec.task == "linear-probe":
        task = "linear_probe_logreg"
        metrics = {"logreg_acc1": m["top1"] / 100, "logreg_mean_per_class_recall": m["mean_per_class"] / 100}
    else:
        return None
    model = f"{rec.kind}-{rec.size}"
    label = rec.label
    pretrained = label[len(model) + 1 :] if label.startswith(model + "-") else label
    return {
        "dataset": rec.dataset,
        "model": model,
        "pretrained": pretrained,
        "task": task,
        "metrics": metrics,
        "language": "en",
    }


def clip_benchmark_path(out: Path) -> Path:
    return out.with_name(
        out.name[:-5] + ".clip_benchmark.json" if out.name.endswith(".json") else out.name + ".clip_benchmark.json"
    )


def evaluate(args: argparse.Namespace) -> tuple[MetricRecord, dict | None]:
    """The metric record of ``args`` and, for zero-shot and retrieval, clip-benchmark's metrics (else None)."""
    if args.embeddings is None:
        raise ValueError("--embeddings EMB.pt is required")
    kw = {"n_boot": args.n_boot, "seed": args.bootstrap_seed}
    inputs, cb = Provenance(embeddings=str(args.embeddings)), None
    if args.task == "zeroshot":
        from meru.evaluation.zeroshot import evaluate_zeroshot

        cache = EmbeddingCache.load(args.embeddings, "classification")
        tree = None
        if args.tree:
            from meru.evaluation.tree import Tree

            tree = Tree.from_edges_file(args.tree, names=args.tree_names)
            inputs.tree = str(args.tree)
        res = evaluate_zeroshot(cache, tree=tree, **kw)
        cb = clip_benchmark_zeroshot(cache)
    elif args.task == "prompts":
        from meru.evaluation.prompt_sensitivity import evaluate_prompts

        cache = EmbeddingCache.load(args.embeddings, "classification")
        res = evaluate_prompts(cache, **kw)
    elif args.task == "hierarcaps":
        from meru.evaluation.hierarcaps import evaluate_hierarcaps

        cache = EmbeddingCache.load(args.embeddings, "hierarcaps")
        res = evaluate_hierarcaps(cache, **kw)
    elif args.task == "retrieval":
        from meru.evaluation.retrieval import evaluate_retrieval

        cache = EmbeddingCache.load(args.embeddings, "retrieval")
        res = evaluate_retrieval(cache, **kw)
        cb = clip_benchmark_retrieval(cache)
    elif args.task == "linear-probe":
        from meru.evaluation.linear_probe import evaluate_linear_probe

        if args.train_embeddings is None:
            raise ValueError(
                "--task linear-probe needs --train-embeddings TRAIN.pt (features of the probe's training set)"
            )
        train = EmbeddingCache.load(args.train_embeddings, "classification")
        cache = EmbeddingCache.load(args.embeddings, "classification")
        res = evaluate_linear_probe(train, cache, **kw)
        inputs.train_embeddings = str(args.train_embeddings)
    else:
        if args.text_pool is None:
            raise ValueError(f"--task {args.task} needs --text-pool POOL.pt (`meru embed --text-pool captions.jsonl`)")
        cache = EmbeddingCache.load(args.embeddings, ("classification", "retrieval"))
        pool = EmbeddingCache.load(args.text_pool, "text-pool")
        if args.task == "structure":
            from meru.evaluation.structure import evaluate_structure

            res = evaluate_structure(cache, pool, **kw)
        else:
            from meru.evaluation.traversal import evaluate_traversal

            res = evaluate_traversal(cache, pool, steps=args.steps, max_images=args.max_images)
        inputs.text_pool = str(args.text_pool)
    inputs.checkpoint = cache.checkpoint
    who = identity(cache, args.task, args.label, args.seed, args.size)
    return MetricRecord.of(res, inputs, **who), cb


def run(args: argparse.Namespace) -> int:
    from meru.models.checkpoints import CheckpointError

    try:
        rec, cb_metrics = evaluate(args)
    except (FileNotFoundError, KeyError, ValueError, CheckpointError) as e:
        print(f"meru evaluate: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    cb = clip_benchmark_record(rec, cb_metrics)
    if cb is not None:  # side file first: M.json appearing last marks the evaluation finished
        write_json(clip_benchmark_path(out), cb, nonfinite="null")
    rec.write(out)
    shown = {k: round(float(v), 4) for k, v in rec.metrics.items() if isinstance(v, (int, float)) and v == v}
    print(f"meru evaluate: {args.task} {rec.dataset} ({rec.label}): {shown} -> {out}")
    return 0
