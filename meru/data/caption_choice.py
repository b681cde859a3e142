"""Caption-choice sets (SugarCrepe, ARO): read the released annotation files and pack them in the wds layout.

A caption-choice item is one image, its true caption and one or more hard negatives; the model's own
similarity (:mod:`meru.evaluation.caption_choice`) picks one caption. The released files:

* **SugarCrepe** (Hsieh et al., NeurIPS 2023; RAIVNLab/sugar-crepe ``data/<subset>.json``; clip-benchmark's
  ``sugar_crepe/<subset>`` reads the same files from its ``root``): one JSON object per subset,
  ``{id: {"filename": "000000252219.jpg", "caption": str, "negative_caption": str}}``, images from COCO
  val2017 (``root/val2017/``). Subsets :data:`SUGAR_CREPE_SUBSETS`.
* **ARO** VG-Relation / VG-Attribution (Yuksekgonul et al., ICLR 2023; mertyg/vision-language-models-are-bows):
  a JSON list ``[{"image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption",
  "relation_name" | "attributes": [a, b]}]`` (``visual_genome_relation.json`` / ``visual_genome_attribution.json``),
  images in ``root/images/`` cropped to the box, as ARO does. The group of an item (relation name, or the
  attribute pair ``a_b``) gives ARO's macro accuracy. COCO-Order / Flickr30k-Order are not released as files
  (ARO generates their negatives at run time with spaCy and random shuffles), so they are not read here.

``prepare_caption_choice(dataset, root, source, images)`` writes ``root`` in the clip-benchmark wds layout
(:mod:`meru.data.wds_layout`, dataset type ``caption-choice``), one sample per item in annotation order::

    __key__ = 6-digit item index, "jpg"/"png" = the image (ARO: the crop, PNG), "txt" = its captions, true first,
    "json" = {"id", "image", "true_caption", "false_captions": [str], "group": str | None, "bbox": [x, y, w, h] | None}

:func:`read_choices` reads the json members back (the captions' one home; ``txt`` is for other readers).
Nothing here downloads: without the files, one line says where to put them.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from meru.data import wds_layout
from meru.io import fresh_temp_dir, replace_dir

SUGAR_CREPE_SUBSETS = ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")
#: ARO subset -> annotation file of the official repository
ARO_FILES = {"vg_relation": "visual_genome_relation.json", "vg_attribution": "visual_genome_attribution.json"}
#: the caption-choice sets as the workflow config names them (``evaluation.caption_choice``)
CAPTION_CHOICE_SETS = tuple(f"sugar_crepe/{s}" for s in SUGAR_CREPE_SUBSETS) + tuple(f"aro/{s}" for s in ARO_FILES)
FAMILIES = {"sugar_crepe": "val2017", "aro": "images"}  # family -> its default image folder under the source
SOURCES = {
    "sugar_crepe": "https://github.com/RAIVNLab/sugar-crepe (data/<subset>.json) and COCO val2017 images",
    "aro": "https://github.com/mertyg/vision-language-models-are-bows (visual_genome_*.json, vgr_vga_images.zip)",
}


class CaptionChoiceUnavailable(FileNotFoundError):
    """Annotation or image files are missing; the message is one line naming them and where they go."""


@dataclass(frozen=True)
class ChoiceItem:
    """One item: ``image`` (file relative to the image folder), the true caption, the hard negatives (>= 1),
    ``group`` (ARO: relation / attribute pair; else None), ``bbox`` ``(x, y, w, h)`` to crop (ARO) or None."""

    id: str
    image: str
    true_caption: str
    false_captions: tuple[str, ...]
    group: str | None = None
    bbox: tuple[float, float, float, float] | None = None


def set_name(entry: str) -> str:
    """Evaluation-set (folder, record dataset) name of a config entry: ``sugar_crepe/add_att`` -> ``sugar_crepe_add_att``."""
    family, subset = split_set(entry)
    return f"{family}_{subset}"


def split_set(name: str) -> tuple[str, str]:
    """``(family, subset)`` of ``sugar_crepe/add_att`` or ``sugar_crepe_add_att`` (KeyError for another name)."""
    for entry in CAPTION_CHOICE_SETS:
        family, subset = entry.split("/")
        if name in (entry, f"{family}_{subset}"):
            return family, subset
    raise KeyError(f"{name!r} is not a caption-choice set (one of {', '.join(CAPTION_CHOICE_SETS)})")


def is_caption_choice_set(name: str) -> bool:
    try:
        split_set(name)
    except KeyError:
        return False
    return True


# ----------------------------------------------------------------------------- annotation readers


def _load_json(path: Path, what: str):
    if not path.is_file():
        raise CaptionChoiceUnavailable(f"{path}: {what} annotation file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({str(e).splitlines()[0]}); re-download the {what} file") from None


def _text(entry: dict, key: str, where: str) -> str:
    value = entry.get(key) if isinstance(entry, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key!r} is missing or not a non-empty string")
    return value


def read_sugar_crepe(path: str | os.PathLike) -> list[ChoiceItem]:
    """Items of a SugarCrepe subset file ``{id: {"filename", "caption", "negative_caption"}}`` in file order
    (``negative_caption`` may also be a list of strings)."""
    path = Path(path)
    data = _load_json(path, "SugarCrepe")
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON object {{id: {{filename, caption, negative_caption}}}}")
    items = []
    for key, entry in data.items():
        where = f"{path}: item {key!r}"
        negatives = entry.get("negative_caption") if isinstance(entry, dict) else None
        negatives = [negatives] if isinstance(negatives, str) else negatives
        if not isinstance(negatives, list) or not negatives or not all(isinstance(n, str) for n in negatives):
            raise ValueError(f"{where}: 'negative_caption' is missing or not a string (or list of strings)")
        items.append(
            ChoiceItem(str(key), _text(entry, "filename", where), _text(entry, "caption", where), tuple(negatives))
        )
    return items


def _aro_group(entry: dict, where: str) -> str | None:
    """ARO's group of an item: ``relation_name`` (VG-Relation) or the attribute pair ``a_b`` (VG-Attribution)."""
    if "relation_name" in entry:
        return str(entry["relation_name"])
    attributes = entry.get("attributes")
    if attributes is None:
        return None
    if not isinstance(attributes, list) or len(attributes) != 2:
        raise ValueError(f"{where}: 'attributes' must be a list of two attributes")
    return f"{attributes[0]}_{attributes[1]}"


def read_aro(path: str | os.PathLike) -> list[ChoiceItem]:
    """Items of an ARO VG file ``[{"image_path", "bbox_x/y/w/h", "true_caption", "false_caption", ...}]`` in
    file order; the box is ``(x, y, w, h)`` in pixels."""
    path = Path(path)
    data = _load_json(path, "ARO")
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON list of {{image_path, true_caption, false_caption, ...}}")
    items = []
    for i, entry in enumerate(data):
        where = f"{path}: item {i}"
        box = [entry.get(k) if isinstance(entry, dict) else None for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box) or box[2] <= 0 or box[3] <= 0:
            raise ValueError(f"{where}: bbox_x/bbox_y/bbox_w/bbox_h must be numbers with a positive width and height")
        false = _text(entry, "false_caption", where)
        items.append(
            ChoiceItem(
                str(i),
                _text(entry, "image_path", where),
                _text(entry, "true_caption", where),
                (false,),
                _aro_group(entry, where),
                tuple(float(v) for v in box),
            )
        )
    return items


def annotation_path(family: str, subset: str, source: Path) -> Path:
    """Where a set's annotation file sits in its source folder (clip-benchmark's / ARO's own names)."""
    return source / (f"{subset}.json" if family == "sugar_crepe" else ARO_FILES[subset])


def read_set(name: str, source: str | os.PathLike) -> list[ChoiceItem]:
    """Items of the set ``name`` (:func:`split_set`) from its annotation file in ``source``."""
    family, subset = split_set(name)
    path = annotation_path(family, subset, Path(source))
    if not path.is_file():
        raise CaptionChoiceUnavailable(
            f"{name}: {path} not found; put the released annotation file there ({SOURCES[family]}) or pass --source "
            f"DIR (workflow: evaluation.caption_choice_sources.{family}), and re-run"
        )
    return read_sugar_crepe(path) if family == "sugar_crepe" else read_aro(path)


# ----------------------------------------------------------------------------- packing


def _image_member(item: ChoiceItem, images: Path) -> tuple[str, bytes]:
    """(wds extension, bytes) of an item's image: the file as it is, or (with a box) the crop as PNG."""
    from PIL import Image

    path = images / item.image
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if item.bbox is None:
                ext = (im.format or "jpeg").lower().replace("jpeg", "jpg")
                return (ext if ext in ("jpg", "png", "webp") else "png"), data
            x, y, w, h = item.bbox
            out = io.BytesIO()
            im.convert("RGB").crop((x, y, x + w, y + h)).save(out, format="PNG")
            return "png", out.getvalue()
    except Exception as e:  # noqa: BLE001 (PIL raises many types for bad files)
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e}); replace the file") from None


def _samples(items: list[ChoiceItem], images: Path):
    for index, item in enumerate(items):
        ext, data = _image_member(item, images)
        meta = {
            "id": item.id,
            "image": item.image,
            "true_caption": item.true_caption,
            "false_captions": list(item.false_captions),
            "group": item.group,
            "bbox": None if item.bbox is None else list(item.bbox),
        }
        captions = [item.true_caption, *item.false_captions]
        txt = "\n".join(" ".join(c.split()) for c in captions)
        yield {"__key__": f"{index:06d}", ext: data, "txt": txt, "json": json.dumps(meta).encode()}


def prepare_caption_choice(
    dataset: str,
    root: str | os.PathLike,
    source: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    shard_size: int = 1000,
) -> dict:
    """Pack the set ``dataset`` (``sugar_crepe/add_att`` or ``sugar_crepe_add_att``, ...) into ``root`` (module
    doc). ``source``: the folder with the released annotation file (default ``root``); ``images``: the image
    folder (default ``source/val2017`` for SugarCrepe, ``source/images`` for ARO). ``root/test`` is written to a
    temporary folder and renamed last. Returns ``{"items", "images"}``."""
    from meru.data.shards import FIXED_MTIME

    family, _ = split_set(dataset)
    root = Path(root)
    source = Path(source) if source is not None else root
    images = Path(images) if images is not None else source / FAMILIES[family]
    items = read_set(dataset, source)
    missing = sorted({it.image for it in items if not (images / it.image).is_file()})
    if missing:
        raise CaptionChoiceUnavailable(
            f"{dataset}: {len(missing)} of {len({it.image for it in items})} images are not in {images} (first: "
            f"{missing[0]}); put them there ({SOURCES[family]}) or pass --images DIR, and re-run"
        )
    root.mkdir(parents=True, exist_ok=True)
    tmp = fresh_temp_dir(root / "test")
    wds_layout.write_split(tmp, _samples(items, images), shard_size, mtime=FIXED_MTIME)
    wds_layout.write_set_files(root, "caption-choice")
    replace_dir(tmp, root / "test")
    return {"items": len(items), "images": len({it.image for it in items})}


# ----------------------------------------------------------------------------- reading the packed set


@dataclass
class CaptionChoices:
    """The items of a packed caption-choice split in file order (N items, M captions): ``keys [N]``, ``meta [N]``
    (json dicts); caption ``j`` is ``texts[j]`` of item ``text_to_image[j]``, ``truth[j]`` 1 for the item's true
    caption and 0 for a hard negative; each item's true caption comes first."""

    keys: list[str]
    meta: list[dict]
    texts: list[str]
    truth: list[int]
    text_to_image: list[int]


def read_choices(directory: str | os.PathLike, split: str = "test") -> CaptionChoices:
    """Read the json members of ``directory/split`` (no image decoding, nothing unpickled) in file order."""
    directory = Path(directory)
    out = CaptionChoices([], [], [], [], [])
    for row, (key, meta, url) in enumerate(wds_layout.json_members(directory, split)):
        negatives = meta.get("false_captions") if isinstance(meta, dict) else None
        true = meta.get("true_caption") if isinstance(meta, dict) else None
        if not isinstance(true, str) or not isinstance(negatives, list) or not negatives:
            raise KeyError(
                f"{url}: sample {key!r} has no json 'true_caption' and 'false_captions'; re-run "
                "`meru evalsets prepare` for this set"
            )
        captions = [true, *negatives]
        if not all(isinstance(c, str) for c in captions):
            raise ValueError(
                f"{url}: sample {key!r} has a caption that is not a string; re-run `meru evalsets prepare`"
            )
        out.keys.append(key)
        out.meta.append(meta)
        out.texts.extend(captions)
        out.truth.extend([1] + [0] * len(negatives))
        out.text_to_image.extend([row] * len(captions))
    if not out.keys:
        raise ValueError(f"{directory}: the {split} split has no samples")
    return out
