"""`meru embed`: compute embeddings of an evaluation set (or a caption pool) once and cache them.

Every metric (``meru evaluate``) reads this cache, so the towers run once per (checkpoint, eval set).

The cache is a :class:`meru.records.EmbeddingCache` (typed fields, one per item below; the record's docstring
gives the shapes), written with :meth:`~meru.records.EmbeddingCache.save` (atomic; refuses NaN/inf) as a plain
dict that loads with ``torch.load(weights_only=True)`` (format ``meru-bench/embeddings/2``) and read with
:meth:`~meru.records.EmbeddingCache.load`. All tensors are float32 on CPU. It holds the model's identity
(kind, size, seed, step, checkpoint), its space (:mod:`meru.spaces`, MERU with its curvature) and the towers'
alphas, the image embeddings ``[N, D]`` and pre-projection features ``[N, W]``; classification sets add labels,
class names, templates and the raw projected text features ``[T, C, D]`` of every template x class (ensembled
at evaluate time with ``space.ensemble``) and alternative template sets (``prompt_sets``,
:mod:`meru.evaluation.prompt_sensitivity`); retrieval sets their captions ``[M, D]`` and ``text_to_image``;
caption pools (no images) their captions with specificity, depth, node and attributes; HierarCaps
(:mod:`meru.evaluation.hierarcaps`) its caption levels, hierarchy ids and the empty caption's embedding.

Reading is the data layer's: :func:`meru.data.evalsets.open_evalset` gives an ``EvalSet`` (name, task,
class names, templates, class nodes, template sets, items) and :func:`meru.data.evalsets.open_text_pool` a
``TextPool``; this module only encodes them. Preprocessing follows the official MERU evaluation
(:func:`meru.data.evalsets.image_transform`): classification resizes the short side to ``model.image_size``
(bicubic) and centre-crops; retrieval squeezes to ``image_size x image_size`` (bicubic); then ``ToTensor``
(values in [0, 1]; the model normalises pixels itself).

Speed: on a GPU the towers run under bf16 autocast (``--amp auto``) while the image projection and
MERU's lift (alpha scaling, exp map) run in float32 (:func:`meru.models.fp32_head`); texts and prompts
are tokenised per batch and run at the batch's longest length (rounded up to 8), which gives the same
output as full-context padding. Progress goes to stderr as plain lines (count, rate, ETA).
"""

from __future__ import annotations

import argparse
import sys

import torch

from meru.arguments import add_embed_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru.records import EmbeddingCache


def _autocast(model, amp: str):
    """bf16 autocast for the towers: ``amp="auto"`` on CUDA only, ``"bf16"`` on any device, ``"fp32"`` never."""
    from contextlib import nullcontext

    if amp not in ("auto", "bf16", "fp32"):
        raise ValueError(f"amp must be auto, bf16 or fp32, got {amp!r}")
    device_type = model.device.type
    if amp == "bf16" or (amp == "auto" and device_type == "cuda"):
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return nullcontext()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ----------------------------------------------------------------------------- encoding


@torch.no_grad()
def encode_images(model, images: torch.Tensor, amp: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, 3, S, S]`` in [0, 1] -> (pre-projection features ``[B, W]``, embeddings ``[B, D]``), float32 CPU.

    The trunk runs once (under bf16 autocast per ``amp``, see :func:`_autocast`): the projection head and
    ``model.project_image`` are applied to its output in float32 (identical to ``model.encode_image``);
    models without a ``visual.head`` run twice."""
    from meru.models import fp32_head

    images = images.to(model.device, non_blocking=True)
    with _autocast(model, amp):
        feats = model.image_features(images)
    head = getattr(getattr(model, "visual", None), "head", None)
    if head is not None:
        with fp32_head(model.device.type):
            emb = model.project_image(head(feats.float()).float())
    else:  # pragma: no cover - other architectures
        emb = model.encode_image(images, project=True)
    return feats.float().cpu(), emb.float().cpu()


@torch.no_grad()
def encode_texts(
    model, texts: list[str], project: bool = True, batch_size: int = 256, amp: str = "auto", progress=None
) -> torch.Tensor:
    """``[M]`` strings -> ``[M, D]`` float32 (``project=False``: raw projected features).

    Each batch runs at its longest text (``model.tokenize(..., trim=True)``), under bf16 autocast per
    ``amp`` for the tower; MERU's lift runs in float32. ``progress``: a :class:`meru.progress.Progress`."""
    out = []
    for s in range(0, len(texts), batch_size):
        tokens = model.tokenize(texts[s : s + batch_size], trim=True).to(model.device, non_blocking=True)
        with _autocast(model, amp):
            out.append(model.encode_text(tokens, project=project).float().cpu())
        if progress is not None:
            progress.update(tokens.shape[0])
    if not out:
        return torch.zeros(0, model.embed_dim)
    return torch.cat(out)


def fill_template(template: str, classname: str) -> str:
    """MERU templates use ``{}``, clip-benchmark's ``{c}``; a template without a slot gets the name appended."""
    if "{" not in template:
        return f"{template} {classname}"
    return template.format(classname, c=classname)


def class_text_raw(
    model, classnames: list[str], templates: list[str], batch_size: int = 256, amp: str = "auto"
) -> torch.Tensor:
    """Raw projected text features of every prompt ``templates[t].format(classnames[c])`` -> ``[T, C, D]``."""
    prompts = [fill_template(t, c) for t in templates for c in classnames]
    raw = encode_texts(model, prompts, project=False, batch_size=batch_size, amp=amp)
    return raw.view(len(templates), len(classnames), -1)


# ----------------------------------------------------------------------------- evaluation sets


def embed_evalset(
    model,
    evalset,
    batch_size: int = 256,
    num_workers: int = 0,
    checkpoint: str | None = None,
    prompt_sets: bool = True,
    amp: str = "auto",
) -> EmbeddingCache:
    """Encode a whole evaluation set -> embedding cache (see module docstring).

    ``evalset``: a :class:`meru.data.evalsets.EvalSet` (:func:`meru.data.evalsets.open_evalset`); its
    name, task, class names, templates, class nodes and template sets are copied into the cache.
    ``prompt_sets``: also encode the alternative template sets (classification). ``amp``: bf16 autocast for
    the towers (``auto``: on CUDA), see :func:`encode_images`.
    """
    from meru.progress import Progress

    model = model.eval()
    out = EmbeddingCache.model_fields(model, checkpoint)
    out["dataset"] = evalset.name
    if evalset.task == "hierarcaps":
        # HierarCaps: images + 4-level caption hierarchies (meru.evaluation.hierarcaps)
        from meru.evaluation.hierarcaps import embed_hierarcaps

        return EmbeddingCache.from_dict({**out, **embed_hierarcaps(model, evalset, batch_size, num_workers, amp)})
    task = evalset.task
    out["task"] = task
    progress = Progress(f"meru embed {out['dataset']}", evalset.num_items, "images")
    out["prompt_source"] = evalset.prompt_source

    orders, keys, metas, feats, embs, labels, captions = [], [], [], [], [], [], []
    for batch in evalset.batches(batch_size, num_workers):
        f, e = encode_images(model, torch.stack([it["image"] for it in batch]), amp=amp)
        progress.update(len(batch))
        feats.append(f)
        embs.append(e)
        for it in batch:
            orders.append(it["order"])
            keys.append(it["key"])
            metas.append(it.get("meta"))
            labels.append(it.get("label"))
            captions.append(it.get("captions"))
    if not orders:
        raise ValueError(f"{evalset.source}: the {evalset.split} split has no samples")
    perm = sorted(range(len(orders)), key=orders.__getitem__)
    feats, embs = torch.cat(feats)[perm], torch.cat(embs)[perm]
    keys, metas = [keys[i] for i in perm], [metas[i] for i in perm]
    out.update(keys=keys, meta=metas if any(m is not None for m in metas) else None, image_feats=feats, image_emb=embs)
    if task == "classification":
        classnames, templates = list(evalset.classnames), list(evalset.templates)
        out.update(
            labels=torch.tensor([labels[i] for i in perm], dtype=torch.long),
            classnames=classnames,
            templates=templates,
            class_text_raw=class_text_raw(model, classnames, templates, batch_size, amp),
            class_nodes=evalset.class_nodes,
        )
        if prompt_sets:  # alternative template sets for prompt sensitivity (meru.evaluation.prompt_sensitivity)
            from meru.evaluation.prompt_sensitivity import embed_prompt_sets

            out["prompt_sets"] = embed_prompt_sets(model, evalset.prompt_sets, classnames, batch_size, amp)
    else:
        texts, t2i = [], []
        for row, i in enumerate(perm):
            texts.extend(captions[i])
            t2i.extend([row] * len(captions[i]))
        text_progress = Progress(f"meru embed {out['dataset']}", len(texts), "captions")
        out.update(
            texts=texts,
            text_emb=encode_texts(model, texts, True, batch_size, amp, text_progress),
            text_to_image=torch.tensor(t2i, dtype=torch.long),
        )
    return EmbeddingCache.from_dict(out)


def embed_text_pool(
    model, pool, batch_size: int = 256, checkpoint: str | None = None, amp: str = "auto"
) -> EmbeddingCache:
    """Encode a caption pool (:class:`meru.data.evalsets.TextPool`) -> embedding cache with ``texts``, ``text_emb``
    and the pool's annotations."""
    from meru.progress import Progress

    rows = pool.rows
    out = EmbeddingCache.model_fields(model.eval(), checkpoint)
    texts = [r["text"] for r in rows]
    nan = float("nan")
    out.update(
        task="text-pool",
        dataset=pool.name,
        texts=texts,
        text_emb=encode_texts(
            model, texts, True, batch_size, amp, Progress(f"meru embed {pool.name}", len(texts), "captions")
        ),
        specificity=torch.tensor([float(r.get("specificity", nan)) for r in rows]),
        depth=torch.tensor([float(r.get("depth", nan)) for r in rows]),
        node=[r.get("node") for r in rows],
        attributes=[r.get("attributes") for r in rows],
    )
    return EmbeddingCache.from_dict(out)


# ----------------------------------------------------------------------------- CLI


def run(args: argparse.Namespace) -> int:
    """Load the model once, then embed each source into its ``--out`` (one process for many caches).

    Each cache is written atomically as soon as it is done, so a failure part-way leaves the finished
    caches complete and the rest absent.
    """
    from meru.models.checkpoints import CheckpointError, load_model
    from meru.models.openclip import ExternalModelError, is_openclip_spec, load_openclip

    sources = getattr(args, "sources", None) or []
    if not sources:
        print("meru embed: give at least one --evalset DIR or --text-pool POOL.jsonl", file=sys.stderr)
        return 2
    if len(sources) != len(args.out):
        print(
            f"meru embed: {len(sources)} source(s) (--evalset/--text-pool) but {len(args.out)} --out file(s); "
            f"give one --out per source, in the same order",
            file=sys.stderr,
        )
        return 2
    names = getattr(args, "name", None) or [None] * len(sources)
    if len(names) != len(sources):
        print(
            f"meru embed: {len(sources)} source(s) (--evalset/--text-pool) but {len(names)} --name(s); "
            "give one --name per source, in the same order, or none",
            file=sys.stderr,
        )
        return 2
    from meru.data.evalsets import open_evalset, open_text_pool

    try:
        loader = load_openclip if is_openclip_spec(args.checkpoint) else load_model
        model = loader(args.checkpoint).to(_device(args.device))
        amp = getattr(args, "amp", "auto")
        for (kind, source), name, out in zip(sources, names, args.out):
            if kind == "text_pool":
                pool = open_text_pool(source, name=name)
                cache = embed_text_pool(model, pool, args.batch_size, checkpoint=args.checkpoint, amp=amp)
            else:
                evalset = open_evalset(
                    source, args.root, args.split, args.prompts, image_size=model.image_size, name=name
                )
                cache = embed_evalset(
                    model,
                    evalset,
                    args.batch_size,
                    args.num_workers,
                    checkpoint=args.checkpoint,
                    prompt_sets=getattr(args, "prompt_sets", True),
                    amp=amp,
                )
            cache.save(out)
            print(f"meru embed: {cache.task} {cache.dataset}: {cache.n_items()} items -> {out}")
    except (FileNotFoundError, KeyError, ValueError, CheckpointError, ExternalModelError) as e:
        print(f"meru embed: error: {e}", file=sys.stderr)
        return 2
    return 0
