"""Writing webdataset shard sets atomically, with a manifest (``meru.data.manifest``).

``write_shards`` streams samples through :class:`webdataset.ShardWriter` into a temporary sibling
directory ``<out_dir>.tmp-<pid>``, checksums the shards into ``manifest.json`` and only then renames
the directory to ``out_dir``. A killed run therefore leaves at most a ``*.tmp-*`` directory, never an
``out_dir`` that looks finished. Tar members get a fixed mtime/user/group/mode, so the same samples
always give byte-identical shards (and identical manifest checksums).

A sample is a dict ``{"__key__": str, ext: value, ...}``; values are encoded by webdataset's default
encoder from the extension (``bytes`` pass through, ``str`` -> UTF-8, ``json``/``dict`` -> JSON,
``cls``/``int`` -> decimal text, numpy/PIL images -> the named image format).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import webdataset as wds

from meru.data.manifest import write_manifest
from meru.io import fresh_temp_dir, replace_dir

#: Fixed tar member mtime (2000-01-01T00:00:00Z) so shards are reproducible byte for byte.
FIXED_MTIME = 946684800  # an int: a float mtime makes tarfile add a PAX header to every member


def shard_pattern(name: str) -> str:
    """``{name}-%06d.tar``: the shard file pattern (``name`` must not contain ``/`` or ``%``)."""
    if not name or "/" in name or "%" in name:
        raise ValueError(f"shard set name {name!r} must be non-empty and contain no '/' or '%'")
    return f"{name}-%06d.tar"


def write_shards(
    samples_iter: Iterable[dict],
    out_dir: str | os.PathLike,
    name: str,
    shard_size: int,
    source: str,
    counts: dict[str, int] | None = None,
    maxsize: float = 3e9,
    **manifest_extra,
) -> dict:
    """Write ``samples_iter`` as ``out_dir/{name}-000000.tar, ...`` (``shard_size`` samples each) + manifest.

    Args:
        samples_iter: dicts with ``__key__`` (unique) and extension -> value entries.
        out_dir: final directory; written via ``<out_dir>.tmp-<pid>`` and renamed when complete
            (an existing ``out_dir`` is replaced).
        name: manifest ``name`` and shard file prefix.
        shard_size: maximum samples per shard (``maxsize`` bytes also starts a new shard).
        source: manifest ``source`` (e.g. ``"synthhier"``, ``"redcaps"``).
        counts: manifest ``counts`` (e.g. attempted / failed_<reason>); ``written`` is added.
        **manifest_extra: extra top-level manifest fields.

    Returns:
        The manifest dict (as written to ``out_dir/manifest.json``).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    tmp = fresh_temp_dir(out_dir)
    per_shard: dict[str, int] = {}
    try:
        writer = wds.ShardWriter(
            str(tmp / shard_pattern(name)), maxcount=shard_size, maxsize=maxsize, verbose=0, mtime=FIXED_MTIME
        )
        try:
            for sample in samples_iter:
                if "__key__" not in sample:
                    raise ValueError(f"sample without '__key__' for shard set {name!r}: keys {sorted(sample)}")
                writer.write(sample)
                per_shard[writer.fname] = per_shard.get(writer.fname, 0) + 1
        finally:
            writer.close()
        # ShardWriter opens shard 0 eagerly; drop any shard that received no sample.
        for path in sorted(tmp.glob(f"{name}-*.tar")):
            if str(path) not in per_shard:
                path.unlink()
        shards = [(Path(p).name, n) for p, n in sorted(per_shard.items())]
        all_counts = dict(counts or {})
        all_counts.setdefault("written", sum(n for _, n in shards))
        manifest = write_manifest(tmp, name=name, source=source, shards=shards, counts=all_counts, **manifest_extra)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
