"""`meru train`: train CLIP, MERU or EuCLIP on shards (one CPU process, one GPU, or torchrun DDP).

Recipe (paper / official code): AdamW, no weight decay on 1-D parameters (norm gains, biases) and on
the scalars logit_scale, curv, visual_alpha, textual_alpha; linear warmup for ``w`` steps, then
half-cosine decay, lr(t) = lr * cos^2(pi/2 * (t - w) / (T - w)) = lr * (1 + cos(pi (t-w)/(T-w))) / 2.
The global batch is fixed: each of ``W`` ranks takes ``B / W`` samples per step, split into
``grad_accum`` micro-batches. Exact resume: model, optimiser, scheduler, GradScaler (fp16), RNG states and the loader's
stream position are saved atomically to RUNDIR/ckpt/last.pt.

Reads top to bottom: the pieces (schedule, parameter groups, RNG state, :func:`train_step`), the run directory
(resume checks, :class:`RunLock`, the skipped-sample budget), setup (:func:`select_device`,
:func:`init_distributed`, :func:`build_training_model`, :func:`build_loader`, :func:`wrap_model`), the
:class:`Checkpointer` (resume, save, refuse diverged weights), :class:`RunLog` (the one place a logging step's
record is emitted) and the loop itself (:func:`_train_locked`). One rank's failure under DDP ends every rank
(:mod:`meru.training.ddp`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml

from meru.config import ConfigError, load_tracking_config, load_train_config
from meru.io import write_text
from meru.kinds import model_options
from meru.models.checkpoints import save_torch
from meru.training.tracking import log_train
from meru.training.tracking import session as tracking_session
from meru.arguments import add_train_arguments as add_arguments  # noqa: F401  (light: fast --help)

NO_DECAY_NAMES = ("logit_scale", "curv", "visual_alpha", "textual_alpha")


# ------------------------------------------------------------------------------------------- pieces
def lr_multiplier(step: int, warmup: int, total: int) -> float:
    """Linear warmup ``step / warmup`` then half-cosine ``cos^2(pi/2 * (step - w) / (T - w))``, 0 at ``T``."""
    if step < warmup:
        return step / warmup
    if step >= total:
        return 0.0
    return math.cos(0.5 * math.pi * (step - warmup) / max(1, total - warmup)) ** 2


def param_groups(model: torch.nn.Module, weight_decay: float, decay_gains_biases: bool = False) -> list[dict]:
    """Two AdamW groups: decay for >=2-D weights, none for 1-D params and the MERU/CLIP scalars.

    ``decay_gains_biases=True``: the official code's behaviour (docs/DEVIATIONS.md): its optimizer factory reads
    ``gain_bias_decay or weight_decay`` and the configured 0.0 is falsy, so every tensor but the scalars decays."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scalar = name.split(".")[-1] in NO_DECAY_NAMES
        (no_decay if scalar or (p.ndim < 2 and not decay_gains_biases) else decay).append(p)
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


def base_model(model):
    """The model under ``torch.compile`` and DDP wrappers."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def train_step(
    model,
    loss_fn,
    micro_batches,
    optimizer,
    scheduler,
    grad_clip=None,
    amp_dtype=None,
    device_logs=False,
    scaler=None,
):
    """One optimiser step over ``micro_batches`` (list of (images, tokens)); returns (logs, finite).

    Loss per micro-batch is divided by the number of micro-batches, so gradients are the mean. Log
    values are summed on the device; the step's only host sync is the finite check before the
    optimiser step. ``device_logs=True`` returns them as 0-dim device tensors (read them with
    :func:`read_logs` when logging), else as floats.

    ``scaler`` (a ``torch.amp.GradScaler``, ``precision.amp = fp16``): the backward pass runs on
    ``scale * loss``; gradients are unscaled before clipping; a step whose gradients overflow is skipped
    by the scaler, which halves ``scale`` (logged as ``amp_scale``). That is fp16's normal working, not a
    failure: ``finite`` then speaks of the loss alone.
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
            (logs["loss"] / n if scaler is None else scaler.scale(logs["loss"] / n)).backward()
        for k, v in logs.items():
            v = _detached(v) / n
            sums[k] = sums[k] + v if k in sums else v
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.grad is not None]
    gnorm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else float("inf"))
    sums["grad_norm"] = gnorm.detach().float()
    if scaler is not None:
        finite = not bool(bad)  # the one host sync of the step
        if finite:
            scaler.step(optimizer)  # skipped by the scaler when a gradient overflowed
        scaler.update()
        sums["amp_scale"] = scaler.get_scale()
    else:
        finite = not bool(bad | ~torch.isfinite(gnorm))  # the one host sync of the step
        if finite:
            optimizer.step()
    after_step = getattr(base_model(model), "after_optimizer_step", None)  # e.g. EuCLIP's logit-scale floor
    if finite and after_step is not None:
        after_step()
    scheduler.step()
    return (sums if device_logs else read_logs(sums)), finite


# ------------------------------------------------------------------ run directory: lock, resume, logs
class RunDirLocked(RuntimeError):
    """Another ``meru train`` holds the run directory's lock."""


class ResumeConfigMismatch(ConfigError):
    """The config differs from the checkpoint's in keys that change the training trajectory."""


# Keys whose change alters the trajectory (model, data, batch, optimiser, schedule, seed) ...
TRAJECTORY_SECTIONS = ("model", "data", "optim", "precision")
TRAJECTORY_KEYS = ("runtime.seed", "runtime.compact_vocab")  # compact_vocab: the optimiser state's shape
# ... except where images are decoded: same samples, crops and order, pixels within a few grey levels
# (docs/PERFORMANCE.md); a resume may move between a GPU and a CPU host, and older checkpoints lack it;
# and the skipped-sample budget, which only decides whether the run stops.
NOT_TRAJECTORY = ("data.decode_device", "data.max_skipped_fraction", "model.name", "model.display")
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
    "precision.head",
    "data.augment",
    "data.sample_captions",
    "data.subreddit_prefix_prob",
    "data.subreddit_segmenter",
    "data.scale",
)
# Keys added after checkpoints were written: a checkpoint without one ran with this value (its old behaviour).
ADDED_KEYS = {
    "precision.head": "fp32",
    "data.subreddit_segmenter": "wordlist",
    "optim.decay_gains_biases": False,
    "model.learn_alpha": True,
    "model.logit_scale_floor": 0.0,  # an EuCLIP run saved before the floor existed resumes with it (the fix)
    "runtime.compact_vocab": False,
    "model.logit_scale_init": -1.0,
}


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
    a.update({k: v for k, v in ADDED_KEYS.items() if k not in a and k in b})
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


class RunLock:
    """Exclusive, non-blocking ``flock`` on the run directory itself and on ``RUNDIR/.lock`` (which names the
    holder's pid), held until :meth:`close` or the process's death. Deleting ``RUNDIR/.lock`` cannot let a
    second writer in: the directory's lock stays (where the file system supports ``flock`` on directories;
    elsewhere, e.g. NFS, the file lock alone); :meth:`refresh` re-creates a deleted or replaced ``.lock``."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.path, self._file = out, out / ".lock", None
        self._dir = os.open(out, os.O_RDONLY)
        try:
            self._lock_dir()
            self._file = self._lock_file()
        except BaseException:
            self.close()
            raise

    def _refused(self) -> RunDirLocked:
        try:
            holder = self.path.read_text().strip() or "?"
        except OSError:
            holder = "?"
        return RunDirLocked(
            f"{self.out}: another meru train (pid {holder}) is writing this run directory; "
            "wait for it to finish or use another --out"
        )

    def _lock_dir(self) -> None:
        import fcntl

        try:
            fcntl.flock(self._dir, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._refused() from None
        except OSError:  # no flock on directories here: the file lock alone
            pass

    def _lock_file(self):
        import fcntl

        f = open(self.path, "a+")  # noqa: SIM115 (held open for the whole run: the lock)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise self._refused() from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        return f

    def refresh(self) -> None:
        """Re-create ``RUNDIR/.lock`` (locked, with this pid) if it was deleted or replaced."""
        try:
            if os.path.samestat(os.stat(self.path), os.fstat(self._file.fileno())):
                return
        except FileNotFoundError:
            pass
        try:
            old, self._file = self._file, self._lock_file()
            old.close()
        except RunDirLocked:  # a refused writer holds the new file a moment: next time
            pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        os.close(self._dir)


def acquire_run_lock(out: Path) -> RunLock:
    """Lock the run directory (:class:`RunLock`); raise :class:`RunDirLocked` naming the holder's pid."""
    return RunLock(out)


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


class TooManySkipped(RuntimeError):
    """More training samples were skipped as corrupt than ``data.max_skipped_fraction`` allows."""


def check_skipped(skipped: int, used: int, cfg: dict, num_samples: int | None, rank: int, world: int) -> None:
    """Raise :class:`TooManySkipped` (one line) when this rank's skipped samples ``s`` exceed
    ``f * (u + s + N / W)``: ``f`` = ``data.max_skipped_fraction``, ``u`` the samples it used, ``N`` the
    dataset's samples (0 if unknown), ``W`` ranks. The ``N / W`` term allows a corrupt fraction ``f`` of the
    dataset from the first batch on (each epoch meets the same corrupt samples again, so ``s`` grows with
    ``u + s``, the samples read)."""
    f = cfg["data"]["max_skipped_fraction"]
    n = num_samples or 0
    if skipped > f * (used + skipped + n / world):
        raise TooManySkipped(
            f"{cfg['data']['train']}: rank {rank} skipped {skipped} corrupt samples of {used + skipped} read, more "
            f"than data.max_skipped_fraction = {f} allows ({f} x (samples read + {n / world:g} of the dataset's "
            f"{n})); the warnings above name the shards: re-create the dataset, or raise data.max_skipped_fraction"
        )


# ------------------------------------------------------------------------------------------- setup
def select_device(rt: dict, local_rank: int) -> torch.device:
    """The training device of ``runtime.device`` (``auto``: this rank's GPU, else the CPU); no TF32."""
    if rt["threads"]:
        torch.set_num_threads(rt["threads"])
    device = torch.device(
        (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu") if rt["device"] == "auto" else rt["device"]
    )
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def init_distributed(rank: int, world: int, device: torch.device) -> None:
    """Join the process group (NCCL on GPUs, gloo on CPUs) and watch for the other ranks' failures."""
    from meru.training.ddp import start_failure_watch

    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    start_failure_watch(rank, world)


def micro_batch_size(cfg: dict, world: int) -> int:
    """Samples per micro-batch: global ``B`` / ``W`` ranks / ``grad_accum``; refuse a ``B`` they do not divide."""
    B, accum = cfg["data"]["batch_size"], cfg["optim"]["grad_accum"]
    if B % (world * accum):
        raise ConfigError(
            f"data.batch_size = {B} is not divisible by world_size ({world}) x optim.grad_accum ({accum}); "
            f"choose a global batch that is a multiple of {world * accum}"
        )
    return B // world // accum


def autocast_dtype(amp: str, device: torch.device):
    """bf16 for ``precision.amp = bf16`` (or ``auto`` on a GPU), fp16 for ``fp16`` (the official code's), else
    None (fp32)."""
    if amp == "fp16":
        return torch.float16
    return torch.bfloat16 if (amp == "bf16" or (amp == "auto" and device.type == "cuda")) else None


def grad_scaler(amp_dtype, device: torch.device):
    """A ``torch.amp.GradScaler`` for fp16 autocast (as the official code), else None (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None


def build_training_model(cfg: dict, device: torch.device):
    """(model, AdamW, schedule): the model initialised from ``runtime.seed`` (same on every rank)."""
    from meru.models import build_model

    mc, oc, seed = cfg["model"], cfg["optim"], cfg["runtime"]["seed"]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # build_model passes each kind only the keyword arguments it takes (MERU: curvature)
    model = build_model(mc["kind"], mc["size"], **model_options(mc["kind"], mc)).to(device)
    if cfg["runtime"]["grad_checkpointing"]:
        for tower in (getattr(model, "visual", None), getattr(model, "text", None)):
            if hasattr(tower, "set_grad_checkpointing"):
                tower.set_grad_checkpointing(True)
    return (model, *build_optimizer(model, oc))


def build_optimizer(model, oc: dict):
    """(AdamW, schedule) over ``model``'s parameters for the ``optim`` section ``oc``."""
    # fused AdamW: one kernel over all tensors (on CPU ~20x faster than the per-tensor loop, which
    # matters because the 49408-row token embedding dominates the tiny models' parameter count)
    optimizer = torch.optim.AdamW(
        param_groups(model, oc["weight_decay"], oc["decay_gains_biases"]),
        lr=oc["lr"],
        betas=tuple(oc["betas"]),
        eps=oc["eps"],
        fused=True,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, oc["warmup_steps"], oc["total_steps"])
    )
    return optimizer, scheduler


def compact_vocabulary(cfg: dict, model, loader):
    """The :class:`meru.training.vocab.CompactVocab` of the captions ``loader`` can draw, applied to ``model``;
    a one-line ``ConfigError`` when the loader cannot list them (streaming data, subreddit prefixes)."""
    from meru.training.vocab import CompactVocab

    if cfg["precision"]["amp"] == "fp16":  # the GradScaler may skip a step: the rows' decay would be miscounted
        raise ConfigError(
            "runtime.compact_vocab: not with precision.amp: fp16; use bf16 or fp32, or runtime.compact_vocab: false"
        )
    try:
        texts = loader.caption_texts()
        vocab = CompactVocab.from_texts(texts, model.tokenize, model.text.token_embedding.num_embeddings)
    except (AttributeError, ValueError) as e:
        raise ConfigError(
            f"runtime.compact_vocab: needs a caption set it can list ({e}); set data.in_memory: true and "
            "data.subreddit_prefix_prob: 0, or runtime.compact_vocab: false"
        ) from None
    vocab.compact(model)
    return vocab


def build_loader(cfg: dict, model, device: torch.device, micro: int, rank: int, world: int):
    """This rank's :class:`meru.data.loader.TrainLoader` of ``data.train`` (uint8 images, trimmed tokens)."""
    from meru.data.captions import CaptionPolicy
    from meru.data.loader import TrainLoader

    dc = cfg["data"]
    return TrainLoader(
        dc["train"],
        micro,
        model.image_size,
        model.context_length,
        seed=cfg["runtime"]["seed"],
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


def wrap_model(model, rt: dict, world: int, device: torch.device):
    """The module the steps call: DDP over ``world`` ranks, compiled with ``runtime.compile``."""
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return torch.compile(model) if rt["compile"] else model


# ---------------------------------------------------------------------------- checkpoints and logs
@dataclass
class RunState:
    """Where the run is: optimiser steps taken, non-finite steps skipped, every log row so far."""

    step: int = 0
    nonfinite_skips: int = 0
    history: list[dict] = field(default_factory=list)


class Checkpointer:
    """``RUNDIR/ckpt/last.pt`` (exact resume: model, optimiser, schedule, every rank's loader and RNG state,
    step, log history, config) and ``RUNDIR/model.pt``. Rank 0 writes, atomically, and only weights that are
    finite and not exploded (:func:`meru.models.checkpoints.require_sane` against the initial scales)."""

    def __init__(
        self, out: Path, cfg: dict, model, optimizer, scheduler, loader, rank: int, world: int, scaler=None, vocab=None
    ):
        from meru.models.checkpoints import tensor_scales

        self.out, self.cfg, self.rank, self.world, self.scaler = out, cfg, rank, world, scaler
        self.vocab = vocab  # a CompactVocab: the model trains on part of its token table; files hold all of it
        self.model, self.optimizer, self.scheduler, self.loader = model, optimizer, scheduler, loader
        self.path = out / "ckpt" / "last.pt"
        self.initial = tensor_scales(model.state_dict())  # before any resume: the initial scales
        self.saved_step: int | None = None  # step of the checkpoint this run wrote or resumed from

    def resume(self, apply_changes: bool) -> RunState:
        """Load ``last.pt`` into model, optimiser, schedule, loader and RNG (refusing changed trajectory keys
        unless ``apply_changes``, :func:`check_resume_config`); a fresh state if there is none."""
        from meru.models.checkpoints import require_sane, safe_load

        if not self.path.exists():
            return RunState()
        state = safe_load(self.path, "cpu", "training checkpoint")
        require_sane(state["model"], self.initial, str(self.path))
        changes = check_resume_config(state.get("config") or {}, self.cfg, self.path, apply_changes)
        self.model.load_state_dict(self.vocab.compact_state(state["model"]) if self.vocab else state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):  # fp16: the loss scale and its growth counter
            self.scaler.load_state_dict(state["scaler"])
        own = lambda v: v[self.rank] if isinstance(v, list) else v  # noqa: E731 (per-rank lists; old: one dict)
        self.loader.load_state_dict(own(state["loader"]))
        set_rng_state(own(state["rng"]))
        run = RunState(state["step"], state.get("nonfinite_skips", 0))
        run.history = [r for r in state.get("history", []) if r.get("step", 0) <= run.step]
        if changes:
            apply_optim_config(self.optimizer, self.scheduler, self.cfg["optim"], run.step)
            changed = {k: {"old": a, "new": b} for k, (a, b) in changes.items()}
            run.history.append({"step": run.step, "event": "config_change", "changes": changed})
        self.saved_step = run.step
        return run

    def save(self, run: RunState) -> None:
        """All ranks contribute loader + RNG state (gathered), rank 0 checks the weights and writes."""
        local = {"loader": self.loader.state_dict(), "rng": rng_state()}
        gathered = [None] * self.world if self.world > 1 else [local]
        if self.world > 1:
            dist.all_gather_object(gathered, local)
        if self.rank == 0:
            self.check_weights(run.step, self.path)
            model_state = self.model.state_dict()
            state = {
                "model": self.vocab.full_state(model_state) if self.vocab else model_state,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": run.step,
                "nonfinite_skips": run.nonfinite_skips,
                "loader": [g["loader"] for g in gathered],
                "rng": [g["rng"] for g in gathered],
                "config": self.cfg,
                "history": run.history,
            }
            if self.scaler is not None:
                state["scaler"] = self.scaler.state_dict()
            save_torch(self.path, state)
        self.saved_step = run.step

    def save_final(self, run: RunState) -> Path:
        """Write ``RUNDIR/model.pt`` (rank 0; every rank waits for it) and return its path."""
        from meru.models.checkpoints import save_model

        final = self.out / "model.pt"
        if self.rank == 0:
            self.check_weights(run.step, final)
            if self.vocab is not None:  # training is over: the full table goes back into the model
                self.vocab.restore(self.model)
                self.vocab = None
            save_model(self.model, final, step=run.step, config=self.cfg, initial=self.initial)
        if self.world > 1:
            dist.barrier()
        return final

    def check_weights(self, step: int, target: Path) -> None:
        """Raise ``FloatingPointError`` (nothing written) if a weight or optimiser tensor is NaN/inf or a weight
        exploded (> 1e6 x its initial scale); the message says which checkpoint to resume from."""
        from meru.models.checkpoints import absurd_tensors, nonfinite_tensors

        opt = nonfinite_tensors(self.optimizer.state_dict()["state"], "optimizer")
        for what, bad in (
            ("non-finite weights", nonfinite_tensors(self.model.state_dict()) + opt),
            ("exploded weights (> 1e6 x initial scale)", absurd_tensors(self.model.state_dict(), self.initial)),
        ):
            if bad:
                raise FloatingPointError(
                    f"{what} after step {step} ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); "
                    f"{target} not written; {self.advice()}"
                )

    def advice(self) -> str:
        """Where to go on after a divergence: the last good checkpoint of this run, or a fresh start."""
        if self.saved_step is None:
            never = " and --resume never" if self.path.exists() else ""
            return f"this run has no good checkpoint to resume from yet: rerun with a lower optim.lr{never}"
        return (
            f"last good checkpoint kept at {self.path} (step {self.saved_step}); resume from it with a lower "
            "optim.lr (--set optim.lr=...) and --apply-config-changes"
        )


def nonfinite_step_error(run: RunState, rt: dict, logs: dict, ckpt: Checkpointer) -> FloatingPointError:
    """The error that stops the run at a NaN/inf step (``on_nonfinite: stop``, or too many skipped)."""
    if rt["on_nonfinite"] == "stop":
        why, other = "", ", or set runtime.on_nonfinite=skip"
    else:
        why = f" (more than runtime.max_nonfinite_skips = {rt['max_nonfinite_skips']} skipped)"
        other = ", or raise runtime.max_nonfinite_skips"
    return FloatingPointError(
        f"non-finite loss/gradient at step {run.step}{why} (loss={logs['loss']}, grad_norm={logs['grad_norm']}); "
        f"{ckpt.advice()}{other}"
    )


class RunLog:
    """The one place where a logging step's record is emitted: the row (values averaged over ranks, throughput,
    TFLOP/s, MFU) is appended to ``log.jsonl`` and the run's history, to TensorBoard and as a progress line
    (rank 0). Between logging steps it only counts samples and formula FLOPs."""

    def __init__(self, out: Path, cfg: dict, device, amp_dtype, run: RunState, rank: int, world: int, lock=None):
        from meru.progress import Progress
        from meru.training.flops import peak_flops

        self.out, self.cfg, self.device, self.rank, self.world, self.lock = out, cfg, device, rank, world, lock
        mc, rt = cfg["model"], cfg["runtime"]
        self.progress = Progress(
            f"meru train {mc['kind']}/{mc['size']}", cfg["optim"]["total_steps"], "steps", start=run.step
        )
        self.peak = peak_flops(device, amp_dtype)  # None on CPU / unlisted GPUs: TFLOP/s logged, MFU not
        self.flops_per_sample: dict[int, float] = {}  # text length -> training FLOPs per sample (formula)
        self.writer = None
        if rank == 0 and rt["tensorboard"]:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"), purge_step=run.step)
        self.reset()

    def reset(self) -> None:
        self.t0, self.samples, self.flops = time.perf_counter(), 0, 0

    def count(self, batches: list[dict]) -> None:
        """Account one step's micro-batches (samples of the global batch; FLOPs at each batch's text length)."""
        from meru.training.flops import train_flops_per_sample

        for b in batches:
            n_text = b["tokens"].shape[-1]
            if n_text not in self.flops_per_sample:
                self.flops_per_sample[n_text] = train_flops_per_sample(self.cfg["model"]["size"], n_text)
            self.flops += b["tokens"].shape[0] * self.flops_per_sample[n_text]
        self.samples += self.cfg["data"]["batch_size"]

    def due(self, step: int) -> bool:
        return step % self.cfg["runtime"]["log_every"] == 0 or step == self.cfg["optim"]["total_steps"]

    def row(self, run: RunState, logs: dict, lr: float, skipped: int) -> dict:
        """The step's log row; device values read (one sync) and averaged over ranks; NaN/inf -> None."""
        logs = read_logs(logs)
        if self.world > 1:  # average the per-rank (local-loss) values over ranks
            keys = sorted(logs)
            vec = torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=self.device)
            dist.all_reduce(vec)
            logs = dict(zip(keys, (vec / self.world).tolist()))
        dt = time.perf_counter() - self.t0
        row = {"step": run.step, "lr": lr, **logs, "skipped": skipped, "nonfinite_skips": run.nonfinite_skips}
        row["samples_per_s"] = self.samples / dt if dt > 0 else 0.0
        row["tflops_per_device"] = self.flops / dt / 1e12 if dt > 0 else 0.0
        if self.peak:  # model FLOPs utilisation of this rank's device (formula FLOPs at the batch's text length)
            row["mfu"] = self.flops / dt / self.peak if dt > 0 else 0.0
        return {k: (v if math.isfinite(v) else None) if isinstance(v, float) else v for k, v in row.items()}

    def emit(self, run: RunState, logs: dict, lr: float, skipped: int) -> None:
        """Record one logging step (every rank takes part in the averaging; rank 0 writes)."""
        row = self.row(run, logs, lr, skipped)
        if self.rank == 0:
            run.history.append(row)
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(row, allow_nan=False) + "\n")
            log_train(row)  # experiment trackers of the `tracking:` config section (meru.training.tracking)
            if self.writer:
                for k, v in row.items():
                    if isinstance(v, (int, float)) and k != "step":
                        self.writer.add_scalar(f"train/{k}", v, run.step)
            self.progress.done = run.step
            fields = [
                f"loss {row['loss']:.4f}" if row.get("loss") is not None else "loss nan",
                f"{row['samples_per_s']:,.0f} samples/s",
                f"{row['tflops_per_device']:.3g} TFLOP/s",
            ]
            if "mfu" in row:
                fields.append(f"MFU {100 * row['mfu']:.1f}%")
            self.progress.report(*fields)
            if self.lock is not None:
                self.lock.refresh()
        self.reset()

    def close(self) -> None:
        if self.writer:
            self.writer.close()


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
        return _train_locked(cfg, out, resume, loader, apply_config_changes, lock)
    finally:
        if lock is not None:
            lock.close()


def _train_locked(cfg: dict, out: Path, resume: str, loader, apply_config_changes: bool, lock) -> Path | None:
    """The training loop of :func:`train` (run directory already locked): setup, resume, then one optimiser
    step per global batch, logging and checkpointing on their schedules."""
    from meru.losses import build_loss
    from meru.training.ddp import stop_failure_watch

    rt, oc, mc = cfg["runtime"], cfg["optim"], cfg["model"]
    rank, world, local_rank = dist_env()
    device = select_device(rt, local_rank)
    init_distributed(rank, world, device)
    micro = micro_batch_size(cfg, world)
    amp_dtype = autocast_dtype(cfg["precision"]["amp"], device)
    scaler = grad_scaler(amp_dtype, device)
    model, optimizer, scheduler = build_training_model(cfg, device)
    model.head_precision = cfg["precision"]["head"]  # fp32, or the surrounding autocast (official code)
    loader = loader if loader is not None else build_loader(cfg, model, device, micro, rank, world)
    vocab = None
    if rt["compact_vocab"]:  # before the optimiser: it must hold the compact table
        vocab = compact_vocabulary(cfg, model, loader)
        optimizer, scheduler = build_optimizer(model, oc)
    ckpt = Checkpointer(out, cfg, model, optimizer, scheduler, loader, rank, world, scaler, vocab)
    run = ckpt.resume(apply_config_changes) if resume == "auto" else RunState()
    if rank == 0:  # log.jsonl = the checkpoint's history (drops rows after it; restores a deleted log)
        write_log(out / "log.jsonl", run.history)
        write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))  # the validated, merged config
    fwd_model = wrap_model(model, rt, world, device)
    loss_fn = build_loss(mc["kind"], entail_weight=mc["entail_weight"], rank=rank, world_size=world)
    loss_fn.head_precision = model.head_precision
    log = RunLog(out, cfg, device, amp_dtype, run, rank, world, lock)
    batches = iter(loader)
    while run.step < oc["total_steps"]:
        if rt["stop_after"] is not None and run.step >= rt["stop_after"]:
            ckpt.save(run)
            log.close()
            stop_failure_watch()
            return None
        micro_batches = [next(batches) for _ in range(oc["grad_accum"])]
        log.count(micro_batches)
        if vocab is not None:
            micro_batches = [{**b, "tokens": vocab.remap(b["tokens"])} for b in micro_batches]
        on_device = [to_device(b, device) for b in micro_batches]
        decay_lr = optimizer.param_groups[0]["lr"]  # this step's lr of the weight-decay group
        logs, finite = train_step(
            fwd_model,
            loss_fn,
            on_device,
            optimizer,
            scheduler,
            oc["grad_clip"],
            amp_dtype,
            device_logs=True,
            scaler=scaler,
        )
        run.step += 1
        if vocab is not None and finite:  # the rows outside the compact table: AdamW's decay only
            vocab.step(decay_lr, optimizer.param_groups[0]["weight_decay"])
        if not finite:
            run.nonfinite_skips += 1
            if rt["on_nonfinite"] == "stop" or run.nonfinite_skips > rt["max_nonfinite_skips"]:
                raise nonfinite_step_error(run, rt, read_logs(logs), ckpt)
        skipped = micro_batches[-1].get("skipped_total", 0)
        used = run.step * cfg["data"]["batch_size"] // world
        check_skipped(skipped, used, cfg, getattr(loader, "num_samples", None), rank, world)
        if log.due(run.step):
            log.emit(run, logs, scheduler.get_last_lr()[0], skipped)
        if run.step % rt["checkpoint_every"] == 0 or run.step == oc["total_steps"]:
            ckpt.save(run)
    log.close()
    final = ckpt.save_final(run)
    stop_failure_watch()  # every rank passed the final barrier
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
    if cfg["data"]["subreddit_segmenter"] == "wordsegment" and importlib.util.find_spec("wordsegment") is None:
        raise ConfigError(
            f"{source}: data.subreddit_segmenter = wordsegment needs the wordsegment package: pip install "
            "wordsegment==1.3.1 (or the [train] extra), or use wordlist"
        )
    dev = cfg["runtime"]["device"]
    if cfg["runtime"]["compile"] and not dev.startswith("cuda") and not torch.cuda.is_available():
        import shutil

        compiler = os.environ.get("CXX") or next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
        if compiler is None or shutil.which(compiler) is None:
            raise ConfigError(
                f"{source}: runtime.compile = true on the CPU needs a C++ compiler (torch inductor builds kernels): "
                "install g++ (apt-get install -y g++) or set runtime.compile: false"
            )
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{source}: runtime.device = {dev!r} but no CUDA device is available; use auto or cpu")
    if dev.startswith("cuda:") and int(dev[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"{source}: runtime.device = {dev!r} but only {torch.cuda.device_count()} CUDA device(s)")


def run(args: argparse.Namespace) -> int:
    from meru.data.manifest import IncompleteDatasetError
    from meru.models.checkpoints import CheckpointError
    from meru.training.ddp import announce_failure, end_failed_rank
    from meru.training.vocab import TokenOutsideVocab

    try:
        cfg = load_train_config(args.config, args.model, args.size, args.seed, args.set)
        preflight(cfg, str(args.config))
        trackers = load_tracking_config(args.tracking_config or args.config) if dist_env()[0] == 0 else None
        with tracking_session(trackers, Path(args.out).name):  # one tracked run per model and seed
            path = train(cfg, args.out, resume=args.resume, apply_config_changes=args.apply_config_changes)
    except (
        ConfigError,
        FloatingPointError,
        RunDirLocked,
        CheckpointError,
        IncompleteDatasetError,
        TooManySkipped,
        TokenOutsideVocab,
    ) as e:
        print(f"meru train: error: {announce_failure(str(e))[0]}", file=sys.stderr)
        end_failed_rank()  # under DDP: exit now (no collective cleanup with peers that are stopping)
        return 2
    except BaseException as e:  # a bug or a lost peer: the other ranks stop too (this one shows its traceback)
        line, own = announce_failure(f"{type(e).__name__}: {e}")
        if not own:  # this error is the consequence of a peer's failure: say which
            print(f"meru train: error: {line}", file=sys.stderr)
        end_failed_rank(traceback=own)
        raise
    if dist.is_initialized():
        dist.destroy_process_group()
    if path is not None and dist_env()[0] == 0:
        print(path)
    return 0
