"""Training loop: lr schedule, parameter groups, exact resume, DDP == single process, loss falls."""

import json
import math
import os
import random

import pytest
import torch

from meru.config import load_train_config
from meru.models import build_model
from meru.training.train import lr_multiplier, param_groups, train
from cli_helpers import nan_loss_at


@pytest.fixture(scope="module")
def synth(synthhier):
    return synthhier(300, 10) / "train"


def _cfg(data, kind="meru", steps=12, sets=()):
    base = [
        f"data.train={data}",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.shuffle_buffer=50",
        "optim.warmup_steps=3",
        f"optim.total_steps={steps}",
        "optim.lr=1e-3",
        "runtime.log_every=1",
        "runtime.checkpoint_every=5",
        "runtime.tensorboard=false",
        "runtime.threads=1",
    ]
    return load_train_config(None, kind, "tiny", 0, base + list(sets))


def test_lr_schedule_hand_values():
    w, T = 4, 12
    assert lr_multiplier(0, w, T) == 0 and lr_multiplier(2, w, T) == 0.5
    assert lr_multiplier(4, w, T) == 1.0  # warmup end
    assert lr_multiplier(8, w, T) == pytest.approx(0.5)  # cosine midpoint: cos^2(pi/4)
    assert lr_multiplier(10, w, T) == pytest.approx((1 - math.sqrt(0.5)) / 2)  # cos^2(3pi/8)
    assert lr_multiplier(12, w, T) == 0 and lr_multiplier(20, w, T) == 0


def test_param_groups_no_decay_on_scalars_and_1d():
    model = build_model("meru", "tiny")
    decay, no_decay = param_groups(model, 0.2)
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in ids}
    for n in ("logit_scale", "curv", "visual_alpha", "textual_alpha"):
        assert n in names
    for n, p in model.named_parameters():
        assert (id(p) in ids) == (p.ndim < 2 or n in ("logit_scale", "curv", "visual_alpha", "textual_alpha")), n
    assert len(decay["params"]) > 0 and all(p.ndim >= 2 for p in decay["params"])


def _losses(run):
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in rows]


def test_kill_and_resume_is_bit_identical(synth, tmp_path):
    torch.set_num_threads(1)
    full, part = tmp_path / "full", tmp_path / "part"
    train(_cfg(synth), full)
    k = random.Random(os.getpid()).randint(1, 11)
    assert train(_cfg(synth, sets=[f"runtime.stop_after={k}"]), part) is None
    assert not (part / "model.pt").exists()
    train(_cfg(synth), part)  # resume auto
    a = torch.load(full / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(part / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), (k, key)
    assert _losses(full) == _losses(part)
    assert torch.load(part / "model.pt", weights_only=True)["format"] == "meru-bench/checkpoint/1"


def _ddp_worker(rank, world, init_file, out_file):
    torch.set_num_threads(1)
    import torch.distributed as dist
    from meru.losses import build_loss
    from meru.training.train import train_step

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_model("meru", "tiny")
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(8, 3, model.image_size, model.image_size, generator=g)
    tokens = torch.randint(1, 100, (8, model.context_length), generator=g)
    n = 8 // world
    sl = slice(rank * n, (rank + 1) * n)
    opt = torch.optim.AdamW(param_groups(model, 0.2), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    logs, finite = train_step(ddp, build_loss("meru", 0.2, rank, world), [(images[sl], tokens[sl])], opt, sched)
    loss = torch.tensor(logs["loss"])
    dist.all_reduce(loss)
    if rank == 0:
        torch.save(
            {
                "loss": loss / world,
                "grads": {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None},
            },
            out_file,
        )
    dist.destroy_process_group()


def test_two_process_gloo_matches_single_process(tmp_path):
    torch.set_num_threads(1)
    import torch.multiprocessing as mp
    from meru.losses import build_loss
    from meru.training.train import train_step

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp.pt")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    torch.manual_seed(0)
    model = build_model("meru", "tiny")
    g = torch.Generator().manual_seed(1)
    images = torch.rand(8, 3, model.image_size, model.image_size, generator=g)
    tokens = torch.randint(1, 100, (8, model.context_length), generator=g)
    opt = torch.optim.AdamW(param_groups(model, 0.2), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    logs, _ = train_step(model, build_loss("meru", 0.2), [(images, tokens)], opt, sched)
    assert float(ddp["loss"]) == pytest.approx(logs["loss"], abs=1e-6)
    grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == ddp["grads"].keys()
    for k in grads:
        # 1e-6 relative to the gradient's scale (float32 sums in another order; grads here reach ~30)
        scale = max(1.0, grads[k].abs().max().item())
        torch.testing.assert_close(ddp["grads"][k], grads[k], atol=1e-6 * scale, rtol=0, msg=k)


@pytest.mark.parametrize("kind", ["clip", "meru"])
def test_tiny_model_learns(synth, tmp_path, kind):
    torch.set_num_threads(1)
    # full (most specific) captions, no augmentation: a 1-layer model learns this in a few hundred steps
    cfg = _cfg(
        synth,
        kind,
        steps=250,
        sets=[
            "data.batch_size=16",
            "runtime.log_every=10",
            "runtime.checkpoint_every=250",
            "optim.warmup_steps=10",
            "optim.lr=1e-3",
            "data.augment=false",
            "data.sample_captions=false",
        ],
    )
    train(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    first = rows[0]["contrastive_loss"]
    last = sum(r["contrastive_loss"] for r in rows[-3:]) / 3
    assert first > math.log(16) * 0.8 and last < 0.5 * first, (first, last)
    if kind == "meru":
        for r in rows:
            assert 0.1 - 1e-6 <= r["curv"] <= 10 + 1e-6
            assert 0 < r["visual_alpha"] <= 1 and 0 < r["textual_alpha"] <= 1


def test_nonfinite_stops_and_keeps_last_good_checkpoint(synth, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    nan_loss_at(monkeypatch, {7})
    with pytest.raises(FloatingPointError, match="step 7"):
        train(_cfg(synth), tmp_path)
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)["step"] == 5
    assert not (tmp_path / "model.pt").exists()


def test_nonfinite_skip_counts_and_leaves_params(synth, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    nan_loss_at(monkeypatch, {2, 4})
    train(_cfg(synth, steps=6, sets=["runtime.on_nonfinite=skip", "runtime.max_nonfinite_skips=2"]), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["nonfinite_skips"] for r in rows] == [0, 1, 1, 2, 2, 2]
    assert rows[1]["loss"] is None  # strict JSON: NaN written as null
