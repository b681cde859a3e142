"""Files that appear whole or not at all: the one atomic writer of the suite, and strict JSON.

Every output a later stage reads (checkpoints and embedding caches via
:func:`meru.models.checkpoints.save_torch`, metric JSON, tables, figures, trees,
manifests, whole dataset directories) is written through :func:`atomic_path`: into a temporary sibling
``.NAME.tmp-PID`` in the target's directory, renamed over the target only when the write finished.
A crash or an exception therefore leaves either the old file or none, never a half-written one that
looks finished; the temporary file is deleted on error (a full disk or file size limit: one line,
:class:`DiskFullError`), and temporaries of killed processes are removed
by :func:`remove_stale_temps`. Directories go through :func:`fresh_temp_dir` + :func:`replace_dir`.

Strict JSON (:func:`write_json`, :func:`read_json`): no NaN/inf ever reaches a file or is accepted from one.
This module sits below every layer (it imports nothing from ``meru``).
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "DiskFullError",
    "atomic_path",
    "write_text",
    "write_bytes",
    "save_figure",
    "to_jsonable",
    "write_json",
    "read_json",
    "pid_alive",
    "remove_stale_temps",
    "fresh_temp_dir",
    "replace_dir",
    "short_repr",
]


NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # disk full, file size limit (ulimit -f), quota


class DiskFullError(OSError):
    """A write that ran out of space (ENOSPC, EDQUOT) or hit the file size limit (EFBIG); one line naming the file,
    the free space and the fix. The temporary file is gone and the previous file is unchanged."""

    def __str__(self) -> str:
        return self.strerror


def _no_space_errno(exc: BaseException) -> int | None:
    """The ENOSPC / EFBIG / EDQUOT errno behind ``exc`` (itself, or the exception it was raised from or during:
    torch.save reports a failed write as a RuntimeError raised during the OSError), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    return None


def free_space(path: str | os.PathLike) -> str:
    """Free space on the file system holding ``path`` (its nearest existing ancestor), e.g. ``'1.2 GB'``."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    free = shutil.disk_usage(p).free
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if free < 1000 or unit == "TB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1000
    return ""


def disk_full_error(path: str | os.PathLike, code: int) -> DiskFullError:
    """The one-line :class:`DiskFullError` for a failed write of ``path`` (``code``: ENOSPC, EFBIG or EDQUOT)."""
    why = {
        errno.EFBIG: "the file size limit was reached (File too large; see `ulimit -f`)",
        errno.EDQUOT: "the disk quota is exhausted",
    }.get(code, "the disk is full (No space left on device)")
    return DiskFullError(
        code,
        f"{path}: not written, {why}; {free_space(path)} free on its disk. The partial file was removed and "
        "the previous file, if any, is unchanged; free space (or raise the limit) and re-run",
    )


@contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block exits cleanly.

        The temporary file is ``.NAME.tmp-PID`` (``keep_suffix=True``: ``.STEM.tmp-PID.SUFFIX``, for writers
        that choose the format from the suffix, e.g. matplotlib). Parent directories are created. On an
        exception the temporary file is deleted and the target is left untouched; a write that runs out of space or
    hits the file size limit becomes a one-line :class:`DiskFullError` (path, free space, fix). ``fsync=True`` flushes the
        file to disk before the rename (manifests: the record that marks a dataset complete).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_suffix and path.suffix:
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    else:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        code = _no_space_errno(exc)
        if code is None or isinstance(exc, DiskFullError):
            raise
        raise disk_full_error(path, code) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically."""
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """``fig.savefig`` to ``path`` atomically; the format is the suffix of ``path`` (``.pdf``, ``.png``)."""
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, **savefig_kwargs)
    return Path(path)


def to_jsonable(obj: Any, nonfinite: str = "error", _path: str = "$") -> Any:
    """Recursively convert ``obj`` to JSON-safe Python (dict/list/str/int/float/bool/None).

    Tensors and arrays become (nested) lists, numpy/torch scalars Python scalars, tuples lists, dict
    keys strings, paths strings. Non-finite floats: ``"error"`` raises ``ValueError`` naming the key path
    (e.g. ``$.metrics.top1``); ``"null"`` writes ``None``.
    """
    if nonfinite not in ("error", "null"):
        raise ValueError(f"nonfinite={nonfinite!r}; choose 'error' or 'null'")
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # torch.Tensor, without importing torch here
        obj = obj.detach().cpu().numpy()
    if hasattr(obj, "tolist") and hasattr(obj, "ndim"):  # numpy array or scalar
        obj = obj.tolist() if obj.ndim else obj.item()
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        if nonfinite == "null":
            return None
        raise ValueError(f"non-finite value {obj!r} at {_path}: metric JSON must be strict (no NaN/inf)")
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, nonfinite, f"{_path}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, nonfinite, f"{_path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} at {_path} to JSON")


def write_json(path: str | os.PathLike, obj: Any, nonfinite: str = "error", indent: int | None = 1) -> Path:
    """Write ``obj`` as strict JSON (``allow_nan=False``, see :func:`to_jsonable`) to ``path`` atomically."""
    data = json.dumps(to_jsonable(obj, nonfinite), allow_nan=False, indent=indent) + "\n"
    return write_text(path, data)


def read_json(path: str | os.PathLike) -> Any:
    """Read strict JSON; ``NaN``/``Infinity`` literals are rejected with the file name."""

    def _bad(tok):
        raise ValueError(f"{path}: contains {tok}, which strict JSON forbids")

    return json.loads(Path(path).read_text(), parse_constant=_bad)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(final: str | os.PathLike) -> list[Path]:
    """Delete the temporary siblings ``<final>.tmp-<pid>`` / ``.<name>.tmp-<pid>`` (files or directories)
    left by killed runs, i.e. whose process no longer exists. Returns what was removed."""
    final = Path(final)
    removed = []
    for pattern in (f"{final.name}.tmp-*", f".{final.name}.tmp-*"):
        for p in final.parent.glob(pattern) if final.parent.is_dir() else ():
            pid = p.name.rsplit(".tmp-", 1)[1]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def fresh_temp_dir(final: str | os.PathLike) -> Path:
    """An empty sibling directory ``<final>.tmp-<pid>`` to build a directory in before :func:`replace_dir`
    moves it to ``final`` (temporary directories of killed runs are removed first)."""
    final = Path(final)
    remove_stale_temps(final)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the finished directory ``tmp`` to ``final``, replacing an existing ``final``.

    The old ``final`` is first renamed aside, so there is no moment at which ``final`` holds a mix
    of old and new files; the old copy is deleted afterwards.
    """
    tmp, final = Path(tmp), Path(final)
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f"{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (``...`` marks the cut): how error messages echo user values,
    so that a 100k-character value gives a short line, not a 200 KB one."""
    text = " ".join(repr(value).split())  # one line: a tensor's or a multi-line string's repr has newlines
    return text if len(text) <= limit else text[: limit - 3] + "..."
