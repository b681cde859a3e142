"""The committed reference run: ``meru reference refresh`` (replace it by a finished run's results),
``check`` (is a run complete enough) and ``compare`` (is every number of a run the same as the reference's).

Refresh writes only what it is asked to write. A directory is a *reference* when it holds the marker file
:data:`MARKER` (written by every refresh). ``--to`` is refused when it is ``--from``, contains ``--from``,
lies inside what is copied from ``--from`` (``metrics/``, ``tables/``, ...), or is a non-empty directory
that is not a reference (``--force`` replaces the latter). The new reference is built in a temporary sibling
``DEST.tmp-PID`` and swapped in with two renames (old aside to ``DEST.old-PID``, new in); temporaries of
killed refreshes are removed, and an old reference left aside by a refresh killed between the two renames is
put back, at the next refresh.

Compare matches metric records one to one by (label, task, dataset) — by file path where a key occurs more
than once, a record without a counterpart is a difference — and compares every value of each (metrics,
intervals, per-item lists, plot data, details, n, geometry; not the provenance paths) and of every
clip-benchmark side file ``*.clip_benchmark.json``. A value present on one side only is a difference.
"Equal" needs at least one matched record and no difference at all.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from pathlib import Path

from meru.io import fresh_temp_dir, pid_alive, read_json, replace_dir, write_text
from meru.records import CLIP_BENCHMARK_SUFFIX, MetricRecord, RecordError, load_metric_records
from meru.reporting.reproduction import REFERENCE_CONTENT, ReferenceError, check_complete
from meru.arguments import REFERENCE_MARKER
from meru.arguments import add_reference_arguments as add_arguments  # noqa: F401  (light: fast --help)

MARKER = REFERENCE_MARKER
MARKER_TEXT = "a reference run written by `meru reference refresh`; the next refresh replaces this directory whole\n"
ABSENT = "(absent)"

# --------------------------------------------------------------------------- refresh


def is_reference(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` is a reference run (holds :data:`MARKER`)."""
    return (Path(directory) / MARKER).is_file()


def check_destination(source: Path, dest: Path, force: bool = False) -> None:
    """Refuse (ReferenceError, one line) a ``dest`` whose replacement would delete what refresh was not asked to
    write: ``source`` itself, a folder containing it, a folder inside what is copied from it, a file, or a
    non-empty directory that is not a reference (unless ``force``)."""
    src, dst = source.resolve(), dest.resolve()
    if dst == src or src.is_relative_to(dst):
        raise ReferenceError(
            f"--to {dest} {'is' if dst == src else 'contains'} --from {source}; replacing it would delete the run "
            "itself; give a separate directory, e.g. --to results/reference/default"
        )
    inside = [item for item in REFERENCE_CONTENT if dst.is_relative_to((src / item).resolve())]
    if inside:
        raise ReferenceError(
            f"--to {dest} lies inside {source}/{inside[0]}, which refresh copies; give a directory outside it"
        )
    if dst.exists() and not dst.is_dir():
        raise ReferenceError(f"--to {dest} is a file, not a directory; give a directory")
    if dst.is_dir() and any(dst.iterdir()) and not is_reference(dst) and not force:
        raise ReferenceError(
            f"--to {dest} is a non-empty directory that is not a reference run (no {MARKER}); refresh would "
            "delete its contents. Give an empty or new directory, or pass --force to replace it"
        )


def recover_interrupted(dest: Path) -> list[Path]:
    """Clean up after refreshes that were killed: put an old reference left aside (``DEST.old-PID`` of a dead
    process, ``DEST`` missing) back, and delete the other ``DEST.old-PID`` and ``.DEST.new-PID`` (temporaries of
    earlier versions) of dead processes; ``DEST.tmp-PID`` are removed by :func:`meru.io.fresh_temp_dir`.
    Returns what was deleted."""
    removed = []
    patterns = (f"{dest.name}.old-*", f".{dest.name}.new-*")  # .DEST.new-PID: refreshes before the marker
    for old in sorted(p for pat in patterns for p in dest.parent.glob(pat)) if dest.parent.is_dir() else ():
        pid = re.split(r"\.(?:old|new)-", old.name)[-1]
        if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
            continue
        if not dest.exists() and ".old-" in old.name and is_reference(old):
            os.replace(old, dest)
            continue
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        removed.append(old)
    return removed


def refresh(source: str | os.PathLike, dest: str | os.PathLike, force: bool = False) -> list[str]:
    """Replace the reference ``dest`` by the reference content of the finished run ``source``; return the copied
    paths. Refuses (ReferenceError) an incomplete run and an unsafe ``dest`` (:func:`check_destination`)."""
    source, dest = Path(source), Path(dest)
    check_destination(source, dest, force)
    problems = check_complete(source)
    if problems:
        raise ReferenceError(f"{source} is not a complete run, not copied:\n  " + "\n  ".join(problems))
    recover_interrupted(dest)
    tmp = fresh_temp_dir(dest)  # also removes DEST.tmp-PID of killed refreshes
    copied = []
    for item in REFERENCE_CONTENT:
        src = source / item
        if not src.exists():
            continue
        target = tmp / item
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("reproduction.*", ".*"))
        else:
            shutil.copy2(src, target)
        copied.append(item)
    (tmp / MARKER).write_text(MARKER_TEXT)
    replace_dir(tmp, dest)
    return copied


# --------------------------------------------------------------------------- compare


def _short(x) -> str:
    text = repr(x) if isinstance(x, (dict, list)) else str(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _count(x) -> int:
    """Number of leaf values in a JSON value."""
    if isinstance(x, dict):
        return sum(_count(v) for v in x.values())
    if isinstance(x, list):
        return sum(_count(v) for v in x)
    return 1


def diff_values(a, b, where: str, rel_tol: float = 0.0) -> tuple[int, list[tuple[str, str, str]]]:
    """Walk two JSON values together: ``(leaves compared, [(field, ours, reference)] that differ)``. A key or list
    tail on one side only is one difference; numbers equal within ``rel_tol`` (relative; 0 = exactly); nulls,
    strings and booleans equal only themselves."""
    if isinstance(a, dict) and isinstance(b, dict):
        n, out = 0, []
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{where}.{k}" if where else str(k)
            if k not in a or k not in b:
                n += _count(a.get(k, b.get(k)))
                out.append((sub, _short(a[k]) if k in a else ABSENT, _short(b[k]) if k in b else ABSENT))
                continue
            m, d = diff_values(a[k], b[k], sub, rel_tol)
            n, out = n + m, out + d
        return n, out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return max(_count(a), _count(b)), [(f"{where} (length)", str(len(a)), str(len(b)))]
        n, out = 0, []
        for i, (x, y) in enumerate(zip(a, b)):
            m, d = diff_values(x, y, f"{where}[{i}]", rel_tol)
            n, out = n + m, out + d
        return n, out
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    same = type(a) is type(b) and a == b
    if numbers and not same:
        same = a == b or math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=0.0)
    return 1, [] if same else [(where, _short(a), _short(b))]


def _records(directory: Path) -> dict[tuple, list[MetricRecord]]:
    out: dict[tuple, list[MetricRecord]] = {}
    for r in load_metric_records(directory / "metrics"):
        out.setdefault((r.label, r.task, r.dataset), []).append(r)
    return out


def _comparable(rec: MetricRecord) -> dict:
    return {k: v for k, v in rec.to_dict().items() if k != "provenance"}


def match_records(ours: list[MetricRecord], ref: list[MetricRecord], run: Path, reference: Path) -> tuple:
    """Pair the records of one key one to one: ``([(ours, ref)], [unpaired of ours], [unpaired of ref])``; a single
    record on each side is a pair, otherwise records pair by their path under ``metrics/``."""
    if len(ours) == 1 and len(ref) == 1:
        return [(ours[0], ref[0])], [], []
    by_path = {r.path.relative_to(reference / "metrics"): r for r in ref}
    pairs, left = [], []
    for r in ours:
        other = by_path.pop(r.path.relative_to(run / "metrics"), None)
        pairs.append((r, other)) if other is not None else left.append(r)
    return pairs, left, list(by_path.values())


def _side_files(directory: Path) -> dict[Path, Path]:
    metrics = directory / "metrics"
    return {p.relative_to(metrics): p for p in sorted(metrics.rglob(f"*{CLIP_BENCHMARK_SUFFIX}"))}


def compare_runs(run: str | os.PathLike, reference: str | os.PathLike, rel_tol: float = 0.0) -> dict:
    """Every value of two runs' metric records and clip-benchmark side files, side by side (module doc).

    Returns ``{"records", "files", "values", "differ": [(record, field, ours, reference)], "only_run",
    "only_reference"}`` (``only_*``: names of records / side files without a counterpart); the runs are
    equal when ``records`` > 0 and ``differ``, ``only_run`` and ``only_reference`` are all empty."""
    run, reference = Path(run), Path(reference)
    ours, ref = _records(run), _records(reference)
    out = {"records": 0, "files": 0, "values": 0, "differ": [], "only_run": [], "only_reference": []}
    for key in sorted(set(ours) | set(ref)):
        pairs, left, right = match_records(ours.get(key, []), ref.get(key, []), run, reference)
        name = "/".join(key)
        dup = len(ours.get(key, [])) > 1 or len(ref.get(key, [])) > 1
        out["only_run"] += [f"{name} ({r.path})" if dup else name for r in left]
        out["only_reference"] += [f"{name} ({r.path})" if dup else name for r in right]
        for a, b in pairs:
            out["records"] += 1
            n, d = diff_values(_comparable(a), _comparable(b), "", rel_tol)
            label = f"{name} ({a.path.name})" if dup else name
            out["values"] += n
            out["differ"] += [(label, f, x, y) for f, x, y in d]
    sides_a, sides_b = _side_files(run), _side_files(reference)
    out["only_run"] += [str(p) for p in sorted(set(sides_a) - set(sides_b))]
    out["only_reference"] += [str(p) for p in sorted(set(sides_b) - set(sides_a))]
    for rel in sorted(set(sides_a) & set(sides_b)):
        out["files"] += 1
        try:
            n, d = diff_values(read_json(sides_a[rel]), read_json(sides_b[rel]), "", rel_tol)
        except ValueError as err:  # not JSON: a difference, named
            n, d = 1, [("(file)", "unreadable", str(err).splitlines()[0])]
        out["values"] += n
        out["differ"] += [(str(rel), f, x, y) for f, x, y in d]
    return out


def is_equal(result: dict) -> bool:
    return result["records"] > 0 and not (result["differ"] or result["only_run"] or result["only_reference"])


def verdict(result: dict, run, reference) -> str:
    """The one-line answer of :func:`compare_runs`."""
    tol = f"{result['values']} values of {result['records']} metric records and {result['files']} side files"
    if result["records"] == 0 and not (result["only_run"] or result["only_reference"]):
        return f"NOT EQUAL: nothing compared, neither {run} nor {reference} has a metric record"
    if is_equal(result):
        return f"all equal: {tol} compared"
    parts = []
    if result["differ"]:
        parts.append(f"{len(result['differ'])} values differ")
    for what, where in (("only_run", run), ("only_reference", reference)):
        if result[what]:
            shown = ", ".join(result[what][:3]) + (", ..." if len(result[what]) > 3 else "")
            parts.append(f"{len(result[what])} record(s)/file(s) only in {where}: {shown}")
    return f"NOT EQUAL: {'; '.join(parts)} ({tol} compared)"


def compare_text(result: dict, run, reference, rel_tol: float) -> str:
    """Markdown summary of :func:`compare_runs`: the verdict, the unmatched records and the differing values."""
    tol = "exactly" if rel_tol == 0 else f"within {rel_tol:g} (relative)"
    lines = [
        f"# `{run}` vs `{reference}`",
        "",
        f"{verdict(result, run, reference)}. Records matched one to one by (label, task, dataset); every value "
        f"(metrics, interval bounds, per-item values, plot data, details, n) and every clip-benchmark side file "
        f"compared {tol}: " + ("**all equal**." if is_equal(result) else f"**{len(result['differ'])} differ**."),
    ]
    for what in ("only_run", "only_reference"):
        if result[what]:
            where = run if what == "only_run" else reference
            lines += ["", f"Only in `{where}`: " + ", ".join(result[what])]
    if result["differ"]:
        lines += ["", "| record | field | this run | reference |", "|---|---|---|---|"]
        lines += [f"| {r} | {f} | {x} | {y} |" for r, f, x, y in result["differ"][:200]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI


def _compare(args) -> int:
    for d in (args.source, args.dest):
        if not (Path(d) / "metrics").is_dir():
            print(f"meru reference compare: {d}/metrics is not a directory; finish the run first", file=sys.stderr)
            return 2
    try:
        result = compare_runs(args.source, args.dest, args.rel_tol)
    except RecordError as err:
        print(f"meru reference compare: {err}", file=sys.stderr)
        return 2
    if args.out:
        write_text(args.out, compare_text(result, args.source, args.dest, args.rel_tol))
    print(f"meru reference compare: {verdict(result, args.source, args.dest)}")
    return 0 if is_equal(result) else 1


def run(args) -> int:
    if args.action == "compare":
        return _compare(args)
    if args.action == "check":
        problems = check_complete(args.source)
        print(f"{args.source}: complete" if not problems else "\n".join(problems))
        return 0 if not problems else 1
    try:
        copied = refresh(args.source, args.dest, args.force)
    except ReferenceError as err:
        print(f"meru reference refresh: {err}", file=sys.stderr)
        return 2
    print(f"meru reference refresh: {args.dest} <- {args.source}: {', '.join(copied)}")
    return 0
