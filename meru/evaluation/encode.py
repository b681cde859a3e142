"""Encoding with a model's towers: images, texts and class prompts -> float32 CPU tensors.

The primitives every task's ``embed`` step uses (:mod:`meru.evaluation.task`); :func:`encode_evalset_images`
is the image pass shared by every evaluation set. On a GPU the towers run under bf16 autocast (``amp="auto"``)
while the image projection and MERU's lift run in float32 (:func:`meru.models.fp32_head`); texts are tokenised
per batch and run at the batch's longest length (rounded up to 8), which gives the same output as
full-context padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _autocast(model, amp: str):
    """bf16 autocast for the towers: ``amp="auto"`` on CUDA only, ``"bf16"`` on any device, ``"fp32"`` never."""
    from contextlib import nullcontext

    if amp not in ("auto", "bf16", "fp32"):
        raise ValueError(f"amp must be auto, bf16 or fp32, got {amp!r}")
    device_type = model.device.type
    if amp == "bf16" or (amp == "auto" and device_type == "cuda"):
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return nullcontext()


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


@dataclass
class ImagePass:
    """The images of an evaluation set encoded once, in file order (N items): ``keys [N]``, ``meta [N]`` (json
    member or None), ``image_feats [N, W]`` (pre-projection), ``image_emb [N, D]``, and per item what the set
    labels it with: ``labels [N]`` (classification) or ``captions [N][*]`` (retrieval), else None entries."""

    keys: list[str]
    meta: list
    image_feats: torch.Tensor
    image_emb: torch.Tensor
    labels: list
    captions: list

    def cache_fields(self) -> dict:
        """The cache fields every image set has: ``keys``, ``meta`` (None when no item has one), the embeddings."""
        meta = self.meta if any(m is not None for m in self.meta) else None
        return {"keys": self.keys, "meta": meta, "image_feats": self.image_feats, "image_emb": self.image_emb}


def encode_evalset_images(model, evalset, batch_size: int = 256, num_workers: int = 0, amp: str = "auto") -> ImagePass:
    """Encode every image of ``evalset`` (:class:`meru.data.evalsets.EvalSet`) -> :class:`ImagePass`; items are
    put back in file order (``order``) when several workers interleave shards. Progress lines on stderr."""
    from meru.progress import Progress

    progress = Progress(f"meru embed {evalset.name}", evalset.num_items, "images")
    orders, items, feats, embs = [], [], [], []
    for batch in evalset.batches(batch_size, num_workers):
        f, e = encode_images(model, torch.stack([it["image"] for it in batch]), amp=amp)
        progress.update(len(batch))
        feats.append(f)
        embs.append(e)
        for it in batch:
            orders.append(it["order"])
            items.append((it["key"], it.get("meta"), it.get("label"), it.get("captions")))
    if not orders:
        raise ValueError(f"{evalset.source}: the {evalset.split} split has no samples")
    perm = sorted(range(len(orders)), key=orders.__getitem__)
    keys, meta, labels, captions = ([items[i][j] for i in perm] for j in range(4))
    return ImagePass(keys, meta, torch.cat(feats)[perm], torch.cat(embs)[perm], labels, captions)
