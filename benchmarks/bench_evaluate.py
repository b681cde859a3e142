"""CPU-seconds and peak memory of `meru evaluate` jobs, for two checkouts of the code, runs interleaved.

    python benchmarks/bench_evaluate.py --code before=/tmp/old-checkout after=. \\
        --embeddings results/embeddings/meru-cpu-conv-s0 --data data/synthhier --repeats 2 --out OUT.json

Each run is one `python -m meru evaluate ...` in a fresh interpreter, in the checkout with ``PYTHONPATH`` = it, one
thread (``OMP_NUM_THREADS=1``, as the workflow runs it); its user + system CPU-seconds and peak resident set
come from ``os.wait4``'s resource usage of that child alone. CPU-seconds, unlike wall time, hardly depend on what
else loads the machine; runs alternate between checkouts so drifts in load hit both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def jobs(emb: Path, data: Path) -> dict[str, list[str]]:
    """The workflow's structure and leaf zero-shot evaluations (workflow/rules/evaluate.smk) of one run."""
    tree = ["--tree", str(data / "taxonomy.txt"), "--tree-names", str(data / "taxonomy_names.json")]
    return {
        "structure": ["--task", "structure", "--embeddings", str(emb / "synthhier-shape.pt")]
        + ["--text-pool", str(emb / "textpool-synthhier.pt")],
        "zeroshot": ["--task", "zeroshot", "--embeddings", str(emb / "synthhier-shape.pt"), *tree],
    }


def run_once(code: Path, args: list[str], out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "meru", "evaluate", *args, "--out", str(out)],
        env=env,
        cwd=code,  # `python -m` puts the working directory first on sys.path
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode()
    loaded = subprocess.run(  # which checkout answered (guards against another meru on sys.path)
        [sys.executable, "-c", "import meru; print(meru.__file__)"], env=env, cwd=code, capture_output=True, text=True
    ).stdout.strip()
    if not loaded.startswith(str(code.resolve())):
        raise SystemExit(f"bench_evaluate: {code} runs the meru of {loaded}")
    if status != 0:
        raise SystemExit(f"bench_evaluate: {' '.join(args)} failed under {code}:\n{err[-2000:]}")
    return {
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "user_s": round(usage.ru_utime, 2),
        "sys_s": round(usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "wall_s": round(wall, 2),
    }


def git_head(code: Path) -> str | None:
    done = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", nargs="+", required=True, help="NAME=CHECKOUT pairs (the meru package's parent)")
    ap.add_argument("--embeddings", type=Path, required=True, help="a run's embedding folder (default size)")
    ap.add_argument("--data", type=Path, required=True, help="the SynthHier folder (taxonomy.txt for --tree)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    codes = dict(pair.split("=", 1) for pair in args.code)
    samples: dict = {task: {name: [] for name in codes} for task in jobs(args.embeddings, args.data)}
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for task, task_args in jobs(args.embeddings, args.data).items():
                for name, code in codes.items():
                    samples[task][name].append(run_once(Path(code), task_args, Path(tmp) / f"{task}-{name}.json"))
                    load.append(os.getloadavg())
    results = {
        task: {
            name: {
                "median_cpu_s": statistics.median(s["cpu_s"] for s in runs),
                "max_peak_rss_mb": max(s["peak_rss_mb"] for s in runs),
                "runs": runs,
            }
            for name, runs in by_code.items()
        }
        for task, by_code in samples.items()
    }
    doc = {
        "benchmark": "evaluate",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "machine": {"cpu": _cpu(), "vcpus": os.cpu_count(), "python": platform.python_version()},
        "code": {name: {"path": str(code), "commit": git_head(Path(code))} for name, code in codes.items()},
        "embeddings": str(args.embeddings),
        "commands": {task: "meru evaluate " + " ".join(a) for task, a in jobs(args.embeddings, args.data).items()},
        "load_average_1_5_15": [list(map(lambda v: round(v, 2), x)) for x in load],
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    for task, by_code in results.items():
        print(task, {name: (r["median_cpu_s"], r["max_peak_rss_mb"]) for name, r in by_code.items()})


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
