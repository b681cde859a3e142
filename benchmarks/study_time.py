"""Wall time of a study config (issue 23 budget: <= 45 min on the 2-vCPU machine from a fresh clone).

    python benchmarks/study_time.py --config configs/sizes.yaml --out results/benchmarks/study-sizes.json
    python benchmarks/study_time.py --config configs/sizes.yaml --out ... --start ISO --end ISO --note "..."

The first form runs ``snakemake --cores 2 --configfile CONFIG`` in the current checkout and times it; the second
records a run already made (its start and end, UTC). Both read the run's per-job Snakemake benchmark TSVs
(``RESULTS/benchmarks/{train,embed}/``) for per-job seconds, count the trained runs, and write one JSON with the
machine (CPU model, logical CPUs), the commit and the load average at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from meru.config import load_config_file  # noqa: E402
from meru.reporting.provenance import cpu_model  # noqa: E402


def job_seconds(results: Path) -> dict:
    out = {}
    for tsv in sorted((results / "benchmarks").glob("*/*.tsv")):
        rows = tsv.read_text().splitlines()
        if len(rows) >= 2:
            out[f"{tsv.parent.name}/{tsv.name}"] = round(float(rows[1].split("\t")[0]), 1)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--start", help="record a run already made: its start (UTC, ISO 8601)")
    p.add_argument("--end", help="... and its end")
    p.add_argument("--results", help="the run's results directory (default: the config's results_dir)")
    p.add_argument("--note", default="", help="what else shared the machine, what was reused")
    args = p.parse_args(argv)
    cfg = load_config_file(args.config)
    results = Path(args.results or cfg.get("results_dir", "results"))
    if args.start:
        start, end = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (args.start, args.end))
        rc = None
    else:
        start = datetime.now(timezone.utc)
        t0 = time.monotonic()
        rc = subprocess.run(["snakemake", "--cores", "2", "--configfile", args.config], check=False).returncode
        end = datetime.fromtimestamp(start.timestamp() + time.monotonic() - t0, timezone.utc)
    prov = results / "PROVENANCE.md"  # the run's own commit; else this checkout's
    lines = prov.read_text().splitlines() if prov.is_file() else []
    commit = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("- git commit:")), None)
    commit = commit or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    jobs = job_seconds(results)
    record = {
        "benchmark": f"study {cfg.get('name')}",
        "command": f"snakemake --cores 2 --configfile {args.config}",
        "commit": commit,
        "date_utc_start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "date_utc_end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_s": round((end - start).total_seconds(), 1),
        "returncode": rc,
        "budget_s": 45 * 60,
        "trainings": sum(k.startswith("train/") for k in jobs),
        "training_s_total": round(sum(v for k, v in jobs.items() if k.startswith("train/")), 1),
        "machine": {
            "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "note": args.note,
        "job_seconds": jobs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(yaml.safe_dump({k: record[k] for k in ("benchmark", "wall_s", "trainings", "training_s_total")}), end="")
    return 0 if rc in (None, 0) else 1


if __name__ == "__main__":
    raise SystemExit(main())
