"""The clip-benchmark wds layout of an evaluation set: the one place that writes and reads its files.

::

    DIR/<split>/nshards.txt                      N, the number of shards
    DIR/<split>/{0..N-1}.tar                     webdataset shards (image + "cls" | "txt", "json")
    DIR/<split>/manifest.json                    optional (SynthHier): checksums and sample counts
    DIR/dataset_type.txt                         classification (default) | retrieval | hierarcaps | caption-choice
    DIR/classnames.txt                           classification: one class name per line
    DIR/zeroshot_classification_templates.txt    classification: one prompt template per line

Writers: SynthHier (:mod:`meru.data.synthhier`), HierarCaps (:mod:`meru.data.hierarcaps`) and the caption-choice
sets (:mod:`meru.data.caption_choice`); readers: the image decoder (:mod:`meru.data.wds_eval`), clip-benchmark's
builder (via :mod:`meru.data.evalsets`), HierarCaps' hierarchy reader and the caption-choice reader. No torch import here (the dataset table and config checks use it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from meru.io import write_text

NSHARDS = "nshards.txt"
DATASET_TYPE = "dataset_type.txt"
CLASSNAMES = "classnames.txt"
TEMPLATES = "zeroshot_classification_templates.txt"
DATASET_TYPES = ("classification", "retrieval", "hierarcaps", "caption-choice")


def is_wds_dir(path: str | os.PathLike, split: str = "test") -> bool:
    """True when ``path/split/nshards.txt`` exists (a wds-layout evaluation set)."""
    return (Path(path) / split / NSHARDS).is_file()


def dataset_type(directory: str | os.PathLike) -> str:
    """``DIR/dataset_type.txt`` (lower case), ``classification`` when absent."""
    type_file = Path(directory) / DATASET_TYPE
    return type_file.read_text().strip().lower() if type_file.is_file() else "classification"


def shard_paths(directory: str | os.PathLike, split: str) -> list[Path]:
    """``DIR/split/{0..N-1}.tar`` with N from ``nshards.txt``; one-line errors for a bad count or a missing shard."""
    directory = Path(directory)
    count_file = directory / split / NSHARDS
    text = count_file.read_text().strip()
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"{count_file}: {text!r} is not a shard count; re-create the evaluation set") from None
    paths = [directory / split / f"{i}.tar" for i in range(n)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}/{split}/{NSHARDS} says {n} shards but {missing[0]} is missing")
    return paths


def raw_samples(directory: str | os.PathLike, split: str) -> Iterator[tuple[dict, Path]]:
    """``(sample, shard)`` of every sample of ``DIR/split`` in file order; a sample is webdataset's raw dict
    (``__key__`` and member suffix -> bytes): nothing is decoded."""
    import webdataset as wds

    for url in shard_paths(directory, split):
        for s in wds.tarfile_to_samples()(iter([{"url": str(url)}])):
            yield s, url


def json_members(directory: str | os.PathLike, split: str) -> Iterator[tuple[str, dict | None, Path]]:
    """``(key, json member or None, shard)`` of every sample of ``DIR/split`` in file order; nothing but the json
    member is decoded (no image, nothing unpickled)."""
    for s, url in raw_samples(directory, split):
        raw = s.get("json")
        try:
            meta = json.loads(raw) if raw is not None else None
        except ValueError as e:
            raise ValueError(f"{url}: sample {s['__key__']!r}: invalid json ({e})") from None
        yield s["__key__"], meta, url


def write_split(split_dir: str | os.PathLike, samples: Iterable[dict], shard_size: int, mtime: float) -> list:
    """Write ``samples`` (webdataset dicts with ``__key__``) as ``split_dir/{k}.tar``, ``shard_size`` each, then
    ``nshards.txt``; tar members get ``mtime`` (a fixed one gives byte-identical shards). Returns
    ``[(shard name, samples)]`` for a manifest."""
    import webdataset as wds

    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    shards, chunk = [], []

    def flush():
        path = split_dir / f"{len(shards)}.tar"
        with wds.TarWriter(str(path), mtime=mtime) as writer:
            for sample in chunk:
                writer.write(sample)
        shards.append((path.name, len(chunk)))
        chunk.clear()

    for sample in samples:
        chunk.append(sample)
        if len(chunk) == shard_size:
            flush()
    if chunk:
        flush()
    write_text(split_dir / NSHARDS, f"{len(shards)}\n")
    return shards


def write_set_files(
    directory: str | os.PathLike,
    kind: str,
    classnames: Iterable[str] | None = None,
    templates: Iterable[str] | None = None,
) -> None:
    """``dataset_type.txt`` (``kind`` in :data:`DATASET_TYPES`) and, for classification, the class names and
    prompt templates, one per line."""
    if kind not in DATASET_TYPES:
        raise ValueError(f"dataset type {kind!r} is not one of {DATASET_TYPES}")
    directory = Path(directory)
    write_text(directory / DATASET_TYPE, kind + "\n")
    if classnames is not None:
        write_text(directory / CLASSNAMES, "".join(c + "\n" for c in classnames))
    if templates is not None:
        write_text(directory / TEMPLATES, "".join(t + "\n" for t in templates))
