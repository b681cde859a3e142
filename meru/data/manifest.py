"""Shard-set manifests: the record that makes a directory of webdataset shards a dataset.

A shard directory is complete only when ``manifest.json`` exists and says ``"complete": true``.
The manifest is written last and atomically (temp file + rename), so a crash leaves either no
manifest or a previous complete one, never a half-written file that looks finished.

Schema (``"format": "meru-bench/shards/1"``)::

    {"format", "name", "source", "complete": bool, "num_samples": int,
     "shards": [{"path": str (relative), "num_samples": int, "size": int (bytes), "sha256": str}],
     "counts": {str: int},   # e.g. attempted / succeeded / failed_<reason>
     "created": ISO-8601 UTC, "command": str, ...extra}
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sys
from pathlib import Path

from meru.io import short_repr, write_text

FORMAT = "meru-bench/shards/1"
MANIFEST_NAME = "manifest.json"


class IncompleteDatasetError(RuntimeError, ValueError):
    """A shard directory has no complete manifest (missing, unfinished, or corrupt). A ``ValueError`` too: bad
    input, which every ``meru`` command prints as one line (``meru.cli.user_error_types``)."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(
    directory: str | os.PathLike,
    name: str,
    source: str,
    shards: list[tuple[str | os.PathLike, int]],
    counts: dict[str, int] | None = None,
    complete: bool = True,
    **extra,
) -> dict:
    """Checksum ``shards`` ([(path, num_samples)], paths inside ``directory``) and write the manifest."""
    directory = Path(directory)
    entries = []
    for path, n in shards:
        path = Path(path)
        full = path if path.is_absolute() else directory / path
        entries.append(
            {
                "path": str(full.relative_to(directory)),
                "num_samples": int(n),
                "size": full.stat().st_size,
                "sha256": sha256_file(full),
            }
        )
    manifest = {
        "format": FORMAT,
        "name": name,
        "source": source,
        "complete": bool(complete),
        "num_samples": int(sum(e["num_samples"] for e in entries)),
        "shards": entries,
        "counts": {k: int(v) for k, v in (counts or {}).items()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        **extra,
    }
    write_text(directory / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=False) + "\n", fsync=True)
    return manifest


def _bad_shard_entries(directory: Path, shards) -> str | None:
    """What is wrong with a manifest's ``shards`` list (None: nothing): each entry needs a relative ``path``
    inside ``directory`` (no ``..``, no absolute path, no symlink out of it), ``num_samples`` an int >= 0,
    ``size`` an int >= 0 and ``sha256`` 64 hex digits."""
    if not isinstance(shards, list):
        return f"shards = {short_repr(shards)} is not a list"
    root = directory.resolve()
    for i, e in enumerate(shards):
        if not isinstance(e, dict) or not isinstance(e.get("path"), str) or not e["path"]:
            return f"shards[{i}] = {short_repr(e)} has no 'path'"
        if os.path.isabs(e["path"]) or not (directory / e["path"]).resolve().is_relative_to(root):
            return f"shards[{i}].path = {short_repr(e['path'])} points outside {directory} (refused)"
        for key in ("num_samples", "size"):
            value = e.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                return f"shards[{i}].{key} = {short_repr(value)} is not an integer >= 0"
        sha = e.get("sha256")
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            return f"shards[{i}].sha256 = {short_repr(sha)} is not 64 hex digits"
    return None


def read_manifest(directory: str | os.PathLike, verify: bool = False) -> dict:
    """Load and check a shard directory's manifest; raise :class:`IncompleteDatasetError` with the fix."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.exists():
        raise IncompleteDatasetError(
            f"{path}: no manifest, so {directory} is not a finished dataset. "
            "Re-run the command that creates it (`meru synth` or `meru download`); it resumes where it stopped."
        )
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError) as e:  # JSONDecodeError, bad UTF-8, unreadable
        raise IncompleteDatasetError(
            f"{path}: not valid JSON ({str(e).splitlines()[0]}). Delete it and re-run the command that creates it."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise IncompleteDatasetError(f"{path}: format {short_repr(found)}, expected {FORMAT!r}.")
    if manifest.get("complete", False) is not True:
        raise IncompleteDatasetError(
            f"{path}: marked incomplete (the run that wrote it stopped early). Re-run it to finish the dataset."
        )
    bad = _bad_shard_entries(directory, manifest.get("shards"))
    if bad:
        raise IncompleteDatasetError(f"{path}: {bad}. Delete the dataset directory and re-create it.")
    for entry in manifest["shards"]:
        shard = directory / entry["path"]
        try:
            present = shard.is_file()
        except OSError as e:  # e.g. a name longer than the file system allows
            raise IncompleteDatasetError(
                f"{path}: shard path {short_repr(entry['path'])} cannot be read ({e.strerror}). Delete the dataset "
                "directory and re-create it."
            ) from None
        if not present:
            raise IncompleteDatasetError(f"{shard}: listed in {path} but missing. Re-run the command that creates it.")
        if verify and sha256_file(shard) != entry["sha256"]:
            raise IncompleteDatasetError(
                f"{shard}: checksum differs from {path}; the shard is corrupt. Delete it and re-run."
            )
    return manifest


class CorruptDatasetError(IncompleteDatasetError):
    """A shard's size or sha256 differs from its manifest (changed, replaced, truncated or extended)."""


VERIFIED_CACHE = ".meru-verified.json"


def verify_shards(directory: str | os.PathLike, manifest: dict | None = None) -> int:
    """Check every shard's size and sha256 against the manifest; raise :class:`CorruptDatasetError` in one
    line naming the shard. Returns the number of shards hashed.

    Fast path: ``directory/.meru-verified.json`` records ``(size, mtime_ns, ctime_ns, inode)`` of shards
    whose hash matched; a shard whose stat is unchanged is not hashed again (any write or replacement
    changes ``ctime``, which a user cannot set). The cache is best effort (read-only data is fine).
    """
    directory = Path(directory)
    manifest = manifest or read_manifest(directory)
    cache_path = directory / VERIFIED_CACHE
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    hashed, fresh = 0, {}
    for entry in manifest["shards"]:
        shard = directory / entry["path"]
        st = shard.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, entry["sha256"]]
        if "size" in entry and st.st_size != entry["size"]:
            raise CorruptDatasetError(
                f"{shard}: {st.st_size} bytes but {directory / MANIFEST_NAME} records {entry['size']}; the shard was "
                "changed or replaced since the dataset was written. Delete the dataset directory and re-create it."
            )
        if cache.get(entry["path"]) != stamp:
            hashed += 1
            if sha256_file(shard) != entry["sha256"]:
                raise CorruptDatasetError(
                    f"{shard}: sha256 differs from {directory / MANIFEST_NAME}; the shard was changed or replaced "
                    "since the dataset was written. Delete the dataset directory and re-create it."
                )
        fresh[entry["path"]] = stamp
    if hashed and fresh != cache:
        try:
            write_text(cache_path, json.dumps(fresh))
        except OSError:
            pass
    return hashed


def shard_paths(directory: str | os.PathLike) -> list[str]:
    """Absolute paths of the shards of a complete shard directory, in manifest order."""
    directory = Path(directory)
    return [str(directory / e["path"]) for e in read_manifest(directory)["shards"]]
