"""Help speed: wall time of `meru --help` and of every `meru <cmd> --help`, as a ratio to
`python -c "import torch"` measured in the same run. Goal: every ratio <= 0.1.

    python benchmarks/bench_help.py [--repeats 5] [--out results/benchmarks/help.json]

Each command runs in a fresh interpreter (``python -m meru ...``, the same Python, this checkout on
PYTHONPATH). The runs are interleaved: each round times ``import torch``, every help command, then
``import torch`` again, so machine load hits both sides alike; the figures are medians over rounds and the
ratio is median(command) / median(import torch). ``python -c pass`` (interpreter start-up alone) is timed
the same way for context. Prints one JSON line; exits 1 if a ratio misses the goal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from meru.cli import COMMANDS  # noqa: E402  (light: names and one-line help only)
from meru.io import write_text  # noqa: E402

GOAL = 0.1  # median(meru ... --help) / median(python -c "import torch")
IMPORT_TORCH = "python -c 'import torch'"
START_ONLY = "python -c pass"


def wall_seconds(argv: list[str]) -> float:
    """Wall-clock seconds of one subprocess run (output discarded; it must exit 0)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    return time.perf_counter() - start


def cases() -> dict[str, list[str]]:
    """Label -> argv of every timed command, the two references first."""
    py = sys.executable
    out = {
        IMPORT_TORCH: [py, "-c", "import torch"],
        START_ONLY: [py, "-c", "pass"],
        "meru --help": [py, "-m", "meru", "--help"],
    }
    out.update({f"meru {name} --help": [py, "-m", "meru", name, "--help"] for name in COMMANDS})
    return out


def measure(repeats: int) -> dict[str, list[float]]:
    """Seconds per run of every case, ``repeats`` interleaved rounds (``import torch`` twice a round)."""
    argvs = cases()
    samples: dict[str, list[float]] = {label: [] for label in argvs}
    for _ in range(repeats):
        samples[IMPORT_TORCH].append(wall_seconds(argvs[IMPORT_TORCH]))
        for label, argv in argvs.items():
            if label != IMPORT_TORCH:
                samples[label].append(wall_seconds(argv))
        samples[IMPORT_TORCH].append(wall_seconds(argvs[IMPORT_TORCH]))
    return samples


def machine() -> dict:
    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": version("torch"),
        "open_clip_torch": version("open_clip_torch"),
        "timm": version("timm"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (medians over them)")
    p.add_argument("--out", default=None, help="write the JSON here too (e.g. results/benchmarks/help.json)")
    args = p.parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    machine_start = machine()
    samples = measure(args.repeats)
    torch_s = statistics.median(samples[IMPORT_TORCH])
    rows = {
        label: {
            "median_s": round(statistics.median(s), 4),
            "ratio_to_import_torch": round(statistics.median(s) / torch_s, 4),
            "samples_s": [round(x, 4) for x in s],
        }
        for label, s in samples.items()
    }
    helps = {label: row for label, row in rows.items() if label.startswith("meru ")}
    worst = max(helps, key=lambda label: helps[label]["ratio_to_import_torch"])
    result = {
        "benchmark": "help",
        "date": started,
        "goal": f"median(meru [CMD] --help) / median({IMPORT_TORCH}) <= {GOAL}",
        "command": "python -m meru [CMD] --help (fresh interpreter per run)",
        "repeats": args.repeats,
        "worst": {"command": worst, "ratio": helps[worst]["ratio_to_import_torch"]},
        "meets_goal": helps[worst]["ratio_to_import_torch"] <= GOAL,
        "results": rows,
        "machine": {**machine_start, "load_avg_1m_end": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps({k: result[k] for k in ("benchmark", "worst", "meets_goal")} | {"import_torch_s": torch_s}))
    if args.out:
        write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0 if result["meets_goal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
