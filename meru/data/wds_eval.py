"""Reading evaluation images: clip-benchmark wds splits (without running code) and map-style datasets.

The layout (which files, how many shards) is :mod:`meru.data.wds_layout`'s; this module decodes the samples.
Used by :func:`meru.data.evalsets.open_evalset` (HierarCaps included); items are dicts
``{"order": (shard, position), "key", "image", "meta", "label" | "captions"}`` (:class:`meru.data.evalsets.EvalSet`).
Kept apart from ``evalsets`` so that the dataset table (config checks) does not import torch.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import torch

from meru.data.wds_layout import shard_paths

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


class WdsShards(torch.utils.data.IterableDataset):
    """Samples of a clip-benchmark wds split in file order, tagged (shard, position) so the
    output can be put back in order when several workers read different shards."""

    def __init__(self, directory: Path, split: str, task: str, transform):
        self.urls = [str(p) for p in shard_paths(directory, split)]
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


def iter_batches(dataset, batch_size: int, num_workers: int):
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    yield from loader


def map_style_batches(ds, task: str, batch_size: int, num_workers: int):
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


def images_by_key(directory: str | Path, keys, split: str = "test") -> dict:
    """``{key: PIL RGB image}`` for the samples of a wds split whose ``__key__`` is in ``keys`` (e.g. the
    thumbnails of a traversal figure); keys not found are left out. Reads only image members (no decoder
    runs code); raises ``FileNotFoundError`` naming ``nshards.txt`` when ``directory`` is not a wds split."""
    import tarfile

    from PIL import Image

    wanted, out = set(keys), {}
    listing = Path(directory) / split / "nshards.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} missing: {directory} is not a clip-benchmark wds folder")
    for i in range(int(listing.read_text().strip())):
        with tarfile.open(Path(directory) / split / f"{i}.tar") as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if key in wanted and key not in out and ext.lower() in IMAGE_EXTS and member.isfile():
                    with Image.open(io.BytesIO(tar.extractfile(member).read())) as im:
                        out[key] = im.convert("RGB")
        if len(out) == len(wanted):
            break
    return out
