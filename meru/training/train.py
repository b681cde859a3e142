"""`meru train`: train CLIP, MERU or EuCLIP on shards (one CPU process, one GPU, or torchrun DDP).

Recipe (paper / official code): AdamW, no weight decay on 1-D parameters (norm gains, biases) and on
the scalars logit_scale, curv, visual_alpha, textual_alpha; linear warmup for ``w`` steps, then
half-cosine decay, lr(t) = lr * cos^2(pi/2 * (t - w) / (T - w)) = lr * (1 + cos(pi (t-w)/(T-w))) / 2.
The global batch is fixed: each of ``W`` ranks takes ``B / W`` samples per step, split into
``grad_accum`` micro-batches. Exact resume: model, optimiser, scheduler, RNG states and the loader's
stream position are saved atomically to RUNDIR/ckpt/last.pt.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml

from meru.config import ConfigError, load_train_config

# bf16 dense peak FLOP/s (no sparsity), for MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "V100": 125e12}
NO_DECAY_NAMES = ("logit_scale", "curv", "visual_alpha", "textual_alpha")


# ------------------------------------------------------------------------------------------- pieces
def lr_multiplier(step: int, warmup: int, total: int) -> float:
    """Linear warmup ``step / warmup`` then half-cosine ``cos^2(pi/2 * (step - w) / (T - w))``, 0 at ``T``."""
    if step < warmup:
        return step / warmup
    if step >= total:
        return 0.0
    return math.cos(0.5 * math.pi * (step - warmup) / max(1, total - warmup)) ** 2


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decay for >=2-D weights, none for 1-D params and the MERU/CLIP scalars."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.split(".")[-1] in NO_DECAY_NAMES else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment variables."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def rng_state() -> dict:
    s = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _float(v) -> float:
    return float(v.detach()) if torch.is_tensor(v) else float(v)


def train_step(model, loss_fn, micro_batches, optimizer, scheduler, grad_clip=None, amp_dtype=None,
               on_nonfinite="stop"):
    """One optimiser step over ``micro_batches`` (list of (images, tokens)); returns (logs, finite).

    Loss per micro-batch is divided by the number of micro-batches, so gradients are the mean.
    """
    optimizer.zero_grad(set_to_none=True)
    n = len(micro_batches)
    sums: dict[str, float] = {}
    finite = True
    for i, (images, tokens) in enumerate(micro_batches):
        sync = nullcontext() if i == n - 1 or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            ac = torch.autocast(images.device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
            with ac:
                out = model(images, tokens)
            logs = loss_fn(out)
            if not torch.isfinite(logs["loss"]):
                finite = False
            (logs["loss"] / n).backward()
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + _float(v) / n
    params = [p for p in model.parameters() if p.grad is not None]
    gnorm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else float("inf"))
    if not torch.isfinite(gnorm):
        finite = False
    sums["grad_norm"] = _float(gnorm)
    if finite:
        optimizer.step()
    scheduler.step()
    return sums, finite


# --------------------------------------------------------------------------------------------- loop
def train(cfg: dict, out_dir: str | os.PathLike, resume: str = "auto", loader=None) -> Path | None:
    """Run the training described by ``cfg`` (from ``load_train_config``); returns RUNDIR/model.pt
    (or None when stopped early by ``runtime.stop_after``)."""
    from meru.losses import build_loss
    from meru.models import build_model

    out = Path(out_dir)
    rt, oc, dc, mc = cfg["runtime"], cfg["optim"], cfg["data"], cfg["model"]
    rank, world, local_rank = dist_env()
    if rt["threads"]:
        torch.set_num_threads(rt["threads"])
    dev = rt["device"]
    if dev == "auto":
        dev = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(dev)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    B, accum = dc["batch_size"], oc["grad_accum"]
    if B % (world * accum):
        raise ConfigError(f"data.batch_size = {B} is not divisible by world_size ({world}) x optim.grad_accum ({accum}); "
                          f"choose a global batch that is a multiple of {world * accum}")
    micro = B // world // accum
    amp = cfg["precision"]["amp"]
    amp_dtype = torch.bfloat16 if (amp == "bf16" or (amp == "auto" and device.type == "cuda")) else None

    seed = rt["seed"]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # same init on every rank
    # build_model passes each kind only the keyword arguments it takes (MERU: curvature)
    model = build_model(mc["kind"], mc["size"], curv_init=mc["curv_init"], learn_curv=mc["learn_curv"]).to(device)
    if rt["grad_checkpointing"]:
        for tower in (getattr(model, "visual", None), getattr(model, "text", None)):
            if hasattr(tower, "set_grad_checkpointing"):
                tower.set_grad_checkpointing(True)
    # fused AdamW: one kernel over all tensors (on CPU ~20x faster than the per-tensor loop, which
    # matters because the 49408-row token embedding dominates the tiny models' parameter count)
    optimizer = torch.optim.AdamW(param_groups(model, oc["weight_decay"]), lr=oc["lr"],
                                  betas=tuple(oc["betas"]), eps=oc["eps"], fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, oc["warmup_steps"], oc["total_steps"]))
    if loader is None:
        from meru.data.loader import TrainLoader
        loader = TrainLoader(dc["train"], micro, model.image_size, model.context_length, seed=seed, rank=rank,
                             world_size=world, num_workers=dc["num_workers"], shuffle_buffer=dc["shuffle_buffer"],
                             augment=dc["augment"], scale=tuple(dc["scale"]), sample_captions=dc["sample_captions"],
                             subreddit_prefix_prob=dc["subreddit_prefix_prob"])

    step, nonfinite_skips = 0, 0
    ckpt_path = out / "ckpt" / "last.pt"
    if resume == "auto" and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"][rank] if isinstance(state["loader"], list) else state["loader"])
        set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"])
        step, nonfinite_skips = state["step"], state.get("nonfinite_skips", 0)
    elif resume == "never" and rank == 0 and (out / "log.jsonl").exists():
        (out / "log.jsonl").unlink()

    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    fwd_model = torch.compile(ddp_model) if rt["compile"] else ddp_model
    loss_fn = build_loss(mc["kind"], entail_weight=mc["entail_weight"], rank=rank, world_size=world)

    writer = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
        if rt["tensorboard"]:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(out / "tb"), purge_step=step)
    bar = None
    if rank == 0 and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=oc["total_steps"], initial=step, desc=f"train {mc['kind']}-{mc['size']}")

    n_params = sum(p.numel() for p in model.parameters())
    peak = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)

    def save_state():
        """All ranks contribute loader + RNG state (gathered), rank 0 writes."""
        local = {"loader": loader.state_dict(), "rng": rng_state()}
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, local)
        else:
            gathered = [local]
        if rank == 0:
            atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "step": step, "nonfinite_skips": nonfinite_skips,
                         "loader": [g["loader"] for g in gathered], "rng": [g["rng"] for g in gathered],
                         "config": cfg}, ckpt_path)

    it = iter(loader)
    t0, samples = time.perf_counter(), 0
    while step < oc["total_steps"]:
        if rt["stop_after"] is not None and step >= rt["stop_after"]:
            save_state()
            return None
        micro_batches, skipped = [], 0
        for _ in range(accum):
            b = next(it)
            micro_batches.append((b["images"].to(device, non_blocking=True), b["tokens"].to(device, non_blocking=True)))
            skipped = b.get("skipped_total", 0)
        logs, finite = train_step(fwd_model, loss_fn, micro_batches, optimizer, scheduler, oc["grad_clip"], amp_dtype)
        step += 1
        samples += B
        if not finite:
            nonfinite_skips += 1
            if rt["on_nonfinite"] == "stop" or nonfinite_skips > rt["max_nonfinite_skips"]:
                raise FloatingPointError(
                    f"non-finite loss/gradient at step {step} (loss={logs['loss']}, grad_norm={logs['grad_norm']}); "
                    f"last good checkpoint kept at {ckpt_path}; lower optim.lr or set runtime.on_nonfinite=skip")
        if step % rt["log_every"] == 0 or step == oc["total_steps"]:
            if world > 1:  # average the per-rank (local-loss) values over ranks
                keys = sorted(logs)
                vec = torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=device)
                dist.all_reduce(vec)
                logs = dict(zip(keys, (vec / world).tolist()))
            dt = time.perf_counter() - t0
            row = {"step": step, "lr": scheduler.get_last_lr()[0], **logs, "skipped": skipped,
                   "nonfinite_skips": nonfinite_skips, "samples_per_s": samples / dt if dt > 0 else 0.0}
            if peak:
                row["mfu"] = 6 * n_params * samples / dt / (peak * world)
            row = {k: (v if math.isfinite(v) else None) if isinstance(v, float) else v for k, v in row.items()}
            if rank == 0:
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(row, allow_nan=False) + "\n")
                if writer:
                    for k, v in row.items():
                        if isinstance(v, (int, float)) and k != "step":
                            writer.add_scalar(f"train/{k}", v, step)
            t0, samples = time.perf_counter(), 0
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.3f}")
        if step % rt["checkpoint_every"] == 0 or step == oc["total_steps"]:
            save_state()
    if bar:
        bar.close()
    if writer:
        writer.close()
    final = out / "model.pt"
    if rank == 0:
        from meru.models.checkpoints import save_model
        save_model(model, final, step=step, config=cfg)
    if world > 1:
        dist.barrier()
    return final


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="train YAML or workflow YAML (train: + train_overrides:)")
    parser.add_argument("--model", choices=["meru", "clip", "euclip"], required=True)
    parser.add_argument("--size", required=True, help="registered model size (see `meru info`)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.SUB=VALUE", help="override a config key")
    parser.add_argument("--resume", choices=["auto", "never"], default="auto")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_train_config(args.config, args.model, args.size, args.seed, args.set)
        path = train(cfg, args.out, resume=args.resume)
    except (ConfigError, FloatingPointError) as e:
        print(f"meru train: error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if path is not None and dist_env()[0] == 0:
        print(path)
    return 0
