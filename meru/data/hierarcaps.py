"""HierarCaps test set (Alper & Averbuch-Elor, ECCV 2024; TAU-VAILab/hierarcaps): download and pack.

``data/hierarcaps_test.csv`` of the HierarCaps repository has one row per caption hierarchy:
``id, captions, image_url`` with ``captions`` = four levels, general to specific, joined by ``" => "``
(e.g. ``"bird => blue bird => blue bird sitting on top of branch => A blue bird ..."``), and
``image_url`` a COCO val2014 image (``http://images.cocodataset.org/val2014/COCO_val2014_<id>.jpg``).
An image can have several hierarchies (rows).

``prepare_hierarcaps(root)`` writes clip-benchmark's wds layout, one sample per distinct image::

    root/hierarcaps_test.csv                 # the CSV as downloaded (or as found there)
    root/images/COCO_val2014_<id>.jpg        # downloaded images (kept for re-runs)
    root/test/nshards.txt, root/test/{0..}.tar
        __key__ = image file stem, "jpg" = the image bytes, "txt" = its captions (one per line),
        "json" = {"image_url", "ids": [CSV ids], "hierarchies": [[4 captions] per row, CSV order]}
    root/dataset_type.txt                    # "hierarcaps" (``meru embed`` then caches images + levels)

Images already in ``root/images/`` (or in ``coco_dir``, e.g. a local COCO ``val2014/``) are not
downloaded again. ``test/`` is written to a temporary directory and renamed last, so a failed run
leaves no ``test/nshards.txt``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from meru.io import fresh_temp_dir, replace_dir, write_bytes, write_text

CSV_URL = "https://raw.githubusercontent.com/TAU-VAILab/hierarcaps/main/data/hierarcaps_test.csv"
CSV_NAME = "hierarcaps_test.csv"
LEVELS = 4
SEPARATOR = "=>"


class HierarCapsUnavailable(FileNotFoundError):
    """Files could not be found or downloaded; the message is one line naming what and the fix."""


def parse_csv(path: str | os.PathLike) -> list[dict]:
    """Rows ``{"id": str, "captions": [4 str], "image_url": str}`` of a HierarCaps CSV (in file order)."""
    path = Path(path)
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"id", "captions", "image_url"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {sorted(missing)}; expected a HierarCaps CSV "
                "with columns id,captions,image_url"
            )
        for line, r in enumerate(reader, start=2):
            if None in r or None in r.values():  # csv.DictReader: extra fields under None, missing ones None
                raise ValueError(
                    f"{path}: line {line} has {'more' if None in r else 'fewer'} fields than the columns "
                    f"{','.join(reader.fieldnames)}; quote fields holding commas, or re-download the CSV"
                )
            caps = [c.strip() for c in r["captions"].split(SEPARATOR)]
            if len(caps) != LEVELS or not all(caps):
                raise ValueError(
                    f"{path}: line {line} (id {r['id']}) has {len(caps)} caption levels "
                    f"separated by '{SEPARATOR}'; HierarCaps rows have {LEVELS}"
                )
            rows.append({"id": r["id"].strip(), "captions": caps, "image_url": r["image_url"].strip()})
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def _fetch(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def _image_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _check_image(data: bytes, what: str) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception as e:  # PIL raises many types for bad files
        raise ValueError(f"{what}: not a readable image ({type(e).__name__}: {e})") from e


def prepare_hierarcaps(
    root: str | os.PathLike,
    csv_url: str | None = None,
    coco_dir: str | os.PathLike | None = None,
    threads: int = 16,
    timeout: float = 30.0,
    shard_size: int = 500,
) -> dict:
    """Download (or find) the CSV and its images and write the wds layout (module doc). Returns a summary
    ``{"hierarchies", "images", "downloaded"}``; ``csv_url`` defaults to :data:`CSV_URL`. Raises :class:`HierarCapsUnavailable` when offline."""
    import webdataset as wds

    root = Path(root)
    csv_url = csv_url or CSV_URL
    (root / "images").mkdir(parents=True, exist_ok=True)
    csv_path = root / CSV_NAME
    if not csv_path.is_file():
        try:
            write_bytes(csv_path, _fetch(csv_url, timeout))
        except (urllib.error.URLError, OSError) as e:
            raise HierarCapsUnavailable(
                f"hierarcaps: cannot download {csv_url} ({getattr(e, 'reason', e)}); offline, put {CSV_NAME} "
                f"(TAU-VAILab/hierarcaps data/) in {root}/ and its COCO val2014 images in {root}/images/ "
                "(or pass --coco-dir), then re-run"
            ) from e
    rows = parse_csv(csv_path)

    by_image: dict[str, dict] = {}
    for r in rows:
        name = _image_name(r["image_url"])
        entry = by_image.setdefault(name, {"image_url": r["image_url"], "ids": [], "hierarchies": []})
        entry["ids"].append(r["id"])
        entry["hierarchies"].append(r["captions"])

    def local_copy(name: str) -> Path | None:
        for d in [root / "images"] + ([Path(coco_dir)] if coco_dir else []):
            if (d / name).is_file():
                return d / name
        return None

    todo = [(n, e["image_url"]) for n, e in by_image.items() if local_copy(n) is None]

    def download(item):
        name, url = item
        try:
            data = _fetch(url, timeout)
            _check_image(data, url)
        except (urllib.error.URLError, OSError, ValueError) as e:
            return name, url, str(getattr(e, "reason", e))
        write_bytes(root / "images" / name, data)
        return name, url, None

    failed = []
    if todo:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            failed = [(n, u, err) for n, u, err in pool.map(download, todo) if err is not None]
    if failed:
        name, url, err = failed[0]
        raise HierarCapsUnavailable(
            f"hierarcaps: {len(failed)} of {len(by_image)} images could not be downloaded (first: {url}: {err}); "
            f"put them in {root}/images/ (or pass --coco-dir with COCO val2014) and re-run (finished downloads are kept)"
        )

    tmp = fresh_temp_dir(root / "test")  # killed runs' temporaries removed first
    names = list(by_image)
    n_shards = 0
    for start in range(0, len(names), shard_size):
        with wds.TarWriter(str(tmp / f"{n_shards}.tar")) as w:
            for name in names[start : start + shard_size]:
                e = by_image[name]
                data = local_copy(name).read_bytes()
                _check_image(data, str(local_copy(name)))
                captions = [c for h in e["hierarchies"] for c in h]
                w.write(
                    {
                        "__key__": Path(name).stem,
                        "jpg": data,
                        "txt": "\n".join(captions),
                        "json": json.dumps(e).encode(),
                    }
                )
        n_shards += 1
    (tmp / "nshards.txt").write_text(f"{n_shards}\n")
    write_text(root / "dataset_type.txt", "hierarcaps\n")
    replace_dir(tmp, root / "test")
    return {"hierarchies": len(rows), "images": len(names), "downloaded": len(todo)}


# ----------------------------------------------------------------------------- reading the packed set


@dataclass
class CaptionHierarchies:
    """The caption hierarchies of a packed HierarCaps split, images in file order (M images, H hierarchies).

    ``keys [M]``: image keys; ``meta [M]``: their json dicts; caption ``k = 4 h + l`` is level ``l`` of
    hierarchy ``h``: ``texts [4H]``, ``levels [4H]`` (0 general .. 3 specific), ``text_to_image [4H]`` (image
    row), ``hierarchy_ids [H]`` (CSV ids)."""

    keys: list[str]
    meta: list[dict]
    texts: list[str]
    levels: list[int]
    text_to_image: list[int]
    hierarchy_ids: list[str]


def read_hierarchies(directory: str | os.PathLike, split: str = "test") -> CaptionHierarchies:
    """Read the json members of ``directory/split`` (no image decoding, nothing unpickled) in file order."""
    import webdataset as wds

    directory = Path(directory)
    n = int((directory / split / "nshards.txt").read_text().strip())
    keys, metas = [], []
    for i in range(n):
        url = directory / split / f"{i}.tar"
        if not url.is_file():
            raise FileNotFoundError(f"{directory}/{split}/nshards.txt says {n} shards but {url} is missing")
        for s in wds.tarfile_to_samples()(iter([{"url": str(url)}])):
            raw = s.get("json")
            try:
                meta = json.loads(raw) if raw is not None else None
            except ValueError as e:
                raise ValueError(f"{url}: sample {s['__key__']!r}: invalid json ({e})") from None
            keys.append(s["__key__"])
            metas.append(meta)
    if not keys:
        raise ValueError(f"{directory}: the {split} split has no samples")
    texts, levels, t2i, hier_ids = [], [], [], []
    for row, (key, meta) in enumerate(zip(keys, metas)):
        if not isinstance(meta, dict) or "hierarchies" not in meta:
            raise KeyError(
                f"{directory}: sample {key!r} has no json 'hierarchies'; re-run `meru evalsets prepare --dataset hierarcaps`"
            )
        for hid, hier in zip(meta["ids"], meta["hierarchies"]):
            if len(hier) != LEVELS:
                raise ValueError(f"{directory}: hierarchy {hid} of {key!r} has {len(hier)} levels, not {LEVELS}")
            texts.extend(hier)
            levels.extend(range(LEVELS))
            t2i.extend([row] * LEVELS)
            hier_ids.append(str(hid))
    return CaptionHierarchies(keys, metas, texts, levels, t2i, hier_ids)


def open_hierarcaps(directory: str | os.PathLike, split: str = "test", image_size: int = 224, name: str = "hierarcaps"):
    """:class:`meru.data.evalsets.EvalSet` (task ``hierarcaps``) of a packed split: images resized + centre
    cropped (as HierarCaps' CLIP processor), captions per item (one per line), ``hierarchies`` read up front."""
    from meru.data.evalsets import EvalSet, image_transform
    from meru.data.wds_eval import WdsShards, iter_batches

    directory = Path(directory)
    hierarchies = read_hierarchies(directory, split)
    data = WdsShards(directory, split, "retrieval", image_transform(image_size, "classification"))
    return EvalSet(
        name=name,
        task="hierarcaps",
        split=split,
        source=str(directory),
        num_items=len(hierarchies.keys),
        hierarchies=hierarchies,
        _batches=lambda batch_size, num_workers: iter_batches(data, batch_size, num_workers),
    )
