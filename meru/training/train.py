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

from meru.arguments import add_train_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru.config import ConfigError, load_train_config
from meru.io import write_text
from meru.models.checkpoints import save_torch

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
    """RNG states as tensors and plain types only (so the checkpoint loads with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(gauss),
    }
    s = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate(s["python"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _float(v) -> float:
    return float(v.detach()) if torch.is_tensor(v) else float(v)


def _detached(v) -> torch.Tensor:
    return v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))


def read_logs(logs: dict) -> dict[str, float]:
    """Device log values -> Python floats with one device-to-host copy (one sync)."""
    if not logs:
        return {}
    values = [_detached(v) for v in logs.values()]
    return dict(zip(logs, torch.stack([v.to(values[0].device) for v in values]).tolist()))


def to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, tokens) of a loader batch on ``device``; asynchronous when the loader pinned them.
    uint8 images stay uint8 (4x fewer bytes); the model scales and normalises them on the device."""
    return (batch["images"].to(device, non_blocking=True), batch["tokens"].to(device, non_blocking=True))


def _decode_device(setting: str, device: torch.device) -> str:
    """The loader's ``decode_device`` for ``data.decode_device``: ``auto`` decodes JPEGs on the training
    device when it is a GPU (batched ``decode_jpeg``), else in the loader workers."""
    if setting == "auto":
        return str(device) if device.type == "cuda" else "worker"
    return setting


def train_step(
    model,
    loss_fn,
    micro_batches,
    optimizer,
    scheduler,
    grad_clip=None,
    amp_dtype=None,
    on_nonfinite="stop",
    device_logs=False,
):
    """One optimiser step over ``micro_batches`` (list of (images, tokens)); returns (logs, finite).

    Loss per micro-batch is divided by the number of micro-batches, so gradients are the mean. Log
    values are summed on the device; the step's only host sync is the finite check before the
    optimiser step. ``device_logs=True`` returns them as 0-dim device tensors (read them with
    :func:`read_logs` when logging), else as floats.
    """
    optimizer.zero_grad(set_to_none=True)
    n = len(micro_batches)
    sums: dict[str, torch.Tensor] = {}
    bad = None
    for i, (images, tokens) in enumerate(micro_batches):
        sync = nullcontext() if i == n - 1 or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            ac = torch.autocast(images.device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
            with ac:
                out = model(images, tokens)
            logs = loss_fn(out)
            nonfinite = ~torch.isfinite(logs["loss"].detach())
            bad = nonfinite if bad is None else bad | nonfinite
            (logs["loss"] / n).backward()
        for k, v in logs.items():
            v = _detached(v) / n
            sums[k] = sums[k] + v if k in sums else v
    params = [p for p in model.parameters() if p.grad is not None]
    gnorm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else float("inf"))
    finite = not bool(bad | ~torch.isfinite(gnorm))  # the one host sync of the step
    sums["grad_norm"] = gnorm.detach().float()
    if finite:
        optimizer.step()
    scheduler.step()
    return (sums if device_logs else read_logs(sums)), finite


# ------------------------------------------------------------------ run directory: lock, resume, logs
class RunDirLocked(RuntimeError):
    """Another ``meru train`` holds the run directory's lock."""


class ResumeConfigMismatch(ConfigError):
    """The config differs from the checkpoint's in keys that change the training trajectory."""


# Keys whose change alters the trajectory (model, data, batch, optimiser, schedule, seed) ...
TRAJECTORY_SECTIONS = ("model", "data", "optim", "precision")
TRAJECTORY_KEYS = ("runtime.seed",)
# ... except where images are decoded: same samples, crops and order, pixels within a few grey levels
# (docs/PERFORMANCE.md); a resume may move between a GPU and a CPU host, and older checkpoints lack it.
NOT_TRAJECTORY = ("data.decode_device",)
# ... and those of them that a resume can apply (``--apply-config-changes``); the rest need a new run.
APPLICABLE_ON_RESUME = (
    "optim.lr",
    "optim.betas",
    "optim.eps",
    "optim.weight_decay",
    "optim.warmup_steps",
    "optim.total_steps",
    "optim.grad_clip",
    "model.entail_weight",
    "precision.amp",
    "data.augment",
    "data.sample_captions",
    "data.subreddit_prefix_prob",
    "data.scale",
)


def _flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def trajectory_changes(saved: dict, cfg: dict) -> dict[str, tuple]:
    """``{key: (checkpoint value, new value)}`` for every trajectory key that differs."""
    a, b = _flatten(saved), _flatten(cfg)
    keys = sorted(
        k
        for k in set(a) | set(b)
        if (k.split(".")[0] in TRAJECTORY_SECTIONS or k in TRAJECTORY_KEYS) and k not in NOT_TRAJECTORY
    )
    return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}


def check_resume_config(saved: dict, cfg: dict, ckpt_path: Path, apply_changes: bool) -> dict[str, tuple]:
    """Refuse (one line naming the keys) a resume whose config changes the trajectory, unless every
    change is applicable and ``apply_changes`` is set; returns the changes that will be applied."""
    changes = trajectory_changes(saved, cfg)
    if not changes:
        return {}
    shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
    fixed = [k for k in changes if k not in APPLICABLE_ON_RESUME]
    if fixed:
        raise ResumeConfigMismatch(
            f"{ckpt_path}: cannot resume, the config changes {', '.join(fixed)} ({shown}); these cannot change "
            "mid-run: restore them, use another --out, or start over with --resume never"
        )
    if not apply_changes:
        raise ResumeConfigMismatch(
            f"{ckpt_path}: cannot resume, the config changes {shown}; restore the old values, or pass "
            "--apply-config-changes to continue with the new ones (recorded in log.jsonl)"
        )
    return changes


def apply_optim_config(optimizer, scheduler, oc: dict, step: int) -> None:
    """After loading a checkpoint: set lr, betas, eps and weight decay of the new config (the loaded
    optimiser state keeps the old ones), so lr(t) = oc.lr * lr_multiplier(t) from ``step`` on."""
    for i, group in enumerate(optimizer.param_groups):
        group["initial_lr"] = oc["lr"]
        group["betas"], group["eps"] = tuple(oc["betas"]), oc["eps"]
        if i == 0:
            group["weight_decay"] = oc["weight_decay"]
        group["lr"] = oc["lr"] * lr_multiplier(step, oc["warmup_steps"], oc["total_steps"])
    scheduler.base_lrs = [oc["lr"]] * len(optimizer.param_groups)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def acquire_run_lock(out: Path):
    """Exclusive, non-blocking ``flock`` on ``RUNDIR/.lock`` (released when the file is closed or the
    process dies); raise :class:`RunDirLocked` naming the holder's pid."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    f = open(out / ".lock", "a+")  # noqa: SIM115 (held open for the whole run: the lock)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise RunDirLocked(
            f"{out}: another meru train (pid {holder}) is writing this run directory; "
            "wait for it to finish or use another --out"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def remove_stale_temp_files(out: Path) -> list[Path]:
    """Delete ``.NAME.tmp-PID`` files left in RUNDIR and RUNDIR/ckpt by killed runs (we hold the lock,
    so no live writer owns them)."""
    removed = []
    for d in (out, out / "ckpt"):
        for p in d.glob(".*.tmp-*") if d.is_dir() else ():
            if p.is_file():
                p.unlink()
                removed.append(p)
    return removed


def write_log(path: Path, rows: list[dict]) -> None:
    """Rewrite ``log.jsonl`` from ``rows`` (strict JSON lines), atomically."""
    write_text(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))


def check_finite_state(model, optimizer, step: int, target: Path, ckpt_path: Path) -> None:
    """Raise ``FloatingPointError`` (nothing written) if a weight or optimiser tensor is NaN/inf."""
    from meru.models.checkpoints import nonfinite_tensors

    bad = nonfinite_tensors(model.state_dict()) + nonfinite_tensors(optimizer.state_dict()["state"], "optimizer")
    if bad:
        raise FloatingPointError(
            f"non-finite weights after step {step} ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); "
            f"{target} not written; last good checkpoint kept at {ckpt_path}; resume from it with a lower "
            "optim.lr and --apply-config-changes"
        )


# --------------------------------------------------------------------------------------------- loop
def train(
    cfg: dict, out_dir: str | os.PathLike, resume: str = "auto", loader=None, apply_config_changes: bool = False
) -> Path | None:
    """Run the training described by ``cfg`` (from ``load_train_config``) in run directory ``out_dir``;
    returns RUNDIR/model.pt (or None when stopped early by ``runtime.stop_after``).

    Rank 0 holds an exclusive lock on the run directory for the whole run and first removes the temp
    files of killed runs. Resuming (``resume="auto"`` and RUNDIR/ckpt/last.pt exists) refuses a config
    that changes the trajectory unless ``apply_config_changes`` (see :func:`check_resume_config`)."""
    out = Path(out_dir)
    lock = acquire_run_lock(out) if dist_env()[0] == 0 else None
    try:
        if lock is not None:
            remove_stale_temp_files(out)
        return _train_locked(cfg, out, resume, loader, apply_config_changes)
    finally:
        if lock is not None:
            lock.close()


def _train_locked(
    cfg: dict, out_dir: Path, resume: str = "auto", loader=None, apply_config_changes: bool = False
) -> Path | None:
    """The training loop of :func:`train` (run directory already locked)."""
    from meru.losses import build_loss
    from meru.models import build_model

    out = out_dir
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
        raise ConfigError(
            f"data.batch_size = {B} is not divisible by world_size ({world}) x optim.grad_accum ({accum}); "
            f"choose a global batch that is a multiple of {world * accum}"
        )
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
    optimizer = torch.optim.AdamW(
        param_groups(model, oc["weight_decay"]), lr=oc["lr"], betas=tuple(oc["betas"]), eps=oc["eps"], fused=True
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, oc["warmup_steps"], oc["total_steps"])
    )
    if loader is None:
        from meru.data.captions import CaptionPolicy
        from meru.data.loader import TrainLoader

        loader = TrainLoader(
            dc["train"],
            micro,
            model.image_size,
            model.context_length,
            seed=seed,
            rank=rank,
            world_size=world,
            num_workers=dc["num_workers"],
            shuffle_buffer=dc["shuffle_buffer"],
            augment=dc["augment"],
            scale=tuple(dc["scale"]),
            captions=CaptionPolicy.from_config(dc),
            in_memory=dc["in_memory"],
            image_dtype="uint8",
            trim_tokens=True,
            pin_memory=device.type == "cuda",
            decode_device=_decode_device(dc["decode_device"], device),
        )

    step, nonfinite_skips = 0, 0
    ckpt_path = out / "ckpt" / "last.pt"
    history: list[dict] = []  # every log row up to the current step (kept in the checkpoint)
    if resume == "auto" and ckpt_path.exists():
        from meru.models.checkpoints import require_finite, safe_load

        state = safe_load(ckpt_path, "cpu", "training checkpoint")
        require_finite(state["model"], str(ckpt_path))
        changes = check_resume_config(state.get("config") or {}, cfg, ckpt_path, apply_config_changes)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"][rank] if isinstance(state["loader"], list) else state["loader"])
        set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"])
        step, nonfinite_skips = state["step"], state.get("nonfinite_skips", 0)
        history = [r for r in state.get("history", []) if r.get("step", 0) <= step]
        if changes:
            apply_optim_config(optimizer, scheduler, oc, step)
            history.append(
                {
                    "step": step,
                    "event": "config_change",
                    "changes": {k: {"old": a, "new": b} for k, (a, b) in changes.items()},
                }
            )
    if rank == 0:  # log.jsonl = the checkpoint's history (drops rows after it; restores a deleted log)
        write_log(out / "log.jsonl", history)

    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    fwd_model = torch.compile(ddp_model) if rt["compile"] else ddp_model
    loss_fn = build_loss(mc["kind"], entail_weight=mc["entail_weight"], rank=rank, world_size=world)

    writer = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
        if rt["tensorboard"]:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"), purge_step=step)
    from meru.progress import Progress
    from meru.training.flops import peak_flops, train_flops_per_sample

    progress = Progress(f"meru train {mc['kind']}/{mc['size']}", oc["total_steps"], "steps", start=step)
    peak = peak_flops(device, amp_dtype)  # None on CPU / unlisted GPUs: TFLOP/s logged, MFU not
    flops_per_sample = {}  # text length -> training FLOPs per sample (formula, meru.training.flops)

    def save_state():
        """All ranks contribute loader + RNG state (gathered), rank 0 writes."""
        local = {"loader": loader.state_dict(), "rng": rng_state()}
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, local)
        else:
            gathered = [local]
        if rank == 0:
            check_finite_state(model, optimizer, step, ckpt_path, ckpt_path)
            save_torch(
                ckpt_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "nonfinite_skips": nonfinite_skips,
                    "loader": [g["loader"] for g in gathered],
                    "rng": [g["rng"] for g in gathered],
                    "config": cfg,
                    "history": history,
                },
            )

    it = iter(loader)
    t0, samples, flops = time.perf_counter(), 0, 0
    while step < oc["total_steps"]:
        if rt["stop_after"] is not None and step >= rt["stop_after"]:
            save_state()
            return None
        micro_batches, skipped = [], 0
        for _ in range(accum):
            b = next(it)
            micro_batches.append(to_device(b, device))
            skipped = b.get("skipped_total", 0)
            n_text = b["tokens"].shape[-1]
            if n_text not in flops_per_sample:
                flops_per_sample[n_text] = train_flops_per_sample(mc["size"], n_text)
            flops += b["tokens"].shape[0] * flops_per_sample[n_text]
        logs, finite = train_step(
            fwd_model, loss_fn, micro_batches, optimizer, scheduler, oc["grad_clip"], amp_dtype, device_logs=True
        )
        step += 1
        samples += B
        if not finite:
            nonfinite_skips += 1
            if rt["on_nonfinite"] == "stop" or nonfinite_skips > rt["max_nonfinite_skips"]:
                logs = read_logs(logs)
                raise FloatingPointError(
                    f"non-finite loss/gradient at step {step} (loss={logs['loss']}, grad_norm={logs['grad_norm']}); "
                    f"last good checkpoint kept at {ckpt_path}; resume from it with a lower optim.lr and "
                    "--apply-config-changes, or set runtime.on_nonfinite=skip"
                )
        if step % rt["log_every"] == 0 or step == oc["total_steps"]:
            logs = read_logs(logs)  # the step's values, read from the device only at logging steps
            if world > 1:  # average the per-rank (local-loss) values over ranks
                keys = sorted(logs)
                vec = torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=device)
                dist.all_reduce(vec)
                logs = dict(zip(keys, (vec / world).tolist()))
            dt = time.perf_counter() - t0
            row = {
                "step": step,
                "lr": scheduler.get_last_lr()[0],
                **logs,
                "skipped": skipped,
                "nonfinite_skips": nonfinite_skips,
                "samples_per_s": samples / dt if dt > 0 else 0.0,
                "tflops_per_device": flops / dt / 1e12 if dt > 0 else 0.0,
            }
            if peak:  # model FLOPs utilisation of this rank's device (formula FLOPs at the batch's text length)
                row["mfu"] = flops / dt / peak if dt > 0 else 0.0
            row = {k: (v if math.isfinite(v) else None) if isinstance(v, float) else v for k, v in row.items()}
            if rank == 0:
                history.append(row)
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(row, allow_nan=False) + "\n")
                if writer:
                    for k, v in row.items():
                        if isinstance(v, (int, float)) and k != "step":
                            writer.add_scalar(f"train/{k}", v, step)
                progress.done = step
                fields = [
                    f"loss {row['loss']:.4f}" if row.get("loss") is not None else "loss nan",
                    f"{row['samples_per_s']:,.0f} samples/s",
                    f"{row['tflops_per_device']:.3g} TFLOP/s",
                ]
                if "mfu" in row:
                    fields.append(f"MFU {100 * row['mfu']:.1f}%")
                progress.report(*fields)
            t0, samples, flops = time.perf_counter(), 0, 0
        if step % rt["checkpoint_every"] == 0 or step == oc["total_steps"]:
            save_state()
    if writer:
        writer.close()
    final = out / "model.pt"
    if rank == 0:
        from meru.models.checkpoints import save_model

        check_finite_state(model, optimizer, step, final, ckpt_path)
        save_model(model, final, step=step, config=cfg)
    if world > 1:
        dist.barrier()
    return final


# ---------------------------------------------------------------------------------------------- CLI
def preflight(cfg: dict, source: str) -> None:
    """Checks that need the file system or the machine, before any model is built (one-line ConfigError)."""
    from meru.data.loader import resolve_shards
    from meru.data.manifest import IncompleteDatasetError

    train_data = cfg["data"]["train"]
    try:
        resolve_shards(train_data)
    except (IncompleteDatasetError, FileNotFoundError, ValueError) as e:
        raise ConfigError(f"{source}: data.train = {train_data!r}: {e}") from None
    dev = cfg["runtime"]["device"]
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{source}: runtime.device = {dev!r} but no CUDA device is available; use auto or cpu")
    if dev.startswith("cuda:") and int(dev[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"{source}: runtime.device = {dev!r} but only {torch.cuda.device_count()} CUDA device(s)")


def run(args: argparse.Namespace) -> int:
    from meru.data.manifest import IncompleteDatasetError
    from meru.models.checkpoints import CheckpointError

    try:
        cfg = load_train_config(args.config, args.model, args.size, args.seed, args.set)
        preflight(cfg, str(args.config))
        path = train(cfg, args.out, resume=args.resume, apply_config_changes=args.apply_config_changes)
    except (ConfigError, FloatingPointError, RunDirLocked, CheckpointError, IncompleteDatasetError) as e:
        print(f"meru train: error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if path is not None and dist_env()[0] == 0:
        print(path)
    return 0
