"""Training faults (issue 22): exploded weights are never saved or loaded, a NaN stop names a checkpoint that
exists and resuming from it works, a deleted RUNDIR/.lock lets no second writer in, the skipped-sample budget,
and under DDP one rank's failure ends every rank within seconds."""

from __future__ import annotations

import io
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cli_helpers import nan_loss_at

from meru.config import ConfigError, load_config_file, load_train_config
from meru.data.shards import write_shards
from meru.models import build_model
from meru.models.checkpoints import AbsurdWeightsError, load_model, save_model
from meru.training.train import RunDirLocked, TooManySkipped, train

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(i).random((16, 16, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _samples(n: int, broken_every: int = 0):
    for i in range(n):
        sample = {"__key__": f"s{i:05d}", "txt": f"caption {i}"}
        if not (broken_every and i % broken_every == 0):
            sample["png"] = _png(i)  # without it the sample is skipped and counted
        yield sample


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "train"
    write_shards(_samples(64), out, "t", shard_size=32, source="test")
    return out


SETS = [
    "data.batch_size=8",
    "data.num_workers=0",
    "data.shuffle_buffer=16",
    "optim.warmup_steps=2",
    "optim.lr=1e-3",
    "runtime.log_every=1",
    "runtime.checkpoint_every=2",
    "runtime.tensorboard=false",
    "runtime.threads=1",
    "runtime.device=cpu",
    "precision.amp=fp32",
]


def _cfg(data, steps=6, sets=()):
    return load_train_config(
        None, "meru", "tiny", 0, [f"data.train={data}", f"optim.total_steps={steps}", *SETS, *sets]
    )


def _poison_step(monkeypatch, at_call: int, value: float):
    """The ``at_call``-th optimiser step sets the first weight to ``value`` (a finite step that explodes)."""
    import meru.training.train as tr

    real, calls = tr.train_step, [0]

    def poisoned(model, *a, **k):
        out = real(model, *a, **k)
        calls[0] += 1
        if calls[0] == at_call:
            with torch.no_grad():
                next(model.parameters()).fill_(value)
        return out

    monkeypatch.setattr(tr, "train_step", poisoned)


# ------------------------------------------------------------------------------------ exploded weights
def test_exploded_weights_are_not_checkpointed_and_the_kept_checkpoint_resumes(data, tmp_path, monkeypatch):
    _poison_step(monkeypatch, 4, 1e30)
    with pytest.raises(FloatingPointError) as err:
        train(_cfg(data), tmp_path)
    msg = str(err.value)
    assert "exploded" in msg and "after step 4" in msg and "(step 2)" in msg, msg
    kept = tmp_path / "ckpt" / "last.pt"
    assert str(kept) in msg and kept.exists() and not (tmp_path / "model.pt").exists()
    state = torch.load(kept, weights_only=True)
    assert state["step"] == 2 and max(float(v.abs().max()) for v in state["model"].values()) < 1e3
    monkeypatch.undo()
    train(_cfg(data, sets=["optim.lr=5e-4"]), tmp_path, apply_config_changes=True)  # the advice works
    assert (tmp_path / "model.pt").exists()


def test_save_model_and_load_model_refuse_exploded_weights(tmp_path):
    model = build_model("meru", "tiny")
    with torch.no_grad():
        model.text.token_embedding.weight[0, 0] = 2e7  # > 1e6 x its initial scale (~0.02, floor 1)
    with pytest.raises(AbsurdWeightsError, match=r"not written.*token_embedding.*2e\+07"):
        save_model(model, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    blob = {"format": "meru-bench/checkpoint/1", "kind": "meru", "size": "tiny", "model_kwargs": {}}
    torch.save({**blob, "state_dict": sd, "step": 1, "config": {}}, tmp_path / "x.pt")  # written by someone else
    with pytest.raises(AbsurdWeightsError, match=r"x\.pt: exploded weights in text\.token_embedding"):
        load_model(tmp_path / "x.pt")
    with torch.no_grad():
        model.text.token_embedding.weight[0, 0] = 9e5  # large but under the limit: saved and loaded
    save_model(model, tmp_path / "ok.pt")
    assert load_model(tmp_path / "ok.pt").text.token_embedding.weight[0, 0] == 9e5


# ------------------------------------------------------------------------------------------ NaN stop


def test_nan_stop_names_the_existing_checkpoint_and_resume_from_it_works(data, tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, {5})
    with pytest.raises(FloatingPointError) as err:
        train(_cfg(data), tmp_path)
    msg = str(err.value)
    kept = tmp_path / "ckpt" / "last.pt"
    assert f"{kept} (step 4)" in msg and "on_nonfinite=skip" in msg, msg
    assert torch.load(kept, weights_only=True)["step"] == 4
    monkeypatch.undo()
    train(_cfg(data, sets=["optim.lr=5e-4"]), tmp_path, apply_config_changes=True)
    rows = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "event" not in r] == [1, 2, 3, 4, 5, 6]


def test_nan_before_any_checkpoint_names_none_and_skip_advice_is_not_repeated(data, tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, {1})
    with pytest.raises(FloatingPointError) as err:
        train(_cfg(data), tmp_path / "a")
    msg = str(err.value)
    assert "no good checkpoint" in msg and "last.pt" not in msg, msg
    nan_loss_at(monkeypatch, {2, 3})  # skip mode, one skip allowed: the advice is not "set skip"
    with pytest.raises(FloatingPointError) as err:
        train(_cfg(data, sets=["runtime.on_nonfinite=skip", "runtime.max_nonfinite_skips=1"]), tmp_path / "b")
    msg = str(err.value)
    assert "max_nonfinite_skips = 1" in msg and "on_nonfinite=skip" not in msg, msg


# ------------------------------------------------------------------------------------------ run lock
HOLDER = """
import sys, time
from pathlib import Path
from meru.training.train import acquire_run_lock
lock = acquire_run_lock(Path(sys.argv[1]))
print("locked", flush=True)
for _ in range(1200):  # the running job re-creates a deleted .lock at its logging steps
    time.sleep(0.1)
    lock.refresh()
"""


def test_deleted_lock_file_lets_no_second_writer_in(data, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        (run / ".lock").unlink()
        with pytest.raises(RunDirLocked, match="another meru train"):
            train(_cfg(data, steps=2), run)
        assert not (run / "log.jsonl").exists() and not (run / "ckpt").exists()
        for _ in range(50):  # re-created by the holder, with its pid
            if (run / ".lock").exists() and (run / ".lock").read_text().strip() == str(holder.pid):
                break
            time.sleep(0.1)
        assert (run / ".lock").read_text().strip() == str(holder.pid)
    finally:
        holder.kill()
        holder.wait()
    train(_cfg(data, steps=2), run)  # released with the process
    assert (run / "model.pt").exists()


# ------------------------------------------------------------------------------------ skipped samples
def test_skipped_sample_budget(tmp_path):
    broken = tmp_path / "broken"
    write_shards(_samples(64, broken_every=4), broken, "t", shard_size=32, source="test")  # 16 of 64 lack an image
    with pytest.raises(TooManySkipped, match=r"max_skipped_fraction = 0\.01") as err:
        train(_cfg(broken, steps=4), tmp_path / "a")  # default budget: 1 %
    assert len(str(err.value).splitlines()) == 1
    train(_cfg(broken, steps=4, sets=["data.max_skipped_fraction=0.5"]), tmp_path / "b")
    rows = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["skipped"] > 0
    with pytest.raises(ConfigError, match="max_skipped_fraction"):
        _cfg(broken, sets=["data.max_skipped_fraction=2"])


# ------------------------------------------------------------------------------------------ DDP
WORKER = """
import os, sys
import meru.training.train as tr
real, calls, mode = tr.train_step, [0], sys.argv[1]
def step(model, *a, **k):
    out = real(model, *a, **k)
    calls[0] += 1
    rank = int(os.environ["RANK"])
    if mode == "explode" and rank == 0 and calls[0] == 4:  # rank 0's save at step 4 is refused
        import torch
        with torch.no_grad():
            next(model.parameters()).fill_(1e30)
    if mode == "raise" and rank == 1 and calls[0] == 3:
        raise FloatingPointError("injected failure")
    return out
tr.train_step = step
from meru.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("mode", "failed", "why"), [("explode", 0, "exploded weights"), ("raise", 1, "injected")])
def test_ddp_one_rank_failing_ends_both_within_seconds(data, tmp_path, mode, failed, why):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"runtime": {"checkpoint_every": 4}}))
    argv = ["train", "--config", str(cfg), "--model", "meru", "--size", "tiny", "--seed", "0"]
    argv += ["--out", str(tmp_path / "run"), "--set", f"data.train={data}", "--set", "optim.total_steps=40"]
    argv += [x for s in SETS if "checkpoint_every" not in s for x in ("--set", s)]
    base = {**os.environ, "PYTHONPATH": str(ROOT), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    base["MASTER_PORT"] = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, mode, *argv],
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    ended: dict[int, float] = {}
    deadline = time.monotonic() + 240
    while len(ended) < 2 and time.monotonic() < deadline:
        for r, p in enumerate(procs):
            if r not in ended and p.poll() is not None:
                ended[r] = time.monotonic()
        time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            p.kill()
    errs = [p.communicate()[1] for p in procs]
    assert len(ended) == 2, errs
    assert max(ended.values()) - min(ended.values()) < 10, (ended, errs)  # the other rank did not hang
    for r, p in enumerate(procs):
        lines = [x for x in errs[r].splitlines() if x.startswith("meru train: error:")]
        assert p.returncode == 2 and len(lines) == 1, (r, errs[r])
        assert f"rank {failed} of 2 failed" in lines[0] and why in lines[0], (r, lines)
        assert "Traceback" not in errs[r], errs[r]
    assert not (tmp_path / "run" / "model.pt").exists()


# ------------------------------------------------------------------------------------- config bases
def test_ablation_config_is_default_plus_its_differences():
    ablation, default = (
        load_config_file(ROOT / "configs" / "ablation.yaml"),
        load_config_file(ROOT / "configs" / "default.yaml"),
    )
    assert "base" not in ablation and ablation["models"] == ["meru", "clip", "euclip"]
    assert ablation["train"] == default["train"] and ablation["runs_dir"] == "runs-ablation"
    assert set(ablation["train_overrides"]) == {"meru", "clip", "euclip"}
    a = load_train_config(ROOT / "configs" / "ablation.yaml", "euclip", "tiny", 0)
    d = load_train_config(ROOT / "configs" / "default.yaml", "euclip", "tiny", 0)
    # the one difference: EuCLIP starts at CLIP's and MERU's temperature (docs/STUDIES.md), not the paper's -1
    assert a["model"].pop("logit_scale_init") == pytest.approx(math.log(1 / 0.07))
    assert d["model"].pop("logit_scale_init") == -1.0
    assert a == d


def test_bad_bases_are_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\n")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    (tmp_path / "d.yaml").write_text("base: [x]\n")
    (tmp_path / "e.yaml").write_text("base: f.yaml\ntrain: {optim: {lr: 0.1}}\n")
    (tmp_path / "f.yaml").write_text("train: {optim: {lr: 0.2, total_steps: 7, warmup_steps: 1}}\n")
    for name, needle in (("a", "cycle"), ("c", "not found"), ("d", "must name")):
        with pytest.raises(ConfigError, match=needle) as err:
            load_config_file(tmp_path / f"{name}.yaml")
        assert len(str(err.value).splitlines()) == 1
    cfg = load_train_config(tmp_path / "e.yaml", "clip", "tiny", 0)
    assert cfg["optim"]["lr"] == 0.1 and cfg["optim"]["total_steps"] == 7


def test_workflow_resolves_base_chains(tmp_path):
    """`snakemake --configfile X` with X -> configs/ablation.yaml -> configs/default.yaml plans X's runs."""
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(f"base: {ROOT / 'configs' / 'ablation.yaml'}\nname: mine\nseeds: [0]\n")  # each run its own name
    cmd = [sys.executable, "-m", "snakemake", "-n", "--nolock", "--configfile", str(cfg)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr + r.stdout
    counts = dict(line.split() for line in r.stdout.splitlines() if line.split()[:1] in (["train"], ["total"]))
    assert counts["train"] == "3", r.stdout  # meru, clip, euclip x seed 0
    cfg.write_text("base: nowhere.yaml\nname: mine\n")
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    errors = [x for x in r.stderr.splitlines() if x.startswith("config error:")]
    assert r.returncode == 1 and len(errors) == 1 and "nowhere.yaml" in errors[0], r.stderr
