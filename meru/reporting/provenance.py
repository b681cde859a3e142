"""Provenance record of a results directory (``meru provenance --out PROVENANCE.md ...``).

Writes, atomically, a Markdown file with: the UTC date; the git commit of the working tree and whether it
had uncommitted changes (``dirty``: ``git status --porcelain`` lists tracked changes or untracked files);
changes under the workflow's own output directories, ``--outputs``, are not counted); the machine (hostname, OS, CPU model, logical CPUs, memory, GPUs from ``nvidia-smi`` when present); Python
and the installed versions of the packages in :data:`PACKAGES` (``importlib.metadata``); the workflow
config (``--config-json``); and the SHA-256 of every input: data manifests (``manifest.json`` under each
``--data`` directory), reference files (``--reference``, default: every file in ``meru/resources``) and
checkpoints (``--checkpoint``, e.g. ``runs/*/model.pt``). Files are hashed streaming (1 MiB blocks).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from meru.arguments import add_provenance_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru.data.manifest import sha256_file
from meru.io import write_text

PACKAGES = (
    "meru-bench",
    "torch",
    "torchvision",
    "open_clip_torch",
    "timm",
    "clip-benchmark",
    "webdataset",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "pillow",
    "snakemake",
    "pyyaml",
    "jsonschema",
)
RESOURCES = Path(__file__).resolve().parent.parent / "resources"
MANIFEST = "manifest.json"


def _run(cmd: list[str], cwd=None) -> str | None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_state(cwd: str | os.PathLike = ".", exclude=()) -> dict:
    """``{"commit", "dirty", "changes"}``: HEAD and the number of changed or untracked paths, not counting
    those under ``exclude`` (the workflow's own outputs: results, runs, data); None outside git."""
    commit = _run(["git", "rev-parse", "HEAD"], cwd)
    if commit is None:
        return {"commit": None, "dirty": None, "changes": None}
    status = _run(["git", "status", "--porcelain", "--", ".", *[f":(exclude){p}" for p in exclude]], cwd)
    changes = [line for line in (status or "").splitlines() if line.strip()]
    return {"commit": commit, "dirty": bool(changes), "changes": len(changes)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gpus() -> list[str]:
    """``name, memory`` per GPU from ``nvidia-smi`` (empty without one)."""
    if not shutil.which("nvidia-smi"):
        return []
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"])
    return [line.strip() for line in (out or "").splitlines() if line.strip()]


def machine() -> dict:
    mem = memory_bytes()
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": None if mem is None else round(mem / 2**30, 1),
        "gpus": gpus(),
    }


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def input_files(data_dirs=(), references=(), checkpoints=()) -> list[tuple[str, Path]]:
    """(category, path) of every file to hash: manifests under the data directories, reference files,
    checkpoints. A missing path raises naming it (provenance must not silently skip an input)."""
    out = []
    for d in data_dirs:
        d = Path(d)
        if not d.exists():
            raise FileNotFoundError(f"--data {d}: no such directory")
        found = [d] if d.is_file() else sorted(d.rglob(MANIFEST))
        out += [("data manifest", p) for p in found]
    for p in references:
        p = Path(p)
        found = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        out += [("reference", x) for x in found]
    out += [("checkpoint", Path(p)) for p in checkpoints]
    for _, p in out:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: input listed for provenance does not exist")
    return out


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it (the repository root in the workflow)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def render(config: dict | None, files: list[tuple[str, Path]], cwd: str | os.PathLike = ".", exclude=()) -> str:
    git, mach, pkgs = git_state(cwd, exclude), machine(), package_versions()
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    dirty = {True: f"yes ({git['changes']} changed or untracked paths)", False: "no", None: "unknown"}[git["dirty"]]
    if exclude and git["dirty"] is not None:
        dirty += f" (not counting the outputs under {', '.join(str(e) for e in exclude)})"
    lines = [
        "# Provenance",
        "",
        f"- date (UTC): {date}",
        f"- git commit: {git['commit'] or 'unknown (not a git tree)'}",
        f"- uncommitted changes: {dirty}",
        "",
        "## Machine",
        "",
        f"- hostname: {mach['hostname']}",
        f"- OS: {mach['os']}",
        f"- CPU: {mach['cpu']}",
        f"- logical CPUs: {mach['cpus']}",
        f"- memory: {mach['memory_gib']} GiB",
        f"- GPUs: {'; '.join(mach['gpus']) if mach['gpus'] else 'none'}",
        "",
        "## Software",
        "",
        f"- python: {platform.python_version()} ({sys.executable})",
    ]
    lines += [f"- {name}: {ver or 'not installed'}" for name, ver in pkgs.items()]
    lines += ["", "## Inputs (SHA-256)", ""]
    if files:
        lines += ["| kind | file | bytes | sha256 |", "|---|---|---|---|"]
        lines += [f"| {kind} | {_shown(p)} | {p.stat().st_size} | `{sha256_file(p)}` |" for kind, p in files]
    else:
        lines.append("(none listed)")
    lines += [
        "",
        "## Config",
        "",
        "```json",
        json.dumps(config, sort_keys=True, indent=1) if config is not None else "null",
        "```",
    ]
    return "\n".join(lines) + "\n"


def write_provenance(out: str | os.PathLike, config: dict | None, files: list[tuple[str, Path]], exclude=()) -> Path:
    return write_text(out, render(config, files, exclude=exclude))


def run(args) -> int:
    try:
        config = json.loads(args.config_json) if args.config_json else None
    except json.JSONDecodeError as err:
        print(f"meru provenance: error: --config-json is not valid JSON ({err})", file=sys.stderr)
        return 2
    try:
        files = input_files(args.data, [RESOURCES] if args.reference is None else args.reference, args.checkpoint)
    except FileNotFoundError as err:
        print(f"meru provenance: error: {err}", file=sys.stderr)
        return 2
    path = write_provenance(args.out, config, files, exclude=args.outputs)
    print(f"meru provenance: {len(files)} input files hashed -> {path}")
    return 0
