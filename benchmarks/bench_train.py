"""Training throughput of MERU / CLIP (/ EuCLIP) per size: samples/s, step split, MFU, peak memory.

    python benchmarks/bench_train.py                      # CPU: tiny, small-cpu; GPU: vit-s16/b16/l16 in bf16
    python benchmarks/bench_train.py --kinds meru clip euclip --sizes vit-b16 --compile both
    python benchmarks/bench_train.py --official /path/to/facebookresearch/meru   # side by side, same batch

Each configuration builds the model and the fused AdamW of ``meru train``, then runs ``--warmup``
steps, ``--steps`` steps timed end to end (samples/s, TFLOP/s, MFU; no host sync inside a step
except the training loop's one finite check), and ``--steps`` steps with a device sync after each
phase for the split (data wait / forward incl. loss / backward / optimiser). Input: uint8 images
and caption tokens whose lengths are drawn from ``--caption-tokens LO HI`` (RedCaps-like 10-40),
held in pinned host memory and copied with ``non_blocking=True`` as ``meru train`` does, text run at
the batch's longest caption (rounded to 8); or, with ``--data DIR``, the real ``TrainLoader``
(uint8, trimmed tokens, pinned, ``--workers``). FLOPs: :mod:`meru.training.flops` at the batch's
text length; MFU against the device's dense bf16 (or fp32) peak.

``--official PATH`` runs the official MERU code (github.com/facebookresearch/meru, checked out at
PATH, never committed here) in a subprocess at the same batch, precision and token lengths (its
model pads each batch to its longest caption itself) and reports our/official samples/s.

Output: one JSON (``--out``, default ``results/benchmarks/train-<device>.json``) with the machine
(device name and count, driver, CPU, torch) and one row per (kind, size, compile), written after
every row so that an interrupted run keeps what it measured. Timings depend on machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from meru.io import write_text  # noqa: E402 (after the sys.path entry)
from meru.kinds import BASELINE, PAPER  # noqa: E402
from meru.training.flops import peak_flops, train_flops_per_sample  # noqa: E402

OFFICIAL_ARCH = {
    "vit-s16": "vit_small_mocov3_patch16_224",
    "vit-b16": "vit_base_patch16_224",
    "vit-l16": "vit_large_patch16_224",
}


# ------------------------------------------------------------------------------------------ machine
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(note: str | None) -> dict:
    info = {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "note": note,
    }
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        info["device_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
        try:
            info["driver"] = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                .stdout.split("\n")[0]
                .strip()
            )
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    else:
        info.update(device="cpu", device_count=1, driver=None, threads=torch.get_num_threads())
    return info


def device_tag() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name(0).lower()
    m = re.search(r"\b([abhlv]\d{2,3}s?|gh200|b200)\b", name)
    return m.group(1) if m else re.sub(r"[^a-z0-9]+", "-", name).strip("-")


# --------------------------------------------------------------------------------------------- data
def synthetic_batches(
    n: int, batch: int, image_size: int, context: int, lo: int, hi: int, seed: int = 0, pin: bool = False
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` (uint8 images, tokens [B, context]) pairs; caption ``i`` has ``U{lo..hi}`` tokens incl. [SOT]/[EOT]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        images = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, generator=g)
        lengths = torch.randint(min(lo, context), min(hi, context) + 1, (batch,), generator=g)
        tokens = torch.zeros(batch, context, dtype=torch.long)
        for i, n_tok in enumerate(lengths.tolist()):
            tokens[i, 0] = 49406
            tokens[i, 1 : n_tok - 1] = torch.randint(1, 49000, (n_tok - 2,), generator=g)
            tokens[i, n_tok - 1] = 49407
        if pin:
            images, tokens = images.pin_memory(), tokens.pin_memory()
        out.append((images, tokens))
    return out


# ---------------------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    kind: str,
    size: str,
    batch: int,
    steps: int,
    warmup: int,
    device: torch.device,
    amp_dtype,
    compile_model: bool,
    caption_tokens: tuple[int, int],
    data: str | None,
    workers: int,
) -> dict:
    from meru.losses import build_loss
    from meru.models import build_model, get_size
    from meru.models.towers import trim_tokens
    from meru.training.train import param_groups, to_device, train_step

    spec = get_size(size)
    torch.manual_seed(0)
    model = build_model(kind, size).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, 0.2), lr=1e-4, betas=(0.9, 0.98), fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    loss_fn = build_loss(kind)
    fwd = torch.compile(model) if compile_model else model
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    if data is not None:
        from meru.data.loader import TrainLoader

        loader = TrainLoader(
            data,
            batch,
            spec.image_size,
            spec.context_length,
            num_workers=workers,
            shuffle_buffer=1000,
            image_dtype="uint8",
            trim_tokens=True,
            pin_memory=device.type == "cuda",
        )
        it = iter(loader)

        def next_batch():
            return next(it)
    else:
        pool = synthetic_batches(
            4, batch, spec.image_size, spec.context_length, *caption_tokens, pin=device.type == "cuda"
        )
        counter = [0]

        def next_batch():
            images, tokens = pool[counter[0] % len(pool)]
            counter[0] += 1
            return {"images": images, "tokens": trim_tokens(tokens)}

    def one_step(split: dict | None) -> int:
        t0 = time.perf_counter()
        b = next_batch()
        images, tokens = to_device(b, device)
        flops = b["tokens"].shape[0] * train_flops_per_sample(size, b["tokens"].shape[1])
        if split is None:
            train_step(fwd, loss_fn, [(images, tokens)], optimizer, scheduler, 1.0, amp_dtype, device_logs=True)
            return flops
        from contextlib import nullcontext

        _sync(device)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
            out = fwd(images, tokens)
        loss = loss_fn(out)["loss"]
        _sync(device)
        t2 = time.perf_counter()
        loss.backward()
        _sync(device)
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 1.0)
        optimizer.step()
        scheduler.step()
        _sync(device)
        t4 = time.perf_counter()
        for k, v in (("data_wait", t1 - t0), ("forward", t2 - t1), ("backward", t3 - t2), ("optimizer", t4 - t3)):
            split[k] = split.get(k, 0.0) + v
        split.setdefault("_steps", []).append(t4 - t0)
        return flops

    t_start = time.perf_counter()
    for _ in range(warmup):
        one_step(None)
    _sync(device)
    warmup_s = time.perf_counter() - t_start
    t0, flops = time.perf_counter(), 0
    for _ in range(steps):
        flops += one_step(None)
    _sync(device)
    dt = time.perf_counter() - t0
    split: dict = {}
    for _ in range(steps):
        one_step(split)
    synced = sorted(split.pop("_steps"))
    peak = peak_flops(device, amp_dtype)
    row = {
        "kind": kind,
        "size": size,
        "batch": batch,
        "compile": compile_model,
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
        "steps": steps,
        "input": f"TrainLoader({data}, workers={workers})" if data else f"synthetic, caption tokens {caption_tokens}",
        "samples_per_s": round(steps * batch / dt, 2),
        "step_ms": round(1000 * dt / steps, 3),
        # per-step times of the synced pass: the minimum is the least load-sensitive figure on a shared host
        "synced_step_ms_min": round(1000 * synced[0], 3),
        "synced_step_ms_median": round(1000 * synced[len(synced) // 2], 3),
        "warmup_s": round(warmup_s, 2),
        "tflops_per_device": round(flops / dt / 1e12, 4),
        "mfu": round(flops / dt / peak, 4) if peak else None,
        "split_ms": {k: round(1000 * v / steps, 3) for k, v in split.items()},
    }
    if device.type == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    else:
        row["peak_rss_gib_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return row


# ----------------------------------------------------------------------------------------- official
_OFFICIAL = r"""
import json, sys, time, types
path, arch, batch, steps, warmup, amp, lo, hi = sys.argv[1:9]
batch, steps, warmup, lo, hi = int(batch), int(steps), int(warmup), int(lo), int(hi)
sys.path.insert(0, path)
try:
    import loguru  # noqa: F401
except ImportError:  # the official code logs with loguru; a silent stand-in is enough to time it
    m = types.ModuleType("loguru"); m.logger = types.SimpleNamespace(info=print, warning=print, debug=print)
    sys.modules["loguru"] = m
import torch
from meru.encoders.image_encoders import build_timm_vit
from meru.encoders.text_encoders import TransformerTextEncoder
from meru.models import MERU
import tempfile
import torch.distributed as dist
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if not dist.is_initialized():  # the official model asks for its rank: a one-process group
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=0, world_size=1,
                            init_method="file://" + tempfile.mktemp(prefix="meru-official-pg-"))
torch.manual_seed(0)
model = MERU(visual=build_timm_vit(arch=arch, global_pool="token", use_sincos2d_pos=True),
             textual=TransformerTextEncoder(arch="L12_W512", vocab_size=49408, context_length=77),
             embed_dim=512, curv_init=1.0, learn_curv=True, entail_weight=0.2).to(dev)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=0.2)
g = torch.Generator().manual_seed(0)
pool = []
for _ in range(4):
    images = torch.rand(batch, 3, 224, 224, generator=g)
    toks = []
    for n in torch.randint(lo, hi + 1, (batch,), generator=g).tolist():
        toks.append(torch.cat([torch.tensor([49406]), torch.randint(1, 49000, (n - 2,), generator=g), torch.tensor([49407])]))
    pool.append((images.pin_memory() if dev.type == "cuda" else images, toks))
ac = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if amp == "bf16" else (lambda: torch.autocast(dev.type, enabled=False))
def step(i):
    images, toks = pool[i % len(pool)]
    images = images.to(dev, non_blocking=True)
    opt.zero_grad(set_to_none=True)
    with ac():
        out = model(images, toks)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
for i in range(warmup):
    step(i)
if dev.type == "cuda": torch.cuda.synchronize()
t0 = time.perf_counter()
for i in range(steps):
    step(i)
if dev.type == "cuda": torch.cuda.synchronize()
dt = time.perf_counter() - t0
print(json.dumps({"samples_per_s": steps * batch / dt, "step_ms": 1000 * dt / steps}))
"""


def measure_official(
    path: str, size: str, batch: int, steps: int, warmup: int, amp: str, caption_tokens: tuple[int, int]
) -> dict:
    """Official MERU at the same batch / precision / caption lengths, in a subprocess (its package is
    also called ``meru``). Our synthetic images are uint8 -> float on the device; theirs are float32 on
    the host, as their loader gives them."""
    if size not in OFFICIAL_ARCH:
        return {"error": f"no official architecture for size {size!r} (only {', '.join(OFFICIAL_ARCH)})"}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _OFFICIAL,
            str(Path(path).resolve()),
            OFFICIAL_ARCH[size],
            str(batch),
            str(steps),
            str(warmup),
            amp,
            str(caption_tokens[0]),
            str(caption_tokens[1]),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(Path(path).resolve()),
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", nargs="+", default=[PAPER, BASELINE], help="model kinds (any of meru.kinds.KINDS)")
    p.add_argument("--sizes", nargs="+", default=["vit-s16", "vit-b16", "vit-l16"] if gpu else ["tiny", "small-cpu"])
    p.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=None,
        help="per-device batch, one per size or one for all (default: 256 GPU / 128 CPU)",
    )
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--amp", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    p.add_argument("--compile", choices=("off", "on", "both"), default="both" if gpu else "off")
    p.add_argument("--compile-sizes", nargs="*", default=None, help="compile only these sizes (default: all)")
    p.add_argument("--caption-tokens", type=int, nargs=2, default=(10, 40), metavar=("LO", "HI"))
    p.add_argument("--data", default=None, help="shard directory: use the real TrainLoader instead of synthetic data")
    p.add_argument("--workers", type=int, default=4, help="TrainLoader workers with --data")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--official", default=None, help="path to a checkout of facebookresearch/meru (never committed)")
    p.add_argument("--note", default=None, help="machine note stored with the results (e.g. shared, niced)")
    p.add_argument("--out", default=None, help="default results/benchmarks/train-<device>.json")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if gpu else "cpu")
    amp_dtype = torch.bfloat16 if args.amp == "bf16" or (args.amp == "auto" and gpu) else None
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    batches = args.batch or [256 if gpu else 128]
    if len(batches) not in (1, len(args.sizes)):
        p.error(f"--batch takes one value or one per size ({len(args.sizes)})")
    batch_of = dict(zip(args.sizes, batches * len(args.sizes) if len(batches) == 1 else batches))
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    out = Path(args.out or REPO / "results" / "benchmarks" / f"train-{device_tag()}.json")
    result = {
        "benchmark": "train",
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "machine": machine(args.note),
        "rows": [],
        "ratios": [],
    }

    def save():
        result["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
        write_text(out, json.dumps(result, indent=1) + "\n")  # atomic: an interrupted run keeps the last rows

    def official_ratios():
        for row in result["rows"]:
            if row["kind"] != "official-meru" or "samples_per_s" not in row:
                continue
            ours = [
                r for r in result["rows"] if r["size"] == row["size"] and r["kind"] == PAPER and "samples_per_s" in r
            ]
            if ours:
                best = max(ours, key=lambda r: r["samples_per_s"])
                row["ours_over_official_samples_per_s"] = round(best["samples_per_s"] / row["samples_per_s"], 4)
                row["ours_compile"] = best["compile"]

    # eager rows (and the official model) for every size first, compiled rows last: compilation is the
    # slow part, so a run cut short by a time limit still has every size
    for comp in compiles:
        for size in args.sizes:
            if comp and args.compile_sizes is not None and size not in args.compile_sizes:
                continue
            for kind in args.kinds:
                t0 = time.perf_counter()
                try:
                    row = measure(
                        kind,
                        size,
                        batch_of[size],
                        args.steps,
                        args.warmup,
                        device,
                        amp_dtype,
                        comp,
                        tuple(args.caption_tokens),
                        args.data,
                        args.workers,
                    )
                except (ValueError, RuntimeError) as e:  # unknown kind, out of memory, compile failure
                    row = {
                        "kind": kind,
                        "size": size,
                        "batch": batch_of[size],
                        "compile": comp,
                        "error": str(e).splitlines()[0][:300],
                    }
                    if gpu:
                        torch.cuda.empty_cache()
                row["wall_s"] = round(time.perf_counter() - t0, 1)
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
                save()
            ok = {
                r["kind"]: r
                for r in result["rows"]
                if r["size"] == size and r.get("compile") == comp and "samples_per_s" in r
            }
            if PAPER in ok and BASELINE in ok:
                result["ratios"].append(
                    {
                        "size": size,
                        "compile": comp,
                        "meru_over_clip_step_time": round(ok[PAPER]["step_ms"] / ok[BASELINE]["step_ms"], 4),
                        "meru_over_clip_min_step_time": round(
                            ok[PAPER]["synced_step_ms_min"] / ok[BASELINE]["synced_step_ms_min"], 4
                        ),
                    }
                )
            if args.official and PAPER in args.kinds and comp == compiles[0]:
                amp = "bf16" if amp_dtype is not None else "fp32"
                t0 = time.perf_counter()
                off = measure_official(
                    args.official, size, batch_of[size], args.steps, args.warmup, amp, tuple(args.caption_tokens)
                )
                row = {
                    "kind": "official-meru",
                    "size": size,
                    "batch": batch_of[size],
                    "amp": amp,
                    **off,
                    "wall_s": round(time.perf_counter() - t0, 1),
                }
                result["rows"].append(row)
                official_ratios()
                print(json.dumps(row), flush=True)
                save()
            official_ratios()
    save()
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
