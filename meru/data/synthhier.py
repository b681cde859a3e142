"""SynthHier: a generated image-caption dataset with a known concept hierarchy (``meru synth``).

Each image shows 1-3 copies of one shape (a taxonomy leaf) in the cells of a 2x2 grid, with a size,
a colour and a background texture. Concepts form a 4-level taxonomy::

    object -> category (shape, sign) -> family (polygon, curve, mark, letter) -> 12 shapes

A caption names one taxonomy node on the image's root-to-leaf path (depth ``L`` = 0 root .. 3 leaf)
plus a subset ``A`` of the attributes (count, size, colour, texture); its specificity is
``L + |A|`` in 0..7. "an object." is true of every image; "two small red triangles on stripes." of
few. Without a count the caption is existential ("a red triangle" is true of an image with two).
Training samples store 3 captions per specificity level (random node/attribute subsets and prefixes
such as "a photo of "), from which the loader draws one fresh caption per step; zero-shot templates
use the same prefixes, so prompts are in-distribution.

Output layout (``docs/CONTRACTS.md``)::

    DIR/train/                 webdataset shards + manifest.json (png, txt, json)
    DIR/eval/zeroshot_{level}/ clip-benchmark wds layout, level in category/family/shape (cls, png, json)
    DIR/eval/zeroshot_{attr}/  the same test images labelled by an attribute, attr in colour/count/size/texture;
                               class names are root phrases ("a red object", "two objects"), class_values.json
                               the attribute values in label order (generator version >= 2)
    DIR/eval/retrieval/        clip-benchmark wds layout (png, txt, json): test images with a unique
                               most-specific caption (first occurrence in the test set)
    DIR/eval/captions.jsonl    caption pool: every node x attribute assignment, unique texts
    DIR/eval/caption_matches.json  retrieval image -> pool indices of its true captions
    DIR/taxonomy.txt, DIR/taxonomy_names.json, DIR/info.json

Everything is a function of the arguments (byte-identical shards on re-runs) and is written into
``DIR.tmp-<pid>`` and renamed to ``DIR`` when complete.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from meru.arguments import add_synth_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru.data.captions import (
    ATTRIBUTE_TEMPLATES,
    CAPTIONS_PER_SPECIFICITY,
    PREFIXES,
    SYNTH_ATTRIBUTES,
    TEMPLATES,
    attribute_subsets,
    synth_caption,
    synth_phrase,
    synth_specificity,
    synth_training_captions,
)
from meru.data import wds_layout
from meru.data.cards import CARD_NAME, synthhier_card
from meru.data.manifest import write_manifest
from meru.data.shards import FIXED_MTIME, write_shards
from meru.io import fresh_temp_dir, read_json, replace_dir, write_text

GENERATOR = "meru-bench/synthhier"
GENERATOR_VERSION = 2  # 2: eval/zeroshot_{attr} attribute sets (1: taxonomy levels only; train data unchanged)
SUPERSAMPLE = 4  # shapes are drawn at 4x resolution and box-filtered down (anti-aliasing)

ROOT = "object"
# category -> family -> leaves (names: singular, plural)
TREE: dict[str, dict[str, list[str]]] = {
    "shape": {"polygon": ["triangle", "square", "hexagon"], "curve": ["circle", "ring", "crescent"]},
    "sign": {"mark": ["cross", "star", "chevron"], "letter": ["letter T", "letter L", "letter H"]},
}
LEVELS = ("category", "family", "shape")  # taxonomy levels below the root, depth 1..3

COUNTS = (1, 2, 3)
SIZES = ("small", "large")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 175, 60),
    "blue": (55, 95, 235),
    "yellow": (235, 215, 40),
    "purple": (155, 60, 205),
    "white": (240, 240, 240),
}
TEXTURES = ("plain", "stripes", "dots")
ATTRIBUTES = SYNTH_ATTRIBUTES  # caption rules (word order, plurals, prefixes): meru.data.captions
ATTRIBUTE_VALUES = {"count": COUNTS, "size": SIZES, "colour": tuple(COLOURS), "texture": TEXTURES}
CELL_NAMES = ("top left", "top right", "bottom left", "bottom right")
ATTRIBUTE_SETS = tuple(sorted(ATTRIBUTES))  # zero-shot attribute tasks eval/zeroshot_{attr}, in table order

MAX_SPECIFICITY = len(LEVELS) + len(ATTRIBUTES)  # 7


# ---------------------------------------------------------------------------------------------------
# taxonomy


def node_id(level: str, name: str) -> str:
    """Node id without spaces, e.g. ``shape.letter_T``; the root is ``object``."""
    return ROOT if level == "root" else f"{level}.{name.replace(' ', '_')}"


@lru_cache(maxsize=1)
def taxonomy() -> dict:
    """Nodes in a fixed order: ``ids`` per level, ``names``, ``parent``, ``path`` (root..leaf) per leaf."""
    levels = {lvl: [] for lvl in LEVELS}
    names = {ROOT: ROOT}
    parent: dict[str, str | None] = {ROOT: None}
    for cat, families in TREE.items():
        c = node_id("category", cat)
        levels["category"].append(c)
        names[c], parent[c] = cat, ROOT
        for fam, leaves in families.items():
            f = node_id("family", fam)
            levels["family"].append(f)
            names[f], parent[f] = fam, c
            for leaf in leaves:
                s = node_id("shape", leaf)
                levels["shape"].append(s)
                names[s], parent[s] = leaf, f
    paths = {}
    for leaf in levels["shape"]:
        path, n = [], leaf
        while n is not None:
            path.append(n)
            n = parent[n]
        paths[leaf] = path[::-1]
    depth = {ROOT: 0, **{n: d + 1 for d, lvl in enumerate(LEVELS) for n in levels[lvl]}}
    return {"levels": levels, "names": names, "parent": parent, "paths": paths, "depth": depth}


def _check_names() -> None:
    for name in taxonomy()["names"].values():
        if name != ROOT and name[0].lower() in "aeiou":
            raise AssertionError(f"class name {name!r} starts with a vowel; templates use the article 'a'")


_check_names()


def phrase(node: str, attrs: dict) -> str:
    """Noun phrase for taxonomy ``node`` with the attribute values in ``attrs`` (any subset of ATTRIBUTES);
    the rules are :func:`meru.data.captions.synth_phrase`.

    >>> phrase("shape.triangle", {"count": 2, "size": "small", "colour": "red", "texture": "stripes"})
    'two small red triangles on stripes'
    >>> phrase("object", {"colour": "white"})
    'a white object'
    """
    return synth_phrase(taxonomy()["names"][node], attrs)


def attribute_classnames(attr: str) -> list[str]:
    """Class names of the zero-shot set of attribute ``attr``: the root's phrase with each value, in the order of
    ``ATTRIBUTE_VALUES[attr]`` (= label order); with ``ATTRIBUTE_TEMPLATES`` they give the training captions.

    >>> attribute_classnames("count")
    ['one object', 'two objects', 'three objects']
    >>> attribute_classnames("texture")[0]
    'an object on a plain background'
    """
    return [phrase(ROOT, {attr: value}) for value in ATTRIBUTE_VALUES[attr]]


def _subsets() -> list[tuple[str, ...]]:
    return attribute_subsets()


@lru_cache(maxsize=1)
def caption_pool() -> tuple[list[dict], dict]:
    """Every (node, attribute assignment) caption, and the index ``(node, ((attr, value), ...)) -> row``.

    Rows: ``{"text", "specificity" (depth + #attributes), "depth" (0 root .. 3 leaf), "node", "attributes"}``.
    """
    tax = taxonomy()
    nodes = [ROOT] + [n for lvl in LEVELS for n in tax["levels"][lvl]]
    rows, index = [], {}
    for node in nodes:
        for subset in _subsets():
            for values in itertools.product(*(ATTRIBUTE_VALUES[a] for a in subset)):
                attrs = dict(zip(subset, values))
                key = (node, tuple(sorted(attrs.items())))
                index[key] = len(rows)
                rows.append(
                    {
                        "text": synth_caption(tax["names"][node], attrs),
                        "specificity": synth_specificity(tax["depth"][node], attrs),
                        "depth": tax["depth"][node],
                        "node": node,
                        "attributes": attrs,
                    }
                )
    texts = [r["text"] for r in rows]
    if len(set(texts)) != len(texts):
        raise AssertionError("caption pool has duplicate texts")
    return rows, index


def true_captions(leaf: str, attrs: dict) -> list[int]:
    """Pool indices of all captions true of an image: ancestor-or-self node x any attribute subset."""
    _, index = caption_pool()
    out = []
    for node in taxonomy()["paths"][leaf]:
        for subset in _subsets():
            out.append(index[(node, tuple(sorted((a, attrs[a]) for a in subset)))])
    return sorted(out)


# ---------------------------------------------------------------------------------------------------
# sampling and rendering


def sample_spec(rng: np.random.Generator) -> dict:
    """Random image content: leaf id, count, size, colour, texture."""
    leaves = taxonomy()["levels"]["shape"]
    return {
        "leaf": leaves[rng.integers(len(leaves))],
        "count": int(COUNTS[rng.integers(len(COUNTS))]),
        "size": SIZES[rng.integers(len(SIZES))],
        "colour": tuple(COLOURS)[rng.integers(len(COLOURS))],
        "texture": TEXTURES[rng.integers(len(TEXTURES))],
    }


def _regular(n: int, phase: float = -np.pi / 2) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], 1)


def _rect(x0, x1, y0, y1) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


_STAR = np.array(
    [
        (r * np.cos(a), r * np.sin(a))
        for k in range(10)
        for r, a in [((1.0 if k % 2 == 0 else 0.42), -np.pi / 2 + k * np.pi / 5)]
    ]
)
_CROSS = np.array(
    [
        (-0.3, -1),
        (0.3, -1),
        (0.3, -0.3),
        (1, -0.3),
        (1, 0.3),
        (0.3, 0.3),
        (0.3, 1),
        (-0.3, 1),
        (-0.3, 0.3),
        (-1, 0.3),
        (-1, -0.3),
        (-0.3, -0.3),
    ],
    float,
)
_CHEVRON = np.array([(-1, 0.55), (0, -0.65), (1, 0.55), (0.55, 0.55), (0, -0.05), (-0.55, 0.55)], float)
_T = 0.36  # letter stroke width (unit radius 1)
# shape -> list of (polygon in unit coordinates, fill 255|0); circles as ("circle", cx, cy, r, fill)
_GEOMETRY = {
    "triangle": [(_regular(3), 255)],
    "square": [(_regular(4, np.pi / 4), 255)],
    "hexagon": [(_regular(6), 255)],
    "circle": [(("circle", 0.0, 0.0, 0.9), 255)],
    "ring": [(("circle", 0.0, 0.0, 0.95), 255), (("circle", 0.0, 0.0, 0.5), 0)],
    "crescent": [(("circle", 0.0, 0.0, 0.95), 255), (("circle", 0.45, -0.2, 0.8), 0)],
    "cross": [(_CROSS, 255)],
    "star": [(_STAR, 255)],
    "chevron": [(_CHEVRON, 255)],
    "letter T": [(_rect(-0.8, 0.8, -1, -1 + _T), 255), (_rect(-_T / 2, _T / 2, -1, 1), 255)],
    "letter L": [(_rect(-0.65, -0.65 + _T, -1, 1), 255), (_rect(-0.65, 0.65, 1 - _T, 1), 255)],
    "letter H": [
        (_rect(-0.75, -0.75 + _T, -1, 1), 255),
        (_rect(0.75 - _T, 0.75, -1, 1), 255),
        (_rect(-0.75, 0.75, -_T / 2, _T / 2), 255),
    ],
}
_UPRIGHT = {"chevron", "letter T", "letter L", "letter H"}  # rotated by at most +-25 degrees


@lru_cache(maxsize=4)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    return x + 0.5, y + 0.5


def _background(rng: np.random.Generator, texture: str, n: int) -> Image.Image:
    """n x n RGB grey background with a lighter texture (n = canvas side in supersampled px)."""
    base = rng.uniform(35, 75)
    light = base + rng.uniform(30, 50)
    tint = rng.uniform(-6, 6, 3)
    image = Image.new("RGB", (n, n), tuple(int(round(base + t)) for t in tint))
    if texture == "plain":
        return image
    x, y = _grid(n)
    if texture == "stripes":
        period = rng.uniform(5, 8) * SUPERSAMPLE
        theta = (np.pi / 4) * rng.integers(4)
        u = x * np.cos(theta) + y * np.sin(theta) + rng.uniform(0, period)
        on = np.mod(u, period) < period / 2
    else:  # dots
        period = rng.uniform(5, 7) * SUPERSAMPLE
        ox, oy = rng.uniform(0, period, 2)
        dx = np.mod(x + ox, period) - period / 2
        dy = np.mod(y + oy, period) - period / 2
        on = dx * dx + dy * dy < (0.28 * period) ** 2
    image.paste(tuple(int(round(light + t)) for t in tint), mask=Image.fromarray(on.astype(np.uint8) * 255, "L"))
    return image


def render(spec: dict, rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, list[int]]:
    """Draw ``spec`` into a uint8 [image_size, image_size, 3] array; returns it and the occupied cells (0..3).

    Objects sit in distinct cells of a 2x2 grid; radius small ~ U(0.5, 0.6), large ~ U(0.82, 0.92) of
    the half cell, centre jittered inside the cell, random rotation (upright shapes +-25 degrees).
    """
    n = image_size * SUPERSAMPLE
    half = n / 4  # half of a cell side
    cells = sorted(int(c) for c in rng.choice(4, size=spec["count"], replace=False))
    mask = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(mask)
    name = taxonomy()["names"][spec["leaf"]]
    lo, hi = (0.5, 0.6) if spec["size"] == "small" else (0.82, 0.92)
    for cell in cells:
        r = half * rng.uniform(lo, hi)
        slack = max(half - r, 0.0) * 0.9
        cx = (2 * (cell % 2) + 1) * half + rng.uniform(-slack, slack)
        cy = (2 * (cell // 2) + 1) * half + rng.uniform(-slack, slack)
        angle = rng.uniform(-25, 25) * np.pi / 180 if name in _UPRIGHT else rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        for part, fill in _GEOMETRY[name]:
            if isinstance(part, tuple):  # circle
                _, px, py, pr = part
                ccx, ccy = rot @ np.array([px, py]) * r + (cx, cy)
                draw.ellipse([ccx - pr * r, ccy - pr * r, ccx + pr * r, ccy + pr * r], fill=fill)
            else:
                pts = part @ rot.T * r + (cx, cy)
                draw.polygon([tuple(p) for p in pts.tolist()], fill=fill)
    colour = np.clip(np.array(COLOURS[spec["colour"]], float) + rng.uniform(-18, 18, 3), 0, 255)
    canvas = _background(rng, spec["texture"], n)
    canvas.paste(tuple(int(round(c)) for c in colour), mask=mask)
    return np.asarray(canvas.reduce(SUPERSAMPLE)), cells  # box filter: mean of each 4x4 block


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _attrs(spec: dict) -> dict:
    return {a: spec[a] for a in ATTRIBUTES}


def training_captions(spec: dict, rng: np.random.Generator) -> list[dict]:
    """``CAPTIONS_PER_SPECIFICITY`` captions per specificity 0..7: random (node, attribute subset), prefix
    (:func:`meru.data.captions.synth_training_captions` over the image's root-to-leaf path)."""
    tax = taxonomy()
    names = [tax["names"][n] for n in tax["paths"][spec["leaf"]]]
    return synth_training_captions(names, _attrs(spec), rng)


def _metadata(spec: dict, cells: list[int]) -> dict:
    tax = taxonomy()
    path = tax["paths"][spec["leaf"]]
    labels = {lvl: tax["levels"][lvl].index(path[d + 1]) for d, lvl in enumerate(LEVELS)}
    return {
        "node": spec["leaf"],
        "path": path,
        "labels": labels,
        "attributes": {**_attrs(spec), "cells": cells, "positions": [CELL_NAMES[c] for c in cells]},
        "description": synth_caption(tax["names"][spec["leaf"]], _attrs(spec)),
    }


# ---------------------------------------------------------------------------------------------------
# writing


def _train_samples(size: int, seed: int, image_size: int):
    from meru.progress import Progress

    rng = np.random.default_rng([seed, 0])
    progress = Progress("meru synth train", size, "images")
    for i in range(size):
        spec = sample_spec(rng)
        image, cells = render(spec, rng, image_size)
        meta = _metadata(spec, cells)
        meta["captions"] = training_captions(spec, rng)
        yield {"__key__": f"train-{i:06d}", "png": png_bytes(image), "txt": meta["description"], "json": meta}
        progress.update(1)  # after the writer took the sample


def _test_items(size: int, seed: int, image_size: int) -> list[dict]:
    from meru.progress import Progress

    rng = np.random.default_rng([seed, 1])
    items = []
    progress = Progress("meru synth test", size, "images")
    for i in range(size):
        spec = sample_spec(rng)
        image, cells = render(spec, rng, image_size)
        meta = _metadata(spec, cells)
        meta["true_captions"] = true_captions(spec["leaf"], _attrs(spec))
        items.append({"key": f"test-{i:06d}", "png": png_bytes(image), "meta": meta})
        progress.update(1)
    return items


def _write_wds_eval(
    directory: Path,
    samples: list[dict],
    shard_size: int,
    dataset_type: str,
    classnames: list[str] | None = None,
    templates: tuple[str, ...] | None = None,
    name: str | None = None,
) -> None:
    """One eval set in clip-benchmark's wds layout (:mod:`meru.data.wds_layout`), with a manifest of ``test/``
    named ``name`` (default the directory's name)."""
    test = directory / "test"
    shards = wds_layout.write_split(test, samples, shard_size, mtime=FIXED_MTIME)
    write_manifest(test, name=name or directory.name, source="synthhier", shards=shards)
    wds_layout.write_set_files(directory, dataset_type, classnames, templates)


def _write_classification_set(
    zdir: Path,
    items: list[dict],
    labels: list[int],
    classnames: list[str],
    templates: tuple[str, ...],
    shard_size: int,
    name: str | None = None,
) -> None:
    """One zero-shot set: the test ``items`` (key, png, meta) with class index ``labels[i]``."""
    samples = [
        {"__key__": it["key"], "png": it["png"], "cls": label, "json": it["meta"]} for it, label in zip(items, labels)
    ]
    _write_wds_eval(zdir, samples, shard_size, "classification", classnames, templates, name)


def _write_zeroshot_sets(ev: Path, items: list[dict], tax: dict, shard_size: int) -> None:
    """``eval/zeroshot_{level}``: the test images labelled with their ancestor at each taxonomy level."""
    for level in LEVELS:
        nodes = tax["levels"][level]
        zdir = ev / f"zeroshot_{level}"
        labels = [it["meta"]["labels"][level] for it in items]
        _write_classification_set(zdir, items, labels, [tax["names"][n] for n in nodes], TEMPLATES, shard_size)
        write_text(zdir / "class_nodes.json", json.dumps(nodes) + "\n")


def _write_attribute_set(zdir: Path, items: list[dict], attr: str, shard_size: int) -> None:
    """``eval/zeroshot_{attr}``: the test images labelled with the index of their ``attr`` value in
    ``ATTRIBUTE_VALUES[attr]``; ``class_values.json`` lists those values."""
    values = ATTRIBUTE_VALUES[attr]
    labels = [values.index(it["meta"]["attributes"][attr]) for it in items]
    classnames = attribute_classnames(attr)
    _write_classification_set(zdir, items, labels, classnames, ATTRIBUTE_TEMPLATES, shard_size, f"zeroshot_{attr}")
    write_text(zdir / "class_values.json", json.dumps(list(values)) + "\n")


def _write_retrieval_set(ev: Path, items: list[dict], shard_size: int) -> list[dict]:
    """``eval/retrieval``: the first test image of each distinct most-specific description (unique captions);
    returns those items."""
    seen, retrieval = set(), []
    for it in items:
        if it["meta"]["description"] not in seen:
            seen.add(it["meta"]["description"])
            retrieval.append(it)
    samples = [
        {"__key__": it["key"], "png": it["png"], "txt": it["meta"]["description"], "json": it["meta"]}
        for it in retrieval
    ]
    _write_wds_eval(ev / "retrieval", samples, shard_size, "retrieval")
    return retrieval


def _write_caption_pool(ev: Path, retrieval: list[dict]) -> int:
    """``eval/captions.jsonl`` and ``eval/caption_matches.json``; returns the pool size."""
    pool, _ = caption_pool()
    (ev / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    matches = {
        "pool": "captions.jsonl",
        "keys": [it["key"] for it in retrieval],
        "captions": [_pool_index(it["meta"]) for it in retrieval],
        "true_captions": [it["meta"]["true_captions"] for it in retrieval],
    }
    (ev / "caption_matches.json").write_text(json.dumps(matches) + "\n")
    return len(pool)


def _write_taxonomy(out: Path, tax: dict) -> None:
    edges = [f"{tax['parent'][n]} {n}" for n in tax["names"] if tax["parent"][n] is not None]
    (out / "taxonomy.txt").write_text("".join(e + "\n" for e in edges))
    (out / "taxonomy_names.json").write_text(json.dumps(tax["names"], indent=1) + "\n")


def _info(tax: dict, seed, image_size, train_size, test_size, retrieval_size, shard_size, pool_size) -> dict:
    """``info.json``: the generator, its arguments and the dataset's shape."""
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "image_size": image_size,
        "train_size": train_size,
        "test_size": test_size,
        "retrieval_size": retrieval_size,
        "shard_size": shard_size,
        "root": ROOT,
        "levels": list(LEVELS),
        "attribute_sets": list(ATTRIBUTE_SETS),
        "class_counts": {lvl: len(tax["levels"][lvl]) for lvl in LEVELS},
        "attributes": {a: list(v) for a, v in ATTRIBUTE_VALUES.items()},
        "max_specificity": MAX_SPECIFICITY,
        "captions_per_sample": CAPTIONS_PER_SPECIFICITY * (MAX_SPECIFICITY + 1),
        "caption_pool_size": pool_size,
        "prefixes": list(PREFIXES),
        "templates": list(TEMPLATES),
    }


def generate(
    out: str | os.PathLike,
    train_size: int = 20000,
    test_size: int = 2000,
    image_size: int = 32,
    seed: int = 0,
    shard_size: int = 5000,
) -> dict:
    """Generate the dataset into ``out`` (atomically, see module docstring); returns ``info.json``'s dict."""
    if image_size < 16 or image_size % 2:
        raise ValueError(f"--image-size must be an even number >= 16 (got {image_size})")
    if train_size < 1 or test_size < 1 or shard_size < 1:
        raise ValueError(f"sizes must be >= 1 (train {train_size}, test {test_size}, shard {shard_size})")
    out = Path(out)
    tmp = fresh_temp_dir(out)
    t0 = time.time()
    try:
        tax = taxonomy()
        write_shards(
            _train_samples(train_size, seed, image_size),
            tmp / "train",
            "train",
            shard_size,
            source="synthhier",
            counts={"generated": train_size},
            seed=seed,
            image_size=image_size,
        )
        items = _test_items(test_size, seed, image_size)
        _write_zeroshot_sets(tmp / "eval", items, tax, shard_size)
        for attr in ATTRIBUTE_SETS:
            _write_attribute_set(tmp / "eval" / f"zeroshot_{attr}", items, attr, shard_size)
        retrieval = _write_retrieval_set(tmp / "eval", items, shard_size)
        pool_size = _write_caption_pool(tmp / "eval", retrieval)
        _write_taxonomy(tmp, tax)
        info = _info(tax, seed, image_size, train_size, test_size, len(retrieval), shard_size, pool_size)
        (tmp / "info.json").write_text(json.dumps(info, indent=1) + "\n")
        (tmp / CARD_NAME).write_text(synthhier_card(tmp, out.name))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**info, "seconds": round(time.time() - t0, 2)}


def missing_attribute_sets(directory: str | os.PathLike, attributes=ATTRIBUTE_SETS) -> list[str]:
    """The attributes among ``attributes`` without a finished ``DIR/eval/zeroshot_{attr}`` (a directory made by
    generator version 1 has none)."""
    ev = Path(directory) / "eval"
    return [
        a
        for a in attributes
        if not (wds_layout.is_wds_dir(ev / f"zeroshot_{a}") and (ev / f"zeroshot_{a}" / "class_values.json").is_file())
    ]


def attribute_sets_error(directory: str | os.PathLike, attributes) -> str | None:
    """One line saying that the existing SynthHier ``directory`` lacks some of the attribute sets ``attributes``
    and how to add them; None when it has them all."""
    missing = missing_attribute_sets(directory, attributes)
    if not missing:
        return None
    sets = ", ".join(f"eval/zeroshot_{a}" for a in missing)
    return (
        f"{directory} has no {sets} (made by an older `meru synth`) but data.synthhier.attributes asks for them; "
        f"add them with `meru synth --add-attribute-sets --out {directory}` (training data untouched, no retraining)"
    )


def add_attribute_sets(directory: str | os.PathLike) -> list[str]:
    """Add the missing ``eval/zeroshot_{attr}`` sets to an existing SynthHier directory (generator version 1)
    from its leaf set's images and metadata, each set written aside and renamed into place; ``info.json`` (and
    the card) then say version 2. The training data is not touched; the result equals a fresh ``meru synth``
    with the same arguments. Returns the attributes added."""
    d = Path(directory)
    if not (d / "info.json").is_file():
        raise FileNotFoundError(f"{d}/info.json is missing: not a SynthHier directory (`meru synth --out {d}`)")
    info = read_json(d / "info.json")
    if info.get("generator") != GENERATOR:
        raise ValueError(f"{d}/info.json: generator {info.get('generator')!r} is not {GENERATOR!r}")
    missing = missing_attribute_sets(d)
    if missing:
        leaf = d / "eval" / f"zeroshot_{LEVELS[-1]}"
        items = [
            {"key": s["__key__"], "png": s["png"], "meta": json.loads(s["json"])}
            for s, _ in wds_layout.raw_samples(leaf, "test")
        ]
        for attr in missing:
            final = d / "eval" / f"zeroshot_{attr}"
            tmp = fresh_temp_dir(final)
            try:
                _write_attribute_set(tmp, items, attr, int(info["shard_size"]))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            replace_dir(tmp, final)
    upgraded = {}
    for key, value in info.items():  # the key order of a fresh info.json
        upgraded[key] = GENERATOR_VERSION if key == "version" else value
        if key == "levels":
            upgraded["attribute_sets"] = list(ATTRIBUTE_SETS)
    write_text(d / "info.json", json.dumps(upgraded, indent=1) + "\n")
    if (d / CARD_NAME).is_file():
        write_text(d / CARD_NAME, synthhier_card(d))
    return missing


def _pool_index(meta: dict) -> int:
    _, index = caption_pool()
    attrs = {a: meta["attributes"][a] for a in ATTRIBUTES}
    return index[(meta["node"], tuple(sorted(attrs.items())))]


# ---------------------------------------------------------------------------------------------------
# CLI


def run(args) -> int:
    if getattr(args, "add_attribute_sets", False):  # errors: one line from meru.cli (user_error_types)
        print(json.dumps({"out": str(args.out), "added": add_attribute_sets(args.out)}))
        return 0
    try:
        info = generate(args.out, args.train_size, args.test_size, args.image_size, args.seed, args.shard_size)
    except ValueError as e:
        print(f"meru synth: error: {e}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "out": str(args.out),
                "train": info["train_size"],
                "test": info["test_size"],
                "retrieval": info["retrieval_size"],
                "caption_pool": info["caption_pool_size"],
                "seconds": info["seconds"],
            }
        )
    )
    return 0
