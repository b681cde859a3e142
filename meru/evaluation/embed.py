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

Preprocessing follows the official MERU evaluation: classification resizes the short side to
``model.image_size`` (bicubic) and centre-crops; retrieval squeezes to ``image_size x image_size``
(bicubic); then ``ToTensor`` (values in [0, 1]; the model normalises pixels itself).

Speed: on a GPU the towers run under bf16 autocast (``--amp auto``) while the image projection and
MERU's lift (alpha scaling, exp map) run in float32 (:func:`meru.models.fp32_head`); texts and prompts
are tokenised per batch and run at the batch's longest length (rounded up to 8), which gives the same
output as full-context padding. Progress goes to stderr as plain lines (count, rate, ETA).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import torch

from meru.records import EmbeddingCache

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


# ----------------------------------------------------------------------------- transforms


def image_transform(image_size: int, task: str):
    """Official MERU evaluation transforms: classification = resize short side + centre crop;
    retrieval = squeeze to a square. Both bicubic, then ``ToTensor`` ([0, 1], no normalisation)."""
    import torchvision.transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    if task == "retrieval":
        return T.Compose([T.Resize((image_size, image_size), bicubic), T.ToTensor()])
    return T.Compose([T.Resize(image_size, bicubic), T.CenterCrop(image_size), T.ToTensor()])


def _rgb(transform):
    return lambda im: transform(im.convert("RGB"))


# ----------------------------------------------------------------------------- model info


def model_info(model, checkpoint: str | os.PathLike | None = None) -> dict:
    """Identity and space fields of a loaded model (:meth:`meru.records.EmbeddingCache.model_fields`)."""
    return EmbeddingCache.model_fields(model, checkpoint)


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


# ----------------------------------------------------------------------------- reading wds eval sets


class _WdsShards(torch.utils.data.IterableDataset):
    """Samples of a clip-benchmark wds split in file order, tagged (shard, position) so the
    output can be put back in order when several workers read different shards."""

    def __init__(self, directory: Path, split: str, task: str, transform):
        n = int((directory / split / "nshards.txt").read_text().strip())
        self.urls = [str(directory / split / f"{i}.tar") for i in range(n)]
        missing = [u for u in self.urls if not Path(u).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory}/{split}/nshards.txt says {n} shards but {missing[0]} is missing")
        self.task, self.transform = task, transform

    def __iter__(self):
        import webdataset as wds

        wi = torch.utils.data.get_worker_info()
        wid, nw = (wi.id, wi.num_workers) if wi is not None else (0, 1)
        for si, url in enumerate(self.urls):
            if si % nw != wid:
                continue
            # raw bytes only: webdataset's default decoders unpickle .pyd/.pickle and torch.load .pth members
            decoder = _SafeDecoder(url)
            ds = wds.WebDataset(url, shardshuffle=False, empty_check=False, nodesplitter=_all, workersplitter=_all).map(
                decoder
            )  # shards are split above
            for pos, s in enumerate(ds):
                ext = next((e for e in IMAGE_EXTS if e in s), None)
                if ext is None:
                    raise KeyError(f"{url}: sample {s.get('__key__')!r} has no image ({'/'.join(IMAGE_EXTS)})")
                item = {
                    "order": (si, pos),
                    "key": s["__key__"],
                    "image": self.transform(s[ext].convert("RGB")),
                    "meta": s.get("json"),
                }
                if self.task == "retrieval":
                    if "txt" not in s:
                        raise KeyError(f"{url}: retrieval sample {s['__key__']!r} has no 'txt' captions")
                    txt = s["txt"]
                    txt = txt.decode() if isinstance(txt, bytes) else txt
                    item["captions"] = [c for c in txt.splitlines() if c.strip()]
                else:
                    if "cls" not in s:
                        raise KeyError(f"{url}: classification sample {s['__key__']!r} has no 'cls' label")
                    item["label"] = int(s["cls"])
                yield item
            if decoder.ignored:
                counts = ", ".join(f"{n} .{e}" for e, n in sorted(decoder.ignored.items()))
                print(
                    f"meru embed: warning: {url}: ignored {sum(decoder.ignored.values())} member(s) that are not "
                    f"image/txt/cls/json ({counts}); they are never decoded (could hold pickled code)",
                    file=sys.stderr,
                )


def _all(src):
    return src


class _SafeDecoder:
    """Decode a raw wds sample without running code: images with PIL (fully loaded), ``txt``/``cls`` as
    text, ``json`` with the json module; every other member (``.pyd``/``.pth``/``.pickle``, ...) is
    dropped unread and counted in ``ignored`` (extension -> count)."""

    def __init__(self, url: str):
        self.url, self.ignored = url, {}

    def __call__(self, sample: dict) -> dict:
        from PIL import Image

        out = {"__key__": sample["__key__"]}
        for name, value in sample.items():
            if name.startswith("__"):
                continue
            ext = name.rsplit(".", 1)[-1].lower()
            if ext in IMAGE_EXTS:
                try:
                    with Image.open(io.BytesIO(value)) as im:
                        im.load()
                        out[ext] = im.convert("RGB")
                except Exception as e:  # noqa: BLE001 (PIL raises many types for bad bytes)
                    raise ValueError(f"{self.url}: sample {sample['__key__']!r}: cannot decode .{ext} ({e})") from None
            elif ext in ("txt", "cls"):
                out[ext] = value.decode("utf-8")
            elif ext == "json":
                out[ext] = json.loads(value)
            else:
                self.ignored[ext] = self.ignored.get(ext, 0) + 1
        return out


def _collate(items):
    return items


def _iter_batches(dataset, batch_size: int, num_workers: int):
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    yield from loader


def _wds_dir_of(evalset: str, root: str | None, split: str) -> Path | None:
    from meru.data.evalsets import is_wds_dir

    if Path(evalset).is_dir() and is_wds_dir(evalset, split):
        return Path(evalset)
    if root is not None and Path(root).is_dir() and is_wds_dir(root, split):
        return Path(root)
    return None


def _resolve_prompts(evalset: str, prompts: str, local: Path | None) -> str:
    if prompts != "auto":
        return prompts
    from meru.data.evalsets import _meru_name_for, meru_prompts

    name = None if Path(evalset).is_dir() else _meru_name_for(evalset)
    return "meru" if name is not None and name in meru_prompts()["templates"] else "clip_benchmark"


def _wds_total(local: Path, split: str) -> int | None:
    """Samples in a wds split per its manifest (for progress lines), None when it has none."""
    try:
        manifest = json.loads((local / split / "manifest.json").read_text())
        return int(sum(int(e["num_samples"]) for e in manifest["shards"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def embed_evalset(
    model,
    evalset: str,
    root: str | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    prompts: str = "auto",
    split: str = "test",
    checkpoint: str | None = None,
    prompt_sets: bool = True,
    amp: str = "auto",
) -> EmbeddingCache:
    """Encode a whole evaluation set -> embedding cache (see module docstring).

    ``evalset``: a clip-benchmark wds-layout directory, or a MERU / clip-benchmark name read from ``root``.
    ``amp``: bf16 autocast for the towers (``auto``: on CUDA), see :func:`encode_images`.
    """
    from meru.data.evalsets import build_eval_dataset
    from meru.progress import Progress

    model = model.eval()
    local = _wds_dir_of(evalset, root, split)
    prompts = _resolve_prompts(evalset, prompts, local)
    out = model_info(model, checkpoint)
    out["dataset"] = Path(evalset).name if Path(evalset).is_dir() else evalset
    if (
        local is not None
        and (local / "dataset_type.txt").is_file()
        and (local / "dataset_type.txt").read_text().strip().lower() == "hierarcaps"
    ):
        # HierarCaps: images + 4-level caption hierarchies (meru.evaluation.hierarcaps)
        from meru.evaluation.hierarcaps import embed_hierarcaps

        return EmbeddingCache.from_dict({**out, **embed_hierarcaps(model, local, batch_size, num_workers, split)})
    if local is not None:
        type_file = local / "dataset_type.txt"
        task = (
            "retrieval"
            if type_file.is_file() and type_file.read_text().strip().lower() == "retrieval"
            else "classification"
        )
        ds_info = build_eval_dataset(
            evalset, root if root is not None else local, transform=None, split=split, prompts=prompts
        )
        data = _WdsShards(local, split, task, image_transform(model.image_size, task))
        items_iter = _iter_batches(data, batch_size, num_workers)
        total = _wds_total(local, split)
    else:
        if root is None:
            raise FileNotFoundError(
                f"--evalset {evalset!r} is not a wds-layout directory (no {evalset}/{split}/"
                "nshards.txt); for a named dataset pass --root DIR where its files are"
            )
        ds_info = build_eval_dataset(
            evalset, root, transform=image_transform(model.image_size, "classification"), split=split, prompts=prompts
        )
        task = "classification" if getattr(ds_info, "classes", None) is not None else "retrieval"
        if task == "retrieval":
            ds_info = build_eval_dataset(
                evalset, root, transform=image_transform(model.image_size, "retrieval"), split=split, prompts=prompts
            )
        items_iter = _map_style_batches(ds_info, task, batch_size, num_workers)
        total = len(ds_info) if hasattr(ds_info, "__len__") else None
    out["task"] = task
    progress = Progress(f"meru embed {out['dataset']}", total, "images")
    out["prompt_source"] = getattr(ds_info, "prompt_source", None)

    orders, keys, metas, feats, embs, labels, captions = [], [], [], [], [], [], []
    for batch in items_iter:
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
        raise ValueError(f"{evalset}: the {split} split has no samples")
    perm = sorted(range(len(orders)), key=orders.__getitem__)
    feats, embs = torch.cat(feats)[perm], torch.cat(embs)[perm]
    keys, metas = [keys[i] for i in perm], [metas[i] for i in perm]
    out.update(keys=keys, meta=metas if any(m is not None for m in metas) else None, image_feats=feats, image_emb=embs)
    if task == "classification":
        classnames, templates = list(ds_info.classes), list(ds_info.templates or ["{}"])
        out.update(
            labels=torch.tensor([labels[i] for i in perm], dtype=torch.long),
            classnames=classnames,
            templates=templates,
            class_text_raw=class_text_raw(model, classnames, templates, batch_size, amp),
            class_nodes=_class_nodes(local, evalset, classnames),
        )
        if prompt_sets:  # alternative template sets for prompt sensitivity (meru.evaluation.prompt_sensitivity)
            from meru.evaluation.prompt_sensitivity import embed_prompt_sets

            out["prompt_sets"] = embed_prompt_sets(model, out["dataset"], classnames, batch_size)
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


def _map_style_batches(ds, task: str, batch_size: int, num_workers: int):
    """Batches of item dicts from a map-style (torchvision / clip-benchmark) dataset, in index order."""

    class _Items(torch.utils.data.Dataset):
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            image, target = ds[i]
            item = {"order": (0, i), "key": str(i), "image": image}
            if task == "retrieval":
                item["captions"] = [target] if isinstance(target, str) else list(target)
            else:
                item["label"] = int(target)
            return item

    loader = torch.utils.data.DataLoader(_Items(), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    yield from loader


def _class_nodes(local: Path | None, evalset: str, classnames: list[str]) -> list[str] | None:
    """Taxonomy node per class: ``class_nodes.json`` beside the eval set, or the ImageNet-1k wnids."""
    if local is not None and (local / "class_nodes.json").is_file():
        nodes = json.loads((local / "class_nodes.json").read_text())
        if isinstance(nodes, dict):
            nodes = [nodes[str(i)] for i in range(len(nodes))]
        if len(nodes) != len(classnames):
            raise ValueError(
                f"{local}/class_nodes.json has {len(nodes)} nodes but classnames.txt has {len(classnames)} classes"
            )
        return [str(n) for n in nodes]
    if len(classnames) == 1000 and "imagenet" in evalset.lower():
        from importlib import resources

        lines = resources.files("meru.resources").joinpath("imagenet_wnids.txt").read_text().splitlines()
        wnids = [w.strip() for w in lines if w.strip() and not w.lstrip().startswith("#")]
        if len(wnids) != 1000:
            raise ValueError(
                f"meru/resources/imagenet_wnids.txt lists {len(wnids)} wnids, expected 1000; "
                "restore it from the repository"
            )
        return wnids
    return None


def read_text_pool(path: str | os.PathLike) -> list[dict]:
    """Rows of a caption pool (``captions.jsonl``: ``text``, ``specificity``, ``depth``, ``node``, ``attributes``)."""
    rows = []
    with open(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            if "text" not in row:
                raise KeyError(f"{path}: line {i + 1} has no 'text' field")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: empty caption pool")
    return rows


def embed_text_pool(
    model, pool_path: str | os.PathLike, batch_size: int = 256, checkpoint: str | None = None, amp: str = "auto"
) -> EmbeddingCache:
    """Encode a caption pool -> embedding cache with ``texts``, ``text_emb`` and the pool's annotations."""
    from meru.progress import Progress

    rows = read_text_pool(pool_path)
    out = model_info(model.eval(), checkpoint)
    texts = [r["text"] for r in rows]
    nan = float("nan")
    out.update(
        task="text-pool",
        dataset=Path(pool_path).name,
        texts=texts,
        text_emb=encode_texts(
            model, texts, True, batch_size, amp, Progress(f"meru embed {Path(pool_path).name}", len(texts), "captions")
        ),
        specificity=torch.tensor([float(r.get("specificity", nan)) for r in rows]),
        depth=torch.tensor([float(r.get("depth", nan)) for r in rows]),
        node=[r.get("node") for r in rows],
        attributes=[r.get("attributes") for r in rows],
    )
    return EmbeddingCache.from_dict(out)


# ----------------------------------------------------------------------------- CLI


class _AppendSource(argparse.Action):
    """Collect ``--evalset`` / ``--text-pool`` values in command-line order as (kind, value) pairs."""

    def __call__(self, parser, namespace, values, option_string=None):
        sources = list(getattr(namespace, "sources", None) or [])
        sources.append((self.dest, values))
        namespace.sources = sources


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="our model.pt, an official-format MERU/CLIP .pth (also MERU-family peers such as "
        "HyCoCLIP), or an open_clip model: openclip:ARCH:WEIGHTS | openclip:hf-hub:ORG/REPO | "
        "openclip:local-dir:DIR (CLIP geometry)",
    )
    parser.add_argument(
        "--evalset",
        action=_AppendSource,
        help="clip-benchmark wds-layout directory, or a dataset name (with --root); repeatable",
    )
    parser.add_argument(
        "--text-pool", action=_AppendSource, help="caption pool JSONL (SynthHier eval/captions.jsonl); repeatable"
    )
    parser.add_argument("--root", help="directory holding the named dataset's files")
    parser.add_argument(
        "--out",
        required=True,
        action="append",
        help="output embedding cache (.pt), one per --evalset/--text-pool, in the same order",
    )
    parser.add_argument("--split", default="test", help="split of the eval set (wds: a subfolder; default test)")
    parser.add_argument("--batch-size", type=int, default=256, help="images / texts per forward pass")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loading worker processes")
    parser.add_argument(
        "--prompts",
        choices=("auto", "meru", "clip_benchmark"),
        default="auto",
        help="prompt ensemble: MERU's (where it has one; 'auto') or clip-benchmark's",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--no-prompt-sets",
        dest="prompt_sets",
        action="store_false",
        help="classification: skip the alternative template sets (prompt sensitivity)",
    )
    parser.add_argument(
        "--amp",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="bf16 autocast for the towers (auto: on CUDA; heads always float32)",
    )


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
    try:
        loader = load_openclip if is_openclip_spec(args.checkpoint) else load_model
        model = loader(args.checkpoint).to(_device(args.device))
        for (kind, source), out in zip(sources, args.out):
            if kind == "text_pool":
                cache = embed_text_pool(
                    model, source, args.batch_size, checkpoint=args.checkpoint, amp=getattr(args, "amp", "auto")
                )
            else:
                cache = embed_evalset(
                    model,
                    source,
                    args.root,
                    args.batch_size,
                    args.num_workers,
                    args.prompts,
                    args.split,
                    checkpoint=args.checkpoint,
                    prompt_sets=getattr(args, "prompt_sets", True),
                    amp=getattr(args, "amp", "auto"),
                )
            cache.save(out)
            print(f"meru embed: {cache.task} {cache.dataset}: {cache.n_items()} items -> {out}")
    except (FileNotFoundError, KeyError, ValueError, CheckpointError, ExternalModelError) as e:
        print(f"meru embed: error: {e}", file=sys.stderr)
        return 2
    return 0
