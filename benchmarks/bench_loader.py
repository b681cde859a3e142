"""Training-loader throughput on the default SynthHier set: samples/s of the shard path for 0, 1 and 2
workers, and of the pre-decoded in-memory path (``data.in_memory``, the default run's) in-process.

    python benchmarks/bench_loader.py [--data data/synthhier] [--batches 40] [--batch-size 128] [--out results/benchmarks/loader.json]

``--paths float32 uint8`` measures both outputs: float32 in [0, 1] (ToTensor), and the GPU feed of
``meru train`` (uint8 images, tokens trimmed to the batch, pinned when CUDA is present).

JPEG paths (the set is re-encoded as JPEG, quality 90, first; RandomResizedCrop as in training, uint8 feed):
``jpeg-worker`` decodes and crops in the workers (PIL); ``jpeg-batched`` decodes each batch with
``decode_jpeg`` in the main process, on CUDA when available, else on the CPU (``decode_device``);
``jpeg-prep`` times only the workers' share of the batched path (tar reading, header check, crop box,
tokenising; no pixel decode), i.e. the CPU cost per sample left on a GPU host.

If ``--data`` has no complete ``train/`` shard set, the default set (20k train, 32 px) is generated into
a temporary directory first (its generation time is reported too). Prints one JSON line. Timings
depend on machine load: the numbers are only comparable between runs on the same, equally idle machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from meru.data.loader import TrainLoader, _StreamDataset, tar_samples
from meru.data.manifest import IncompleteDatasetError, read_manifest
from meru.data.shards import write_shards
from meru.io import write_text
from meru.data.synthhier import generate

JPEG_PATHS = ("jpeg-worker", "jpeg-batched", "jpeg-prep")


def to_jpeg(shards: Path, out: Path, quality: int = 90) -> Path:
    """Re-encode a shard set's PNG images as JPEG (``quality``) into ``out`` (same keys, captions, json)."""
    from PIL import Image

    def samples():
        for url in sorted(str(x) for x in shards.glob("*.tar")):
            for sample in tar_samples(url):
                image = Image.open(io.BytesIO(sample.pop("png"))).convert("RGB")
                buf = io.BytesIO()
                image.save(buf, format="JPEG", quality=quality)
                sample["jpg"] = buf.getvalue()
                yield {k: v for k, v in sample.items() if k == "__key__" or not k.startswith("__")}

    write_shards(samples(), out, "jpeg", shard_size=250, source="bench-jpeg")
    return out


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
    ``memory`` (the default run's pre-decoded in-memory path, float32), or one of ``JPEG_PATHS`` (on a
    JPEG shard set; see the module docstring)."""
    fast = path == "uint8" or path in JPEG_PATHS
    decode = "worker"
    if path in ("jpeg-batched", "jpeg-prep"):
        decode = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    loader = TrainLoader(
        shards,
        batch_size=batch_size,
        image_size=image_size,
        context_length=context_length,
        num_workers=0 if path in ("memory", "jpeg-prep") else workers,
        augment=path in JPEG_PATHS,
        image_dtype="uint8" if fast else "float32",
        trim_tokens=fast,
        pin_memory=fast,
        in_memory=path == "memory",
        decode_device=decode,
    )
    setup = time.perf_counter() - t0
    if path == "jpeg-prep":  # the workers' share only: the stream dataset in this process, no main-process decode
        it = iter(_StreamDataset(loader.spec, 0, [None]))
    else:
        it = iter(loader)
    t0 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    del it
    rate = batches * batch_size / dt
    workers = 0 if path in ("memory", "jpeg-prep") else workers
    return {
        "path": path,
        "decode_device": decode,
        "workers": workers,
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
        choices=("float32", "uint8", "memory", *JPEG_PATHS),
        default=["float32", "memory"],
        help="loader paths to time (memory: the default run's pre-decoded in-memory path; jpeg-*: see above)",
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
    jpeg_s = None
    try:
        runs = [
            measure(shards, w, args.batches, args.batch_size, args.image_size, args.context_length, path)
            for path in args.paths
            if path in ("float32", "uint8")
            for w in args.workers
        ]
        if any(p in JPEG_PATHS for p in args.paths):
            tmp = tmp or Path(tempfile.mkdtemp(prefix="bench-loader-"))
            t0 = time.perf_counter()
            jpegs = to_jpeg(shards, tmp / "jpeg")
            jpeg_s = round(time.perf_counter() - t0, 2)
            for path in (p for p in args.paths if p in JPEG_PATHS):
                for w in [0] if path == "jpeg-prep" else args.workers:
                    runs.append(
                        measure(jpegs, w, args.batches, args.batch_size, args.image_size, args.context_length, path)
                    )
        if "memory" in args.paths:
            runs.append(
                measure(shards, 0, args.batches, args.batch_size, args.image_size, args.context_length, "memory")
            )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "benchmark": "loader",
        "dataset": "synthhier-default" if generation_s is not None else str(args.data),
        "generation_s": generation_s,
        "jpeg_encoding_s": jpeg_s,
        "runs": runs,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    line = json.dumps(result)
    print(line)
    if args.out:
        write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
