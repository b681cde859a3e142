"""`meru embed`: compute embeddings of an evaluation set once and cache them; every metric reads the cache.

Cache (``torch.save`` dict, ``"format": "meru-bench/embeddings/1"``): model identity (``kind``, ``size``,
``seed``, ``label``, ``curv``, ``visual_alpha``, ``textual_alpha``) and, by dataset type:

* classification: ``image_emb [N,D]`` (projected/lifted), ``image_feats [N,W]`` (pre-projection, for the
  linear probe), ``labels [N]``, ``classnames``, ``templates``, ``class_text_raw [T,C,D]`` (raw projected
  text features of every template x class, ensembled at evaluation time), ``class_nodes`` (taxonomy node
  per class, if the set has ``class_nodes.json``), ``meta`` (per-image JSON, if present);
* retrieval: ``image_emb``, ``image_feats``, ``texts [M]``, ``text_emb [M,D]``, ``text_to_image [M]``, ``meta``;
* text pool: ``texts``, ``text_emb``, ``text_raw``, ``specificity``, ``depth``, ``node``.

Preprocessing follows the official evaluation: classification resizes the short side (bicubic) and
center-crops to the model's image size; retrieval squeezes to ``S x S``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T

FORMAT = "meru-bench/embeddings/1"
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


def image_transform(image_size: int, squeeze: bool) -> T.Compose:
    resize = T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BICUBIC) if squeeze else \
        T.Compose([T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)])
    return T.Compose([resize, T.ToTensor()])


def read_local_wds(directory: Path, split: str = "test"):
    """Read a clip-benchmark wds-layout directory with webdataset, keeping our per-sample ``json``.

    Yields dicts ``{"key", "image" (PIL), "cls" (int|None), "txt" (str|None), "json" (dict|None)}``."""
    import webdataset as wds

    nshards_file = directory / split / "nshards.txt"
    if not nshards_file.exists():
        raise FileNotFoundError(f"{nshards_file}: missing; {directory} is not a clip-benchmark wds-layout evaluation set "
                                f"(expected {split}/nshards.txt and {split}/0.tar ...). Re-create it (e.g. `meru synth`).")
    n = int(nshards_file.read_text().strip())
    urls = [str(directory / split / f"{i}.tar") for i in range(n)]
    for sample in wds.WebDataset(urls, shardshuffle=False, nodesplitter=lambda s: s, workersplitter=lambda s: s):
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None:
            raise ValueError(f"{directory}: sample {sample.get('__key__')} has no image ({IMAGE_EXTS})")
        yield {
            "key": sample["__key__"],
            "image": Image.open(io.BytesIO(sample[ext])).convert("RGB"),
            "cls": int(sample["cls"].decode()) if "cls" in sample else None,
            "txt": sample["txt"].decode() if "txt" in sample else None,
            "json": json.loads(sample["json"]) if "json" in sample else None,
        }


def _batched(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def model_identity(model, checkpoint: str) -> dict:
    info = getattr(model, "checkpoint_info", {}) or {}
    seed = ((info.get("config") or {}).get("runtime") or {}).get("seed")
    ident = {"format": FORMAT, "kind": model.kind, "size": model.size, "seed": seed, "checkpoint": str(checkpoint),
             "curv": None, "visual_alpha": 1.0, "textual_alpha": 1.0}
    if model.kind == "meru":
        ident.update(curv=float(model.curv.detach().exp()), visual_alpha=float(model.visual_alpha.detach().exp()),
                     textual_alpha=float(model.textual_alpha.detach().exp()))
    return ident


@torch.no_grad()
def encode_texts(model, texts: list[str], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw projected features and embeddings, ``[M, D]`` each."""
    raws, embs = [], []
    for chunk in _batched(texts, batch_size):
        raw = model.encode_text(model.tokenize(chunk), project=False).float()
        raws.append(raw)
        embs.append(model.space().lift(raw, float(model.textual_alpha.detach().exp())) if model.kind == "meru"
                    else torch.nn.functional.normalize(raw, dim=-1))
    return torch.cat(raws), torch.cat(embs)


@torch.no_grad()
def embed_images(model, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack(images)
    feats = model.image_features(x).float()
    raw = model.visual.head(feats).float()
    emb = model.space().lift(raw, float(model.visual_alpha.detach().exp())) if model.kind == "meru" else \
        torch.nn.functional.normalize(raw, dim=-1)
    return feats, emb


def embed_evalset(model, source: str, root: str | None = None, batch_size: int = 256, num_workers: int = 0) -> dict:
    """Embed a local wds-layout directory (our SynthHier sets, offline copies) or a clip-benchmark dataset."""
    path = Path(source)
    out: dict = {"dataset": path.name if path.is_dir() else source}
    if path.is_dir():
        dtype_file = path / "dataset_type.txt"
        task = dtype_file.read_text().strip().lower() if dtype_file.exists() else "classification"
        squeeze = task == "retrieval"
        tf = image_transform(model.image_size, squeeze)
        feats, embs, labels, meta, texts, t2i, keys = [], [], [], [], [], [], []
        for batch in _batched(read_local_wds(path), batch_size):
            f, e = embed_images(model, [tf(s["image"]) for s in batch])
            feats.append(f), embs.append(e)
            for s in batch:
                idx = len(keys)
                keys.append(s["key"])
                meta.append(s["json"])
                if task == "retrieval":
                    for line in (s["txt"] or "").splitlines():
                        if line.strip():
                            texts.append(line.strip()), t2i.append(idx)
                else:
                    labels.append(s["cls"])
        out.update(task=task, keys=keys, meta=meta, image_feats=torch.cat(feats), image_emb=torch.cat(embs))
        if task == "retrieval":
            raw, temb = encode_texts(model, texts, batch_size)
            out.update(texts=texts, text_emb=temb, text_raw=raw, text_to_image=torch.tensor(t2i))
        else:
            classnames = [c.strip() for c in (path / "classnames.txt").read_text().splitlines() if c.strip()]
            templates = [t.strip() for t in (path / "zeroshot_classification_templates.txt").read_text().splitlines() if t.strip()]
            out.update(labels=torch.tensor(labels), classnames=classnames, templates=templates)
            if (path / "class_nodes.json").exists():
                out["class_nodes"] = json.loads((path / "class_nodes.json").read_text())
    else:
        from meru.data.evalsets import build_eval_dataset

        ds = build_eval_dataset(source, root, transform=image_transform(model.image_size, False))
        classnames, templates = list(ds.classes), list(ds.templates)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=num_workers)
        feats, embs, labels = [], [], []
        for images, y in loader:
            f, e = embed_images(model, list(images))
            feats.append(f), embs.append(e), labels.append(torch.as_tensor(y))
        out.update(task="classification", image_feats=torch.cat(feats), image_emb=torch.cat(embs),
                   labels=torch.cat(labels), classnames=classnames, templates=templates)
    if out["task"] == "classification":
        prompts = [t.replace("{c}", c) if "{c}" in t else t.format(c) for t in out["templates"] for c in out["classnames"]]
        raw, _ = encode_texts(model, prompts, batch_size)
        out["class_text_raw"] = raw.view(len(out["templates"]), len(out["classnames"]), -1)
    return out


def embed_text_pool(model, pool_file: str, batch_size: int = 256) -> dict:
    rows = [json.loads(line) for line in Path(pool_file).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{pool_file}: empty caption pool")
    texts = [r["text"] for r in rows]
    raw, emb = encode_texts(model, texts, batch_size)
    return {"task": "text-pool", "dataset": Path(pool_file).stem, "texts": texts, "text_raw": raw, "text_emb": emb,
            "specificity": torch.tensor([int(r.get("specificity", -1)) for r in rows]),
            "depth": torch.tensor([int(r.get("depth", -1)) for r in rows]), "node": [r.get("node") for r in rows]}


def save_cache(payload: dict, out: str | os.PathLike) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, out)


def load_cache(path: str | os.PathLike) -> dict:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a meru-bench embedding cache (expected format {FORMAT!r}); re-run `meru embed`.")
    return blob


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="our model.pt or an official .pth")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--evalset", help="wds-layout directory, or a clip-benchmark / MERU dataset name")
    src.add_argument("--text-pool", help="captions.jsonl (SynthHier caption pool)")
    parser.add_argument("--root", default=None, help="dataset root for named datasets")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)


def run(args: argparse.Namespace) -> int:
    from meru.models.checkpoints import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    payload = model_identity(model, args.checkpoint)
    if args.text_pool:
        payload.update(embed_text_pool(model, args.text_pool, args.batch_size))
    else:
        payload.update(embed_evalset(model, args.evalset, args.root, args.batch_size, args.num_workers))
    save_cache(payload, args.out)
    n = len(payload.get("texts", [])) if args.text_pool else payload["image_emb"].shape[0]
    print(json.dumps({"out": args.out, "task": payload["task"], "n": n}))
    return 0
