"""`meru evaluate`: metrics from cached embeddings (see ``meru.evaluation.embed``) -> strict metric JSON.

Tasks: ``zeroshot``, ``retrieval``, ``linear-probe``, ``structure``, ``traversal``. Each writes ``--out M.json``
(atomically, strict JSON) with ``model`` (= kind), ``kind``, ``size``, ``seed``, ``label``, ``dataset``, ``task``,
``geometry`` (``{"space": name, "root_distance": what distances from [ROOT] measure, with unit}``, from
:meth:`meru.spaces.Space.geometry`, so reporting labels axes without knowing model kinds),
``metrics``, ``intervals`` (95% percentile bootstrap over items), ``n`` and per-item data; zero-shot,
retrieval and linear-probe also write a clip-benchmark-style ``M.clip_benchmark.json`` beside it
(``{"dataset", "model", "task", "metrics"}`` with clip-benchmark's metric names and its fractions in [0, 1]).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meru.evaluation.metric_io import write_json
from meru.spaces import space_of

TASKS = ("zeroshot", "retrieval", "linear-probe", "structure", "traversal")


def header(cache: dict, task: str, label: str | None = None, seed: int | None = None) -> dict:
    """Identity fields of a metric record, from the cache (checkpoint) unless overridden."""
    seed = cache.get("seed") if seed is None else seed
    size = cache.get("size")
    label = label or f"{cache['kind']}-{size}-s{seed if seed is not None else 0}"
    return {"model": cache["kind"], "kind": cache["kind"], "size": size,
            "seed": int(seed) if seed is not None else 0, "label": label, "dataset": cache.get("dataset"),
            "task": task, "geometry": space_of(cache).geometry(), "checkpoint": cache.get("checkpoint"),
            "embeddings": cache.get("path")}


def clip_benchmark_record(rec: dict) -> dict | None:
    """clip-benchmark-compatible summary (metric names of clip_benchmark.metrics; values as fractions)."""
    m = rec["metrics"]
    if rec["task"] == "zeroshot":
        task, metrics = "zeroshot_classification", {"acc1": m["top1"] / 100, "acc5": m["top5"] / 100,
                                                    "mean_per_class_recall": m["mean_per_class"] / 100}
    elif rec["task"] == "retrieval":
        task, metrics = "zeroshot_retrieval", {}
        for k in (1, 5, 10):
            if f"t2i_r{k}" in m:
                metrics[f"image_retrieval_recall@{k}"] = m[f"t2i_r{k}"] / 100
                metrics[f"text_retrieval_recall@{k}"] = m[f"i2t_r{k}"] / 100
    elif rec["task"] == "linear-probe":
        task, metrics = "linear_probe", {"lp_acc1": m["top1"] / 100, "lp_mean_per_class_recall": m["mean_per_class"] / 100}
    else:
        return None
    return {"dataset": rec["dataset"], "model": rec["label"], "task": task, "metrics": metrics}


def clip_benchmark_path(out: Path) -> Path:
    return out.with_name(out.name[:-5] + ".clip_benchmark.json" if out.name.endswith(".json") else out.name + ".clip_benchmark.json")


def evaluate(args: argparse.Namespace) -> dict:
    from meru.evaluation.embed import load_cache

    if args.embeddings is None:
        raise ValueError("--embeddings EMB.pt is required")
    kw = {"n_boot": args.n_boot, "seed": args.bootstrap_seed}
    if args.task == "zeroshot":
        from meru.evaluation.zeroshot import evaluate_zeroshot

        cache = load_cache(args.embeddings, "classification")
        tree = None
        if args.tree:
            from meru.evaluation.tree import Tree

            tree = Tree.from_edges_file(args.tree, names=args.tree_names)
        res = evaluate_zeroshot(cache, tree=tree, **kw)
        hm, hi = res.pop("hierarchical_metrics", {}), res.pop("hierarchical_intervals", {})
        if "n_mistakes" in hm:
            res["n_mistakes"] = int(hm.pop("n_mistakes"))
        res["metrics"].update(hm)
        res["intervals"].update(hi)
        if "per_item_hierarchical" in res:
            res["per_item"].update(res.pop("per_item_hierarchical"))
        if tree is not None:
            res["tree"] = str(args.tree)
    elif args.task == "retrieval":
        from meru.evaluation.retrieval import evaluate_retrieval

        cache = load_cache(args.embeddings, "retrieval")
        res = evaluate_retrieval(cache, **kw)
    elif args.task == "linear-probe":
        from meru.evaluation.linear_probe import evaluate_linear_probe

        if args.train_embeddings is None:
            raise ValueError("--task linear-probe needs --train-embeddings TRAIN.pt (features of the probe's training set)")
        train = load_cache(args.train_embeddings, "classification")
        cache = load_cache(args.embeddings, "classification")
        res = evaluate_linear_probe(train, cache, **kw)
        res["train_embeddings"] = str(args.train_embeddings)
    else:
        if args.text_pool is None:
            raise ValueError(f"--task {args.task} needs --text-pool POOL.pt (`meru embed --text-pool captions.jsonl`)")
        cache = load_cache(args.embeddings, ("classification", "retrieval"))
        pool = load_cache(args.text_pool, "text-pool")
        if args.task == "structure":
            from meru.evaluation.structure import evaluate_structure

            res = evaluate_structure(cache, pool, **kw)
        else:
            from meru.evaluation.traversal import traverse

            res = traverse(cache, pool, steps=args.steps, max_images=args.max_images)
            res["metrics"] = {k: v for k, v in res["summary"].items()
                              if k in ("monotonic_frac", "precision", "mean_unique") and v is not None}
            res["n"] = res["summary"]["n_images"]
        res["text_pool"] = str(args.text_pool)
    return {**header(cache, args.task, args.label, args.seed), **res}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--embeddings", help="embedding cache of the test set (meru embed --out)")
    parser.add_argument("--train-embeddings", help="linear-probe: embedding cache of the probe's training set")
    parser.add_argument("--text-pool", help="structure/traversal: caption-pool cache (meru embed --text-pool)")
    parser.add_argument("--tree", help="zeroshot: taxonomy edge file ('parent child' lines) for hierarchical metrics")
    parser.add_argument("--tree-names", help="zeroshot: node id -> name JSON for the tree")
    parser.add_argument("--out", required=True, help="metric JSON to write")
    parser.add_argument("--label", help="run name (default: KIND-SIZE-sSEED)")
    parser.add_argument("--seed", type=int, help="training seed (default: from the checkpoint config)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the intervals")
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50, help="traversal: points from image to [ROOT]")
    parser.add_argument("--max-images", type=int, help="traversal: only the first N images")


def run(args: argparse.Namespace) -> int:
    try:
        rec = evaluate(args)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"meru evaluate: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    cb = clip_benchmark_record(rec)
    if cb is not None:  # side file first: M.json appearing last marks the evaluation finished
        write_json(clip_benchmark_path(out), cb, nonfinite="null")
    write_json(out, rec, nonfinite="null")
    shown = {k: round(float(v), 4) for k, v in rec.get("metrics", {}).items() if isinstance(v, (int, float)) and v == v}
    print(f"meru evaluate: {args.task} {rec['dataset']} ({rec['label']}): {shown} -> {out}")
    return 0
