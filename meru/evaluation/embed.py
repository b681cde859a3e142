"""`meru embed`: compute embeddings of an evaluation set (or a caption pool) once and cache them.

Every metric (``meru evaluate``) reads this cache, so the towers run once per (checkpoint, eval set).

The cache is a :class:`meru.records.EmbeddingCache` (typed fields, one per item below; the record's docstring
gives the shapes), written with :meth:`~meru.records.EmbeddingCache.save` (atomic; refuses NaN/inf) as a plain
dict that loads with ``torch.load(weights_only=True)`` (format ``meru-bench/embeddings/2``) and read with
:meth:`~meru.records.EmbeddingCache.load`. All tensors are float32 on CPU. It holds the model's identity
(kind, model name and display name from the training config, size, seed, step, checkpoint), its space
(:mod:`meru.spaces`, MERU with its curvature) and the towers'
alphas, the image embeddings ``[N, D]`` and pre-projection features ``[N, W]``; classification sets add labels,
class names, templates and the raw projected text features ``[T, C, D]`` of every template x class (ensembled
at evaluate time with ``space.ensemble``) and alternative template sets (``prompt_sets``,
:mod:`meru.evaluation.prompt_sensitivity`); retrieval sets their captions ``[M, D]`` and ``text_to_image``;
caption pools (no images) their captions with specificity, depth, node and attributes; HierarCaps
(:mod:`meru.evaluation.hierarcaps`) its caption levels, hierarchy ids and the empty caption's embedding;
caption-choice sets (:mod:`meru.evaluation.caption_choice`) every item's captions and which one is true.

Reading is the data layer's: :func:`meru.data.evalsets.open_evalset` gives an ``EvalSet`` (name, task,
class names, templates, class nodes, template sets, items) and :func:`meru.data.evalsets.open_text_pool` a
``TextPool``; this module encodes the images once (:func:`meru.evaluation.encode.encode_evalset_images`) and
asks every task that embeds this kind of set (:data:`meru.evaluation.tasks.TASKS`, ``Task.embed``) for its
fields: zero-shot the class prompts, prompt sensitivity the template sets, retrieval the captions, HierarCaps
its caption hierarchies, structure the caption pool. Preprocessing follows the official MERU evaluation
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
import json
import sys

import torch

from meru.evaluation.encode import encode_evalset_images
from meru.evaluation.task import EmbedOptions
from meru.evaluation.tasks import tasks_embedding
from meru.records import EmbeddingCache
from meru.arguments import add_embed_arguments as add_arguments  # noqa: F401  (light: fast --help)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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

    ``evalset``: a :class:`meru.data.evalsets.EvalSet` (:func:`meru.data.evalsets.open_evalset`). The images
    are encoded once (:func:`meru.evaluation.encode.encode_evalset_images`); then every task that embeds this
    kind of set (:func:`meru.evaluation.tasks.tasks_embedding`) adds its fields. ``prompt_sets``: also encode
    the alternative template sets (classification). ``amp``: bf16 autocast for the towers (``auto``: on CUDA).
    """
    model = model.eval()
    out = EmbeddingCache.model_fields(model, checkpoint)
    out.update(dataset=evalset.name, task=evalset.task, prompt_source=evalset.prompt_source)
    images = encode_evalset_images(model, evalset, batch_size, num_workers, amp)
    out.update(images.cache_fields())
    options = EmbedOptions(batch_size=batch_size, amp=amp, prompt_sets=prompt_sets)
    for task in tasks_embedding(evalset.task):
        out.update(task.embed(model, evalset, images, options))
    return EmbeddingCache.from_dict(out)


def embed_text_pool(
    model, pool, batch_size: int = 256, checkpoint: str | None = None, amp: str = "auto"
) -> EmbeddingCache:
    """Encode a caption pool (:class:`meru.data.evalsets.TextPool`) -> embedding cache with ``texts``, ``text_emb``
    and the pool's annotations (the fields of the tasks that embed ``text-pool``)."""
    out = EmbeddingCache.model_fields(model.eval(), checkpoint)
    out.update(task="text-pool", dataset=pool.name)
    options = EmbedOptions(batch_size=batch_size, amp=amp)
    for task in tasks_embedding("text-pool"):
        out.update(task.embed(model, pool, None, options))
    return EmbeddingCache.from_dict(out)


# ----------------------------------------------------------------------------- CLI


def checkpoint_entry(text: str | None) -> dict:
    """``--checkpoint-entry JSON``: a JSON object (a ``pretrained.checkpoints`` entry), ``{}`` when not given;
    ``ValueError`` in one line otherwise."""
    if not text:
        return {}
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--checkpoint-entry is not JSON ({e.msg} at column {e.colno}): {text[:80]!r}") from None
    if not isinstance(entry, dict):
        raise ValueError(f"--checkpoint-entry must be a JSON object (a checkpoint entry), got {text[:80]!r}")
    return entry


def run(args: argparse.Namespace) -> int:
    """Load the model once, then embed each source into its ``--out`` (one process for many caches).

    Each cache is written atomically as soon as it is done, so a failure part-way leaves the finished
    caches complete and the rest absent.
    """
    from meru.models.checkpoints import CheckpointError, load_model
    from meru.models.openclip import ExternalModelError, is_openclip_spec, load_openclip

    sources = getattr(args, "sources", None) or []
    if not sources:
        print("meru embed: error: give at least one --evalset DIR or --text-pool POOL.jsonl", file=sys.stderr)
        return 2
    if len(sources) != len(args.out):
        print(
            f"meru embed: error: {len(sources)} source(s) (--evalset/--text-pool) but {len(args.out)} --out file(s); "
            f"give one --out per source, in the same order",
            file=sys.stderr,
        )
        return 2
    names = getattr(args, "name", None) or [None] * len(sources)
    if len(names) != len(sources):
        print(
            f"meru embed: error: {len(sources)} source(s) (--evalset/--text-pool) but {len(names)} --name(s); "
            "give one --name per source, in the same order, or none",
            file=sys.stderr,
        )
        return 2
    from meru.data.evalsets import open_evalset, open_text_pool

    try:
        if is_openclip_spec(args.checkpoint):
            model = load_openclip(args.checkpoint)
        else:
            model = load_model(args.checkpoint, entry=checkpoint_entry(getattr(args, "checkpoint_entry", None)))
        model = model.to(_device(args.device))
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
