#!/usr/bin/env bash
# One-shot GPU benchmark for issue 15 (~5 min on one H100/H200). Run from the repository root:
#
#     bash benchmarks/gpu_check.sh [/path/to/facebookresearch/meru]
#
# 1. Training throughput, bf16: MERU and CLIP (and EuCLIP where build_model knows it) at ViT-S/B/L
#    eager, ViT-B also with torch.compile; the official MERU side by side when its checkout is given.
#    -> results/benchmarks/train-<gpu>.json (written after every row; partial results survive).
# 2. Loader throughput at 224 px on a small generated SynthHier set, 1 and 4 workers (samples/s per
#    CPU core; ViT-B at 40% MFU on an H100/H200 needs ~3,200 samples/s).
#    -> results/benchmarks/loader-224-<gpu>.json
# 3. The same set as JPEG: worker (PIL) decode vs batched GPU decode_jpeg + crop (data.decode_device).
#    -> results/benchmarks/loader-jpeg-224-<gpu>.json
# Then commit the JSON files. Needs no network; the official code is never committed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OFFICIAL=${1:-}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh: no CUDA device visible')"
KINDS=$(python -c "from meru.kinds import KINDS; print(' '.join(KINDS))")
TAG=$(python -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_train as b; print(b.device_tag())")
NOTE="one GPU, issue-15 gpu_check.sh"
OFF=()
[ -n "$OFFICIAL" ] && OFF=(--official "$OFFICIAL")

# ~3 min: 3 sizes x kinds eager (15 timed + 15 split steps each) + ViT-B compiled (compile ~1 min each)
timeout 330 python benchmarks/bench_train.py --kinds $KINDS --sizes vit-s16 vit-b16 vit-l16 --batch 256 256 128 \
    --compile both --compile-sizes vit-b16 --steps 15 --warmup 5 "${OFF[@]}" --note "$NOTE" \
    --out "results/benchmarks/train-$TAG.json" || echo "bench_train: stopped early (rows so far are kept)"

# ~1 min: loader at 224 px (2,000 generated images), 1 and 4 workers
DATA=$(mktemp -d)
timeout 150 python -m meru synth --out "$DATA/s" --train-size 2000 --test-size 10 --image-size 224 --shard-size 250 >/dev/null \
  && timeout 120 python benchmarks/bench_loader.py --data "$DATA/s" --batch-size 128 --batches 12 --image-size 224 \
       --context-length 77 --workers 1 4 --paths float32 uint8 --out "results/benchmarks/loader-224-$TAG.json" \
  || echo "bench_loader: skipped or stopped early"
# ~1 min: the same images as JPEG, decoded in the workers (PIL) vs batched decode_jpeg on the GPU, and the
# workers' share of the latter alone (CPU per sample left on a GPU host)
[ -d "$DATA/s/train" ] && timeout 180 python benchmarks/bench_loader.py --data "$DATA/s" --batch-size 128 --batches 12 \
       --image-size 224 --context-length 77 --workers 1 4 --paths jpeg-worker jpeg-batched jpeg-prep \
       --out "results/benchmarks/loader-jpeg-224-$TAG.json" \
  || echo "bench_loader (jpeg): skipped or stopped early"
rm -rf "$DATA"
echo "done: results/benchmarks/train-$TAG.json results/benchmarks/loader-224-$TAG.json" \
  "results/benchmarks/loader-jpeg-224-$TAG.json"
