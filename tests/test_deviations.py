"""Switches for the deviations from the official MERU code (docs/DEVIATIONS.md): fp16 with a GradScaler and the
head under autocast (``precision``), wordsegment's subreddit split (``data.subreddit_segmenter``), and the
linear probe's validation split (``evaluation.linear_probe_val``). The defaults keep the project's behaviour."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from meru.config import DEFAULTS, ConfigError, check_workflow_config, load_config_file, load_train_config
from meru.data.captions import CaptionPolicy, apply_subreddit_prefix, subreddit_words
from meru.data.shards import write_shards
from meru.evaluation import linear_probe as lp
from meru.models import build_model, fp32_head
from meru.losses import build_loss
from meru.records import EmbeddingCache
from meru.spaces import get_space
from meru.training import train as tr

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------- defaults and schema
def test_defaults_are_the_projects_behaviour():
    assert DEFAULTS["precision"] == {"amp": "auto", "head": "fp32"}
    assert DEFAULTS["data"]["subreddit_segmenter"] == "wordlist"
    assert build_model("meru", "tiny").head_precision == "fp32" and build_loss("meru").head_precision == "fp32"


@pytest.mark.parametrize(
    "key, value",
    [("precision.amp", "fp8"), ("precision.head", "fp16"), ("data.subreddit_segmenter", "wordninja")],
)
def test_bad_switch_values_are_one_line_errors(key, value):
    with pytest.raises(ConfigError) as err:
        load_train_config(None, "meru", "tiny", 0, [f"{key}={value}"])
    msg = str(err.value)
    assert "\n" not in msg and key in msg and value in msg, msg


def test_paper_config_sets_every_switch_explicitly():
    cfg = load_config_file(ROOT / "configs" / "paper.yaml")
    assert cfg["train"]["precision"] == {"amp": "fp16", "head": "autocast"}
    assert cfg["train"]["data"]["subreddit_segmenter"] == "wordsegment"
    assert cfg["evaluation"]["linear_probe_val"] == "slice"
    lines = (ROOT / "configs" / "paper.yaml").read_text().splitlines()
    for key, number in (("amp: fp16", 2), ("subreddit_segmenter: wordsegment", 3), ("linear_probe_val: slice", 4)):
        at = next(i for i, line in enumerate(lines) if key in line)
        said = "\n".join(lines[max(0, at - 3) : at])
        assert f"# Deviation {number} (docs/DEVIATIONS.md)" in said, f"configs/paper.yaml: {key} has no comment why"


# ------------------------------------------------------------------------------------ mixed precision
def test_fp16_gets_a_grad_scaler_and_bf16_none():
    cpu = torch.device("cpu")
    assert tr.autocast_dtype("fp16", cpu) is torch.float16
    assert tr.autocast_dtype("bf16", cpu) is torch.bfloat16 and tr.autocast_dtype("auto", cpu) is None
    assert isinstance(tr.grad_scaler(torch.float16, cpu), torch.amp.GradScaler)
    assert tr.grad_scaler(torch.bfloat16, cpu) is None and tr.grad_scaler(None, cpu) is None


class _Tiny(torch.nn.Module):
    """Two linear towers, CLIP's loss inputs; ``poison`` makes the loss non-finite."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.0))
        self.poison = False

    def forward(self, x, y):
        image = torch.nn.functional.normalize(self.a(x), dim=-1)
        if self.poison:
            image = image * float("nan")
        return {
            "image": image,
            "text": torch.nn.functional.normalize(self.b(y), dim=-1),
            "logit_scale": self.logit_scale.exp(),
        }


def _step(model, scaler):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    g = torch.Generator().manual_seed(1)
    batch = [(torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g))]
    before = [p.detach().clone() for p in model.parameters()]
    logs, finite = tr.train_step(model, build_loss("clip"), batch, opt, sched, None, torch.float16, scaler=scaler)
    moved = any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    return logs, finite, moved


def test_grad_scaler_steps_and_logs_its_scale():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    logs, finite, moved = _step(_Tiny(), scaler)
    assert finite and moved and logs["amp_scale"] == 1024.0 and np.isfinite(logs["grad_norm"])
    # the unscaled gradient norm equals the fp32-scaler-free step's (same batch, same model)
    plain, _, _ = _step(_Tiny(), None)
    assert logs["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-5)


def test_overflowing_gradients_skip_the_step_and_halve_the_scale_without_failing():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # scale x loss overflows float32 gradients
    logs, finite, moved = _step(_Tiny(), scaler)
    assert finite, "an fp16 overflow is the scaler's business, not a non-finite step"
    assert not moved and scaler.get_scale() == 2.0**126 and logs["amp_scale"] == 2.0**126


def test_a_nonfinite_loss_is_still_a_nonfinite_step_under_the_scaler():
    model = _Tiny()
    model.poison = True
    logs, finite, moved = _step(model, torch.amp.GradScaler("cpu", init_scale=1024.0))
    assert not finite and not moved


def _meru_loss(head: str, amp):
    torch.manual_seed(0)
    model = build_model("meru", "tiny")
    loss_fn = build_loss("meru")
    model.head_precision = loss_fn.head_precision = head
    images, tokens = torch.rand(4, 3, model.image_size, model.image_size), torch.randint(1, 400, (4, 6))
    ctx = torch.autocast("cpu", dtype=amp) if amp else torch.autocast("cpu", enabled=False)
    with ctx:
        return float(loss_fn(model(images, tokens))["loss"].detach())


def test_head_autocast_runs_the_head_under_the_surrounding_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with fp32_head("cpu", "autocast"):
            assert torch.is_autocast_enabled("cpu")
        with fp32_head("cpu"):
            assert not torch.is_autocast_enabled("cpu")
    # without autocast the two heads are the same computation; under bf16 the head's products run in bf16
    assert _meru_loss("autocast", None) == _meru_loss("fp32", None)
    assert _meru_loss("autocast", torch.bfloat16) != _meru_loss("fp32", torch.bfloat16)
    with pytest.raises(ValueError, match="head precision 'fp16'"):
        with fp32_head("cpu", "fp16"):
            pass


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(i).random((16, 16, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("dev") / "train"
    write_shards(
        ({"__key__": f"s{i:03d}", "txt": f"caption {i}", "png": _png(i)} for i in range(32)),
        out,
        "t",
        shard_size=16,
        source="test",
    )
    return out


def _cfg(data, steps, *sets):
    base = ["data.batch_size=8", "data.num_workers=0", "data.shuffle_buffer=8", "optim.warmup_steps=1"]
    base += ["runtime.log_every=1", "runtime.checkpoint_every=2", "runtime.tensorboard=false", "runtime.device=cpu"]
    base += ["precision.amp=fp16", "precision.head=autocast", f"data.train={data}", f"optim.total_steps={steps}"]
    return load_train_config(None, "meru", "tiny", 0, [*base, *sets])


@pytest.mark.slow
def test_fp16_training_checkpoints_the_scaler_and_resumes_exactly(shards, tmp_path):
    straight = tr.train(_cfg(shards, 4), tmp_path / "a")
    tr.train(_cfg(shards, 4, "runtime.stop_after=2"), tmp_path / "b")
    state = torch.load(tmp_path / "b" / "ckpt" / "last.pt", weights_only=True)
    assert set(state["scaler"]) >= {"scale", "_growth_tracker"} and state["scaler"]["scale"] > 0
    resumed = tr.train(_cfg(shards, 4), tmp_path / "b")
    a, b = (torch.load(p, weights_only=True)["state_dict"] for p in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert all(r["amp_scale"] > 0 for r in rows) and len(rows) == 4
    # the resumed run takes the checkpoint's loss scale (not a fresh scaler's 65536)
    state["scaler"]["scale"] = 512.0
    torch.save(state, tmp_path / "b" / "ckpt" / "last.pt")
    tr.train(_cfg(shards, 4), tmp_path / "b")
    rows = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[2]["amp_scale"] in (512.0, 256.0), rows[2]


def test_a_checkpoint_from_before_the_switches_resumes_with_their_defaults():
    cfg = load_train_config(None, "meru", "tiny", 0, [])
    old = json.loads(json.dumps(cfg))
    del old["precision"]["head"], old["data"]["subreddit_segmenter"]
    assert tr.trajectory_changes(old, cfg) == {}
    cfg["precision"]["head"] = "autocast"
    assert tr.trajectory_changes(old, cfg) == {"precision.head": ("fp32", "autocast")}


# ------------------------------------------------------------------------------------ subreddit names
# (name, wordlist split, wordsegment split): names of RedCaps subreddits where the two agree and where they differ
SPLITS = [
    ("itookapicture", "i took a picture", "i took a picture"),
    ("EarthPorn", "earth porn", "earth porn"),
    ("mildlyinteresting", "mildly interesting", "mildly interesting"),
    ("houseplants", "house plants", "houseplants"),
    ("thriftstorehauls", "thriftstorehauls", "thrift store hauls"),
]


@pytest.mark.parametrize("name, wordlist, wordsegment", SPLITS)
def test_both_segmenters_split_known_names(name, wordlist, wordsegment):
    assert subreddit_words(name) == subreddit_words(name, "wordlist") == wordlist
    assert subreddit_words(name, "wordsegment") == wordsegment


def test_the_segmenter_reaches_the_caption_prefix():
    import random

    out = apply_subreddit_prefix("a pot", "thriftstorehauls", random.Random(0), 1.0, "wordsegment")
    assert out == "thrift store hauls : a pot"
    pol = CaptionPolicy.from_config(
        {"sample_captions": False, "subreddit_prefix_prob": 1.0, "subreddit_segmenter": "wordsegment"}
    )
    sample = {"txt": b"a pot", "json": json.dumps({"subreddit": "houseplants"}).encode()}
    assert pol.caption(sample, "k", 0, 0) == "houseplants : a pot"
    assert CaptionPolicy(False, 1.0).caption(sample, "k", 0, 0) == "house plants : a pot"
    with pytest.raises(ValueError, match="subreddit_segmenter"):
        CaptionPolicy(subreddit_segmenter="wordninja")


def test_wordsegment_missing_is_a_one_line_preflight_error(shards, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wordsegment" else real(name, *a))
    cfg = load_train_config(None, "meru", "tiny", 0, [f"data.train={shards}", "data.subreddit_segmenter=wordsegment"])
    with pytest.raises(ConfigError) as err:
        tr.preflight(cfg, "c.yaml")
    assert "\n" not in str(err.value) and "pip install wordsegment==1.3.1" in str(err.value)


# ------------------------------------------------------------------------------ linear-probe val split
def _blobs(n, seed, classes=3, dim=8, sep=3.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = np.eye(classes, dim)[y] * sep + rng.normal(size=(n, dim))
    return EmbeddingCache(
        task="classification",
        space=get_space("clip"),
        image_feats=torch.tensor(x, dtype=torch.float32),
        labels=torch.tensor(y),
        classnames=[f"c{i}" for i in range(classes)],
    )


def test_linear_probe_chooses_cost_on_the_val_cache_and_refits_on_train_plus_val(monkeypatch):
    seen = {}
    real_search, real_fit = lp.search_cost, lp._fit

    def search(x_tr, y_tr, x_val, y_val, max_iter=1000):
        seen["search"] = (len(y_tr), len(y_val), x_val.copy())
        return real_search(x_tr, y_tr, x_val, y_val, max_iter)

    monkeypatch.setattr(lp, "search_cost", search)
    monkeypatch.setattr(
        lp,
        "_fit",
        lambda x, y, c, max_iter=1000: seen.setdefault("fits", []).append(len(y)) or real_fit(x, y, c, max_iter),
    )
    train, val, test = _blobs(60, 0), _blobs(21, 1), _blobs(30, 2)
    res = lp.evaluate_linear_probe(train, test, val_cache=val, n_boot=5)
    assert seen["search"][:2] == (60, 21) and np.array_equal(seen["search"][2], val.image_feats.numpy())
    assert seen["fits"][-1] == 81  # the final classifier: train + val
    assert res.details["validation"] == "dataset" and res.details["n_val"] == 21
    seen.clear()
    res = lp.evaluate_linear_probe(train, test, n_boot=5)  # default: a 20% slice of train, refit on train
    assert seen["search"][:2] == (48, 12) and seen["fits"][-1] == 60
    assert res.details["validation"] == "slice" and res.details["n_val"] == 12


def test_a_val_cache_of_other_classes_is_refused():
    other = _blobs(12, 1)
    other.classnames = ["x", "y", "z"]
    with pytest.raises(ValueError, match="other class names"):
        lp.evaluate_linear_probe(_blobs(30, 0), _blobs(12, 2), val_cache=other, n_boot=5)


def _wds_split(folder: Path, split: str) -> None:
    (folder / split).mkdir(parents=True, exist_ok=True)
    (folder / split / "nshards.txt").write_text("1\n")


def _workflow_config(tmp_path, **evaluation):
    cfg = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    cfg = load_config_file(ROOT / "configs" / "default.yaml") if "base" in cfg else cfg
    cfg["evaluation"] = {**cfg["evaluation"], **evaluation}
    return cfg


def test_dataset_val_split_is_checked_at_plan_time(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    schema = yaml.safe_load((ROOT / "configs" / "schema.yaml").read_text())
    folder = tmp_path / "mine"
    _wds_split(folder, "test")
    _wds_split(folder, "train")
    ev = {"synthhier": False, "linear_probe": [str(folder)], "linear_probe_val": "dataset"}
    with pytest.raises(ConfigError) as err:
        check_workflow_config(_workflow_config(tmp_path, **ev), schema)
    msg = str(err.value)
    assert "\n" not in msg and f"{folder}/val/nshards.txt not found" in msg and "linear_probe_val: slice" in msg
    _wds_split(folder, "val")
    check_workflow_config(_workflow_config(tmp_path, **ev), schema)  # the val split is there: no error
    with pytest.raises(ConfigError, match="SynthHier linear probe has no val split"):
        check_workflow_config(_workflow_config(tmp_path, **{**ev, "synthhier": True}), schema)
    with pytest.raises(ConfigError, match="linear_probe_val"):
        check_workflow_config(_workflow_config(tmp_path, linear_probe_val="official"), schema)


@pytest.mark.slow
def test_workflow_plans_the_val_split_embedding_for_dataset_mode(tmp_path):
    import os
    import subprocess
    import sys

    folder = tmp_path / "mine"
    for split in ("train", "val", "test"):
        _wds_split(folder, split)
    cfg = {
        "name": "x",
        "models": ["clip"],
        "sizes": ["tiny"],
        "seeds": [0],
        "results_dir": str(tmp_path / "results"),
        "runs_dir": str(tmp_path / "runs"),
        "data_dir": str(tmp_path / "data"),
        "data": {"source": "synthhier"},
        "train": {"data": {"train": str(tmp_path / "data" / "synthhier" / "train")}},
        "evaluation": {"synthhier": False, "linear_probe": [str(folder)], "linear_probe_val": "dataset"},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--nolock", "--configfile", str(tmp_path / "cfg.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "embeddings/clip-tiny-s0/mine@val.pt" in r.stdout and "--split val" in r.stdout
    probe = next(line for line in r.stdout.splitlines() if "--task linear-probe" in line)
    assert "--val-embeddings" in probe and "mine@val.pt" in probe, probe
