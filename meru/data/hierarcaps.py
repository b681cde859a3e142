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

(files as :mod:`meru.data.wds_layout` writes them; tar members get a fixed mtime, so re-runs give the same bytes).

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

from meru.data import wds_layout
from meru.io import fresh_temp_dir, replace_dir, write_bytes

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


def _csv_rows(root: Path, csv_url: str, timeout: float) -> list[dict]:
    """The CSV's rows (:func:`parse_csv`), downloaded into ``root`` first unless it is there."""
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
    return parse_csv(csv_path)


def _group_by_image(rows: list[dict]) -> dict[str, dict]:
    """Image file name -> ``{"image_url", "ids", "hierarchies"}`` (the sample's json), CSV order."""
    by_image: dict[str, dict] = {}
    for r in rows:
        name = _image_name(r["image_url"])
        entry = by_image.setdefault(name, {"image_url": r["image_url"], "ids": [], "hierarchies": []})
        entry["ids"].append(r["id"])
        entry["hierarchies"].append(r["captions"])
    return by_image


def _local_copy(name: str, folders: list[Path]) -> Path | None:
    for d in folders:
        if (d / name).is_file():
            return d / name
    return None


def _download_images(todo: list[tuple[str, str]], images: Path, n_total: int, threads: int, timeout: float) -> None:
    """Download ``[(file name, url)]`` into ``images``; every failure is reported in one line after all tried."""

    def download(item):
        name, url = item
        try:
            data = _fetch(url, timeout)
            _check_image(data, url)
        except (urllib.error.URLError, OSError, ValueError) as e:
            return name, url, str(getattr(e, "reason", e))
        write_bytes(images / name, data)
        return name, url, None

    failed = []
    if todo:
        with ThreadPoolExecutor(max(1, threads)) as pool:
            failed = [(n, u, err) for n, u, err in pool.map(download, todo) if err is not None]
    if failed:
        name, url, err = failed[0]
        root = images.parent
        raise HierarCapsUnavailable(
            f"hierarcaps: {len(failed)} of {n_total} images could not be downloaded (first: {url}: {err}); "
            f"put them in {root}/images/ (or pass --coco-dir with COCO val2014) and re-run (finished downloads are kept)"
        )


def _samples(by_image: dict[str, dict], folders: list[Path]):
    """One wds sample per image (module doc), each image checked readable."""
    for name, e in by_image.items():
        path = _local_copy(name, folders)
        data = path.read_bytes()
        _check_image(data, str(path))
        captions = [c for h in e["hierarchies"] for c in h]
        yield {"__key__": Path(name).stem, "jpg": data, "txt": "\n".join(captions), "json": json.dumps(e).encode()}


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
    from meru.data.shards import FIXED_MTIME

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = _csv_rows(root, csv_url or CSV_URL, timeout)
    by_image = _group_by_image(rows)
    folders = [root / "images"] + ([Path(coco_dir)] if coco_dir else [])
    todo = [(n, e["image_url"]) for n, e in by_image.items() if _local_copy(n, folders) is None]
    _download_images(todo, root / "images", len(by_image), threads, timeout)
    tmp = fresh_temp_dir(root / "test")  # killed runs' temporaries removed first
    wds_layout.write_split(tmp, _samples(by_image, folders), shard_size, mtime=FIXED_MTIME)
    wds_layout.write_set_files(root, "hierarcaps")
    replace_dir(tmp, root / "test")
    return {"hierarchies": len(rows), "images": len(by_image), "downloaded": len(todo)}


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
    directory = Path(directory)
    keys, metas = [], []
    for key, meta, _ in wds_layout.json_members(directory, split):
        keys.append(key)
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
