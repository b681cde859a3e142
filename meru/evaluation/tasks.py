"""`meru evaluate`: every metric, computed from cached embeddings (:mod:`meru.evaluation.cache`).

Scores use each model's own geometry via :mod:`meru.spaces`: cosine for CLIP, Lorentzian inner product
for MERU (prompt ensembles averaged in the tangent space before ``alpha`` and the exp map, as the
official code does). Every metric has a 95% percentile-bootstrap interval over test items
(:mod:`meru.evaluation.stats`); per-item outcomes are saved for paired MERU-vs-CLIP tests.

Tasks (``--task``):

* ``zeroshot``: top-1, top-5, mean per-class accuracy (MERU's metric), all in %; with ``--tree``,
  hierarchical metrics of the predictions (:mod:`meru.evaluation.tree`).
* ``retrieval``: text->image and image->text Recall@{1,5,10} in %; a query is correct if any paired item
  is within the top K.
* ``linear-probe``: logistic regression on pre-projection image features, cost C chosen on a held-out
  20% of the training embeddings over 10^-6..10^6 then refined by a log-space bisection (CLIP protocol).
* ``structure``: distance from the root (MERU: from the origin; CLIP: angle to the mean pool-text
  direction) for images and captions, Spearman/Kendall between caption specificity (and concept depth)
  and that distance, images farther than their most specific true caption, entailment-cone inclusion of
  true vs false (caption, image) pairs with ROC AUC (MERU), modality gap.
* ``traversal``: the MERU paper's Section 5 image traversals toward the root, entailment-filtered for MERU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from scipy import stats as sstats

from meru.evaluation import stats
from meru.evaluation.cache import load_cache
from meru.spaces import get_space

N_BOOT = 1000


def to_jsonable(obj):
    """numpy/torch scalars and arrays -> Python; NaN/inf -> error (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "detach"):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if not math.isfinite(value):
            raise ValueError(f"non-finite metric value {value}: refusing to write invalid JSON")
        return value
    return obj


def write_json(path: str | os.PathLike, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(payload), indent=1, allow_nan=False)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


CLIP_BENCHMARK_NAMES = {
    "top1": "acc1", "top5": "acc5", "mean_per_class": "mean_per_class_recall",
    "t2i_R@1": "image_retrieval_recall@1", "t2i_R@5": "image_retrieval_recall@5", "t2i_R@10": "image_retrieval_recall@10",
    "i2t_R@1": "text_retrieval_recall@1", "i2t_R@5": "text_retrieval_recall@5", "i2t_R@10": "text_retrieval_recall@10",
}


def write_metrics(path: str | os.PathLike, record: dict) -> None:
    """Write ``record`` to ``path`` and ``<stem>.clip_benchmark.json`` beside it (clip-benchmark's keys,
    fractions in [0, 1] as clip-benchmark reports them; ours are in %)."""
    path = Path(path)
    cb_task = {"zeroshot": "zeroshot_classification", "retrieval": "zeroshot_retrieval",
               "linear-probe": "linear_probe"}.get(record["task"])
    if cb_task:
        cb = {"dataset": record["dataset"], "model": record.get("label"), "task": cb_task,
              "metrics": {CLIP_BENCHMARK_NAMES.get(k, k): (v / 100.0 if k in CLIP_BENCHMARK_NAMES else v)
                          for k, v in record["metrics"].items() if isinstance(v, (int, float))}}
        write_json(path.with_name(path.stem + ".clip_benchmark.json"), cb)
    write_json(path, record)


# ----------------------------------------------------------------------------------------------------
def _space(cache: dict):
    return get_space(cache["kind"], cache.get("curv"))


def _record(cache: dict, task: str, dataset: str, metrics: dict, intervals: dict, n: int, args, **extra) -> dict:
    seed = args.seed if getattr(args, "seed", None) is not None else cache.get("seed")
    label = getattr(args, "label", None) or f"{cache['kind']}-{cache['size']}-s{seed}"
    return {"model": cache["kind"], "kind": cache["kind"], "size": cache["size"], "seed": int(seed or 0),
            "label": label, "dataset": dataset, "task": task, "checkpoint": cache.get("checkpoint"),
            "metrics": metrics, "intervals": intervals, "n": int(n), **extra}


def mean_per_class(correct: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes present of the per-class accuracy (torchmetrics MulticlassAccuracy 'macro')."""
    classes = np.unique(labels)
    return float(np.mean([correct[labels == c].mean() for c in classes]))


def zeroshot_scores(cache: dict) -> torch.Tensor:
    """``[N, C]`` scores of images against prompt-ensembled class embeddings."""
    space = _space(cache)
    classifier = space.ensemble(cache["class_text_raw"], cache.get("textual_alpha", 1.0))
    return space.similarity(cache["image_emb"], classifier)


def evaluate_zeroshot(cache: dict, tree_file: str | None = None, tree_names: str | None = None) -> tuple[dict, dict, dict]:
    scores = zeroshot_scores(cache)
    labels = cache["labels"].numpy()
    order = scores.argsort(dim=1, descending=True).numpy()
    pred = order[:, 0]
    correct1 = (pred == labels).astype(float)
    k5 = min(5, scores.shape[1])
    correct5 = (order[:, :k5] == labels[:, None]).any(1).astype(float)
    rows = np.stack([correct1, correct5, labels.astype(float)], axis=1)
    metrics = {"top1": 100 * correct1.mean(), "top5": 100 * correct5.mean(),
               "mean_per_class": 100 * mean_per_class(correct1, labels)}
    intervals = {
        "top1": [100 * v for v in stats.bootstrap_ci(correct1, n_boot=N_BOOT)],
        "top5": [100 * v for v in stats.bootstrap_ci(correct5, n_boot=N_BOOT)],
        "mean_per_class": [100 * v for v in stats.bootstrap_ci(rows, statistic=lambda r: mean_per_class(r[:, 0], r[:, 2]), n_boot=N_BOOT)],
    }
    per_item = {"correct": correct1.astype(int).tolist(), "pred": pred.tolist(), "label": labels.tolist()}
    if tree_file:
        from meru.evaluation.tree import Tree, hierarchical_metrics, summarize_hierarchical

        tree = Tree.from_edges_file(tree_file, names=tree_names)
        nodes = cache.get("class_nodes")
        if nodes is None:
            raise ValueError("--tree needs class -> taxonomy-node ids (class_nodes.json beside the evaluation set)")
        per = hierarchical_metrics(tree, [nodes[i] for i in labels], [nodes[i] for i in pred])
        summary = summarize_hierarchical(per)
        for key, value in summary.items():
            if key in ("n", "n_mistakes", "correct") or value is None:
                continue
            metrics[f"h_{key}" if not key.startswith("h_") else key] = float(value)
            arr = np.asarray(per.get(key, []), dtype=float)
            if key == "mistake_severity":
                arr = arr[correct1 == 0]
            if arr.size and np.all(np.isfinite(arr)):
                name = f"h_{key}" if not key.startswith("h_") else key
                intervals[name] = list(stats.bootstrap_ci(arr, n_boot=N_BOOT))
    return metrics, intervals, per_item


def retrieval_ranks(cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of the first correct item: per text query (t->i) and per image query (i->t)."""
    sim = _space(cache).similarity(cache["text_emb"], cache["image_emb"]).numpy()  # [M, N]
    t2i = cache["text_to_image"].numpy()
    true_t = sim[np.arange(len(t2i)), t2i]
    rank_t2i = (sim > true_t[:, None]).sum(1)
    n_img = sim.shape[1]
    rank_i2t = np.full(n_img, np.iinfo(np.int64).max)
    sim_it = sim.T  # [N, M]
    for j in range(n_img):
        own = np.where(t2i == j)[0]
        if own.size:
            best = sim_it[j, own].max()
            rank_i2t[j] = int((sim_it[j] > best).sum())
    return rank_t2i, rank_i2t[rank_i2t != np.iinfo(np.int64).max]


def evaluate_retrieval(cache: dict) -> tuple[dict, dict, dict]:
    r_t2i, r_i2t = retrieval_ranks(cache)
    metrics, intervals = {}, {}
    for name, ranks in (("t2i", r_t2i), ("i2t", r_i2t)):
        for k in (1, 5, 10):
            hit = (ranks < k).astype(float)
            metrics[f"{name}_R@{k}"] = 100 * hit.mean()
            intervals[f"{name}_R@{k}"] = [100 * v for v in stats.bootstrap_ci(hit, n_boot=N_BOOT)]
    return metrics, intervals, {"t2i_rank": r_t2i.tolist(), "i2t_rank": r_i2t.tolist()}


def _fit_probe(xtr, ytr, C, seed=0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=1000, random_state=seed).fit(xtr, ytr)


def evaluate_linear_probe(train: dict, test: dict, seed: int = 0) -> tuple[dict, dict, dict]:
    """CLIP-protocol probe: C grid 1e-6..1e6 on a 80/20 split of train, then 8 bisection steps in log C."""
    xtr, ytr = train["image_feats"].numpy().astype(np.float64), train["labels"].numpy()
    xte, yte = test["image_feats"].numpy().astype(np.float64), test["labels"].numpy()
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-8
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ytr))
    n_val = max(1, len(ytr) // 5)
    va, tr = perm[:n_val], perm[n_val:]

    def val_acc(logc):
        return float((_fit_probe(xtr[tr], ytr[tr], 10.0**logc, seed).predict(xtr[va]) == ytr[va]).mean())

    grid = {lc: val_acc(lc) for lc in range(-6, 7, 2)}
    best = max(grid, key=lambda k: (grid[k], -abs(k)))
    lo, hi = best - 2, best + 2
    for _ in range(6):
        mid_lo, mid_hi = (2 * lo + hi) / 3, (lo + 2 * hi) / 3
        a, b = val_acc(mid_lo), val_acc(mid_hi)
        grid[mid_lo], grid[mid_hi] = a, b
        lo, hi = (lo, mid_hi) if a >= b else (mid_lo, hi)
    best_logc = max(grid, key=lambda k: grid[k])
    clf = _fit_probe(xtr, ytr, 10.0**best_logc, seed)
    correct = (clf.predict(xte) == yte).astype(float)
    rows = np.stack([correct, yte.astype(float)], 1)
    metrics = {"top1": 100 * correct.mean(), "mean_per_class": 100 * mean_per_class(correct, yte), "log10_C": best_logc}
    intervals = {"top1": [100 * v for v in stats.bootstrap_ci(correct, n_boot=N_BOOT)],
                 "mean_per_class": [100 * v for v in stats.bootstrap_ci(rows, statistic=lambda r: mean_per_class(r[:, 0], r[:, 1]), n_boot=N_BOOT)]}
    return metrics, intervals, {"correct": correct.astype(int).tolist()}


def _root(cache: dict, pool: dict) -> torch.Tensor | None:
    """[ROOT]: the origin for MERU; the normalised mean text embedding of the pool for CLIP."""
    if cache["kind"] == "meru":
        return None
    return torch.nn.functional.normalize(pool["text_emb"].float().mean(0), dim=0)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC = P(score_pos > score_neg) + 0.5 P(tie) (Mann-Whitney)."""
    scores = np.concatenate([pos, neg])
    ranks = sstats.rankdata(scores)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _true_captions(cache: dict) -> list[list[int]]:
    meta = cache.get("meta") or []
    return [list((m or {}).get("true_captions", [])) for m in meta]


def evaluate_structure(cache: dict, pool: dict, seed: int = 0) -> tuple[dict, dict, dict]:
    space = _space(cache)
    root = _root(cache, pool)
    d_img = space.root_distance(cache["image_emb"], root).numpy()
    d_txt = space.root_distance(pool["text_emb"], root).numpy()
    spec, depth = pool["specificity"].numpy(), pool["depth"].numpy()
    metrics, intervals = {}, {}
    metrics["image_root_distance_mean"], metrics["text_root_distance_mean"] = float(d_img.mean()), float(d_txt.mean())
    rho, _ = sstats.spearmanr(spec, d_txt)
    tau, _ = sstats.kendalltau(spec, d_txt)
    metrics["spearman_specificity_distance"], metrics["kendall_specificity_distance"] = float(rho), float(tau)
    rho_d, _ = sstats.spearmanr(depth, d_txt)
    metrics["spearman_depth_distance"] = float(rho_d)
    intervals["spearman_specificity_distance"] = list(stats.bootstrap_ci(
        np.stack([spec, d_txt], 1), statistic=lambda r: sstats.spearmanr(r[:, 0], r[:, 1])[0], n_boot=200))
    true = _true_captions(cache)
    extra = {}
    if any(true):
        rng = np.random.default_rng(seed)
        own = np.array([max(t, key=lambda i: (spec[i], i)) if t else -1 for t in true])
        has = own >= 0
        farther = (d_img[has] > d_txt[own[has]]).astype(float)
        metrics["image_farther_than_own_caption"] = 100 * farther.mean()
        intervals["image_farther_than_own_caption"] = [100 * v for v in stats.bootstrap_ci(farther, n_boot=N_BOOT)]
        if cache["kind"] == "meru":
            pos_t, pos_i, neg_t, neg_i = [], [], [], []
            n_pool = len(spec)
            for j, t in enumerate(true):
                if not t:
                    continue
                tset = set(t)
                pick = rng.choice(t, size=min(8, len(t)), replace=False)
                false = [i for i in rng.choice(n_pool, size=32, replace=False) if i not in tset][: len(pick)]
                pos_t += [int(i) for i in pick]
                pos_i += [j] * len(pick)
                neg_t += [int(i) for i in false]
                neg_i += [j] * len(false)
            txt, img = pool["text_emb"], cache["image_emb"]
            v_pos = space.cone_violation(txt[pos_t], img[pos_i]).numpy()
            v_neg = space.cone_violation(txt[neg_t], img[neg_i]).numpy()
            metrics["cone_inside_true_pairs"] = 100 * float((v_pos <= 0).mean())
            metrics["cone_inside_false_pairs"] = 100 * float((v_neg <= 0).mean())
            metrics["cone_auc_true_vs_false"] = _auc(-v_pos, -v_neg)
    # modality gap: distance between image and text centroids (MERU: in the tangent space at the origin)
    if cache["kind"] == "meru":
        from meru import lorentz as L

        gi, gt = L.log_map0(cache["image_emb"], space.curv).mean(0), L.log_map0(pool["text_emb"], space.curv).mean(0)
    else:
        gi, gt = cache["image_emb"].mean(0), pool["text_emb"].mean(0)
    metrics["modality_gap"] = float(torch.norm(gi - gt))
    bins = np.linspace(0, float(max(d_img.max(), d_txt.max())) * 1.05 + 1e-9, 41)
    extra["histograms"] = {"bins": bins.tolist(), "image": np.histogram(d_img, bins)[0].tolist(),
                           "text": np.histogram(d_txt, bins)[0].tolist()}
    by_spec = {int(s): float(d_txt[spec == s].mean()) for s in np.unique(spec)}
    extra["text_distance_by_specificity"] = by_spec
    sample = np.random.default_rng(seed).choice(len(spec), size=min(2000, len(spec)), replace=False)
    extra["scatter"] = {"specificity": spec[sample].tolist(), "depth": depth[sample].tolist(), "distance": d_txt[sample].tolist()}
    return metrics, intervals, extra


def traverse(cache: dict, pool: dict, image_index: int, steps: int = 50) -> list[dict]:
    """Walk from image ``image_index`` to [ROOT]; at each step the best-scoring pool caption.

    MERU: points on the geodesic to the origin; a caption is eligible only if the point lies inside its
    entailment cone (official ``scripts/image_traversals.py``); CLIP: linear interpolation to the root.
    Consecutive repeats are dropped."""
    space = _space(cache)
    root = _root(cache, pool)
    x = cache["image_emb"][image_index : image_index + 1]
    ts = np.linspace(0.0, 1.0, steps)
    points = torch.cat([space.interpolate_to_root(x, root, float(t)) for t in ts])
    scores = space.similarity(points, pool["text_emb"])  # [S, M]
    if cache["kind"] == "meru":
        ok = space.entails(pool["text_emb"], points).T  # [S, M]
        scores = scores.masked_fill(~ok, -1e12)
    best = scores.argmax(1).numpy()
    valid = scores.max(1).values.numpy() > -1e11
    out, last = [], None
    for t, i, v in zip(ts, best, valid):
        if not v or i == last:
            continue
        out.append({"t": float(t), "index": int(i), "text": pool["texts"][i], "specificity": int(pool["specificity"][i])})
        last = i
    return out


def evaluate_traversal(cache: dict, pool: dict, n_images: int = 50, steps: int = 20, seed: int = 0) -> tuple[dict, dict, dict]:
    true = _true_captions(cache)
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(cache["image_emb"].shape[0], size=min(n_images, cache["image_emb"].shape[0]), replace=False).tolist())
    images, monotone, precise, lengths, first_spec, last_spec = [], [], [], [], [], []
    for j in idx:
        path = traverse(cache, pool, j, steps)
        tset = set(true[j]) if j < len(true) else set()
        for step in path:
            step["correct"] = bool(step["index"] in tset) if tset else None
        specs = [s["specificity"] for s in path]
        if specs:
            monotone.append(float(all(b <= a for a, b in zip(specs, specs[1:]))))
            first_spec.append(specs[0]), last_spec.append(specs[-1])
        lengths.append(len(path))
        if tset:
            precise += [float(s["correct"]) for s in path]
        key = (cache.get("keys") or [str(j)] * (j + 1))[j]
        images.append({"key": key, "index": j, "steps": path})
    metrics = {"monotone_specificity_paths": 100 * float(np.mean(monotone)) if monotone else 0.0,
               "mean_unique_captions_per_path": float(np.mean(lengths)),
               "mean_first_specificity": float(np.mean(first_spec)) if first_spec else 0.0,
               "mean_last_specificity": float(np.mean(last_spec)) if last_spec else 0.0}
    intervals = {}
    if precise:
        metrics["traversal_precision"] = 100 * float(np.mean(precise))
        intervals["traversal_precision"] = [100 * v for v in stats.bootstrap_ci(np.array(precise), n_boot=N_BOOT)]
    return metrics, intervals, {"images": images}


# ----------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=["zeroshot", "retrieval", "linear-probe", "structure", "traversal"])
    parser.add_argument("--embeddings", required=True, help="embedding cache from `meru embed` (test set)")
    parser.add_argument("--train-embeddings", help="linear-probe training embeddings")
    parser.add_argument("--text-pool", help="caption-pool embedding cache (structure, traversal)")
    parser.add_argument("--tree", help="taxonomy edges file ('parent child' lines) for hierarchical metrics")
    parser.add_argument("--tree-names", help="JSON node id -> name")
    parser.add_argument("--out", required=True)
    parser.add_argument("--label", default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dataset", default=None, help="dataset name in the output (default: from the cache)")


def run(args: argparse.Namespace) -> int:
    cache = load_cache(args.embeddings)
    dataset = args.dataset or cache.get("dataset", Path(args.embeddings).stem)
    extra: dict = {}
    if args.task == "zeroshot":
        if cache.get("task") != "classification":
            raise SystemExit(f"{args.embeddings}: not a classification cache (task={cache.get('task')!r})")
        metrics, intervals, per_item = evaluate_zeroshot(cache, args.tree, args.tree_names)
        extra["per_item"] = per_item
        n = len(per_item["correct"])
    elif args.task == "retrieval":
        metrics, intervals, per_query = evaluate_retrieval(cache)
        extra["per_query"] = per_query
        n = len(per_query["t2i_rank"])
    elif args.task == "linear-probe":
        if not args.train_embeddings:
            raise SystemExit("--task linear-probe needs --train-embeddings")
        metrics, intervals, per_item = evaluate_linear_probe(load_cache(args.train_embeddings), cache)
        extra["per_item"] = per_item
        n = len(per_item["correct"])
    else:
        if not args.text_pool:
            raise SystemExit(f"--task {args.task} needs --text-pool (from `meru embed --text-pool`)")
        pool = load_cache(args.text_pool)
        fn = evaluate_structure if args.task == "structure" else evaluate_traversal
        metrics, intervals, more = fn(cache, pool)
        extra.update(more)
        n = cache["image_emb"].shape[0]
    record = _record(cache, args.task, dataset, metrics, intervals, n, args, **extra)
    write_metrics(args.out, record)
    print(json.dumps({"out": args.out, "metrics": to_jsonable(metrics)}))
    return 0
