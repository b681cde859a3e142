"""CPU training levers, measured on the real training path: ``meru train`` with and without
``runtime.compact_vocab`` and ``runtime.compile``, per model kind, one thread, one run at a time.

    python benchmarks/bench_levers.py --data data/synthhier/train --steps 600 \\
        --out results/benchmarks/train-levers.json

Each setting trains the default run's recipe (``configs/default.yaml``'s ``train:`` section, size ``cpu-conv``,
seed 0) for ``--steps`` steps (warmup scaled to a tenth) in a fresh run directory, in a subprocess, as the
workflow runs it. Per run: wall seconds of the process, the steady rate (median ``samples_per_s`` of the log rows
after ``--settle`` steps: compile and first-touch costs excluded), and its final losses. Compiling costs the
first steps; ``TORCHINDUCTOR_CACHE_DIR`` is a fresh directory per ``--cache cold`` run (every setting pays the
full compile) or one shared directory (``--cache warm``: the later runs of a kind reuse the compiled code, as
the 3 seeds of a study do). Output: one JSON with the machine, every run, and per kind the speed-ups over eager.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import meru  # noqa: E402
from meru.kinds import BASELINE, PAPER  # noqa: E402
from meru.reporting.provenance import cpu_model  # noqa: E402

SETTINGS = {
    "eager": {"runtime.compact_vocab": "false", "runtime.compile": "false"},
    "compact": {"runtime.compact_vocab": "true", "runtime.compile": "false"},
    "compile": {"runtime.compact_vocab": "false", "runtime.compile": "true"},
    "compact+compile": {"runtime.compact_vocab": "true", "runtime.compile": "true"},
}


def run_one(args, kind: str, setting: str, cache: Path, workdir: Path) -> dict:
    out = workdir / f"{kind}-{setting.replace('+', '-')}"
    sets = {
        **SETTINGS[setting],
        "optim.total_steps": str(args.steps),
        "optim.warmup_steps": str(args.steps // 10),
        "runtime.log_every": "25",
        "runtime.checkpoint_every": str(args.steps),
        "data.train": args.data,
    }
    argv = [
        sys.executable,
        "-m",
        meru.__name__,
        "train",
        "--config",
        str(REPO / "configs" / "default.yaml"),
        "--model",
        kind,
        "--size",
        args.size,
        "--seed",
        "0",
        "--out",
        str(out),
        "--resume",
        "never",
    ]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TORCHINDUCTOR_CACHE_DIR": str(cache),
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"bench_levers: {kind}/{setting} failed:\n{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steady = [r["samples_per_s"] for r in rows if r["step"] > args.settle]
    first = rows[0]
    return {
        "kind": kind,
        "setting": setting,
        "wall_s": round(wall, 1),
        "steady_samples_per_s": round(statistics.median(steady), 1),
        "first_log_row_s": round(25 * 128 / first["samples_per_s"], 1) if first["samples_per_s"] else None,
        "final_loss": rows[-1]["loss"],
        "losses": [r["loss"] for r in rows],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="training shards (a SynthHier train/ directory)")
    ap.add_argument("--kinds", nargs="+", default=[PAPER, BASELINE])
    ap.add_argument("--size", default="cpu-conv")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--settle", type=int, default=100, help="log rows at or before this step are not steady")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--cache", choices=["cold", "warm"], default="cold")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default="results/benchmarks/train-levers.json")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-levers-"))
    shared_cache = workdir / "inductor-cache"
    record = {
        "benchmark": "train levers",
        "command": "bench_levers.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "note": args.note,
        "runs": [],
    }
    try:
        for kind in args.kinds:
            for setting in args.settings:
                cache = shared_cache if args.cache == "warm" else workdir / f"cache-{kind}-{setting}"
                row = run_one(args, kind, setting, cache, workdir)
                record["runs"].append(row)
                print(
                    f"{kind:6s} {setting:16s} wall {row['wall_s']:7.1f} s  steady {row['steady_samples_per_s']:8.1f}"
                    f" samples/s  final loss {row['final_loss']:.6f}",
                    flush=True,
                )
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(record, indent=1) + "\n")  # after every run: partial kept
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    speedups = {}
    for kind in args.kinds:
        rows = {r["setting"]: r for r in record["runs"] if r["kind"] == kind}
        if "eager" in rows:
            base = rows["eager"]
            speedups[kind] = {
                s: {
                    "steady": round(r["steady_samples_per_s"] / base["steady_samples_per_s"], 3),
                    "wall": round(base["wall_s"] / r["wall_s"], 3),
                    "losses_identical_to_eager": r["losses"] == base["losses"],
                    "max_abs_loss_difference": max(abs(a - b) for a, b in zip(r["losses"], base["losses"])),
                }
                for s, r in rows.items()
                if s != "eager"
            }
    record["speedup_over_eager"] = speedups
    record["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(speedups, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
