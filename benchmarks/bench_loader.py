"""Training-loader throughput on the default SynthHier set: samples/s of the shard path for 0, 1 and 2
workers, and of the pre-decoded in-memory path (``data.in_memory``, the default run's) in-process.

    python benchmarks/bench_loader.py [--data data/synthhier] [--batches 40] [--batch-size 128] [--out results/benchmarks/loader.json]

``--paths float32 uint8`` measures both outputs: float32 in [0, 1] (ToTensor), and the GPU feed of
``meru train`` (uint8 images, tokens trimmed to the batch, pinned when CUDA is present).

If ``--data`` has no complete ``train/`` shard set, the default set (20k train, 32 px) is generated into
a temporary directory first (its generation time is reported too). Prints one JSON line. Timings
depend on machine load: the numbers are only comparable between runs on the same, equally idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from meru.data.loader import TrainLoader
from meru.data.manifest import IncompleteDatasetError, atomic_write_text, read_manifest
from meru.data.synthhier import generate


def measure(
    shards: Path,
    workers: int,
    batches: int,
    batch_size: int,
    image_size: int,
    context_length: int,
    path: str = "float32",
) -> dict:
    """Time ``batches`` batches after one warm-up batch (worker start-up, shuffle-buffer fill and, for the
    in-memory path, the one-off decoding of every image excluded; the latter is reported as ``setup_s``).
    ``path``: ``float32`` / ``uint8`` (shard path, images as float or uint8 + trimmed pinned tokens) or
    ``memory`` (the default run's pre-decoded in-memory path, float32)."""
    fast = path == "uint8"
    t0 = time.perf_counter()
    loader = TrainLoader(
        shards,
        batch_size=batch_size,
        image_size=image_size,
        context_length=context_length,
        num_workers=0 if path == "memory" else workers,
        augment=False,
        image_dtype="uint8" if fast else "float32",
        trim_tokens=fast,
        pin_memory=fast,
        in_memory=path == "memory",
    )
    setup = time.perf_counter() - t0
    it = iter(loader)
    t0 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    dt = time.perf_counter() - t0
    del it
    rate = batches * batch_size / dt
    return {
        "path": path,
        "workers": 0 if path == "memory" else workers,
        "setup_s": round(setup, 2),
        "samples_per_s": round(rate, 1),
        "samples_per_s_per_worker": round(rate / max(workers, 1), 1),
        "first_batch_s": round(first, 3),
        "batches": batches,
        "batch_size": batch_size,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/synthhier", help="SynthHier output directory (generated if missing)")
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--context-length", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--paths",
        nargs="+",
        choices=("float32", "uint8", "memory"),
        default=["float32", "memory"],
        help="loader paths to time (memory: the default run's pre-decoded in-memory path)",
    )
    p.add_argument("--out", default=None, help="write the JSON here too (e.g. results/benchmarks/loader.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    tmp = None
    shards = Path(args.data) / "train"
    generation_s = None
    try:
        read_manifest(shards)
    except IncompleteDatasetError:
        tmp = Path(tempfile.mkdtemp(prefix="bench-loader-"))
        t0 = time.perf_counter()
        generate(tmp / "synthhier")
        generation_s = round(time.perf_counter() - t0, 2)
        shards = tmp / "synthhier" / "train"
    try:
        runs = [
            measure(shards, w, args.batches, args.batch_size, args.image_size, args.context_length, path)
            for path in args.paths
            if path != "memory"
            for w in args.workers
        ]
        if "memory" in args.paths:
            runs.append(
                measure(shards, 0, args.batches, args.batch_size, args.image_size, args.context_length, "memory")
            )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "benchmark": "loader",
        "dataset": "synthhier-default" if tmp is not None else str(args.data),
        "generation_s": generation_s,
        "runs": runs,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    line = json.dumps(result)
    print(line)
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
