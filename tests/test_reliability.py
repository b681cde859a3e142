"""Faults and attacks: no file runs code, no diverged model is saved or scored, resume and logs tell the truth,
one writer per run directory, corrupt data is refused or skipped and counted (never silent)."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from meru.cli import main
from meru.config import load_train_config
from meru.data.captions import CaptionPolicy
from meru.data.loader import TrainLoader
from meru.data.manifest import CorruptDatasetError
from meru.data.shards import write_shards
from meru.models import build_model
from meru.models.checkpoints import (
    NonFiniteWeightsError,
    UnsafeFileError,
    load_model,
    save_model,
)
from meru.records import EmbeddingCache
from meru.spaces import get_space
from meru.training.train import ResumeConfigMismatch, RunDirLocked, train

torch.set_num_threads(1)


class _Payload:
    """Unpickling this runs ``os.mkdir(marker)``: the proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _image(i: int, fmt: str = "PNG", size: int = 16) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _samples(n, fmt="png", start=0):
    for i in range(start, start + n):
        yield {"__key__": f"s{i:05d}", fmt: _image(i, "JPEG" if fmt == "jpg" else "PNG"), "txt": f"caption {i}"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("rel") / "train"
    write_shards(_samples(64), out, "t", shard_size=32, source="test")
    return out


def _cfg(data, steps=6, sets=()):
    base = [
        f"data.train={data}",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.shuffle_buffer=16",
        "optim.warmup_steps=2",
        f"optim.total_steps={steps}",
        "optim.lr=1e-3",
        "runtime.log_every=1",
        "runtime.checkpoint_every=2",
        "runtime.tensorboard=false",
        "runtime.threads=1",
        "runtime.device=cpu",
        "precision.amp=fp32",
    ]
    return load_train_config(None, "meru", "tiny", 0, base + list(sets))


def _rows(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def _traj(rows):
    """The deterministic part of the log (timing fields differ between runs)."""
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"], r.get("curv")) for r in rows if "event" not in r]


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


# ------------------------------------------------------------------------------------ code execution
def test_resume_refuses_pickle_checkpoint(data, tmp_path, capsys):
    run, marker = tmp_path / "run", tmp_path / "PWNED"
    (run / "ckpt").mkdir(parents=True)
    torch.save({"model": _Payload(marker)}, run / "ckpt" / "last.pt")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "data": {"train": str(data), "batch_size": 8, "num_workers": 0},
                "optim": {"total_steps": 2, "warmup_steps": 1},
                "runtime": {"tensorboard": False, "device": "cpu"},
            }
        )
    )
    rc = main(
        ["train", "--config", str(cfg_file), "--model", "meru", "--size", "tiny", "--seed", "0", "--out", str(run)]
    )
    assert rc == 2 and not marker.exists()
    _one_line_error(capsys, "last.pt", "refused", "posix.mkdir")


def test_load_model_and_embed_refuse_pickle_checkpoint(tmp_path, capsys):
    path, marker = tmp_path / "model.pt", tmp_path / "PWNED"
    torch.save({"format": "meru-bench/checkpoint/1", "state_dict": _Payload(marker)}, path)
    with pytest.raises(UnsafeFileError, match="model.pt"):
        load_model(path)
    assert (
        main(
            [
                "embed",
                "--checkpoint",
                str(path),
                "--text-pool",
                str(tmp_path / "p.jsonl"),
                "--out",
                str(tmp_path / "e.pt"),
            ]
        )
        == 2
    )
    assert not marker.exists()
    _one_line_error(capsys, "model.pt", "refused")


def _wds_evalset(root, members_extra):
    split = root / "test"
    split.mkdir(parents=True)
    with tarfile.open(split / "0.tar", "w") as tar:
        for i in range(4):
            members = {"png": _image(i), "cls": str(i % 2).encode(), **members_extra}
            for ext, payload in members.items():
                info = tarfile.TarInfo(f"s{i:03d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    (split / "nshards.txt").write_text("1\n")
    (root / "classnames.txt").write_text("zero\none\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    return root


def test_embed_never_decodes_pickle_members(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = pickle.dumps(_Payload(marker))
    torch_evil = io.BytesIO()
    torch.save(_Payload(marker), torch_evil)
    evalset = _wds_evalset(tmp_path / "set", {"pyd": evil, "pickle": evil, "pth": torch_evil.getvalue()})
    torch.manual_seed(0)
    save_model(build_model("clip", "tiny"), tmp_path / "model.pt")
    rc = main(
        [
            "embed",
            "--checkpoint",
            str(tmp_path / "model.pt"),
            "--evalset",
            str(evalset),
            "--out",
            str(tmp_path / "emb.pt"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    assert not marker.exists()
    assert "ignored 12 member(s)" in err and "4 .pyd" in err and "4 .pth" in err, err
    cache = torch.load(tmp_path / "emb.pt", weights_only=True)
    assert cache["image_emb"].shape[0] == 4 and cache["labels"].tolist() == [0, 1, 0, 1]


def test_evaluate_refuses_pickle_cache(tmp_path, capsys):
    path, marker = tmp_path / "emb.pt", tmp_path / "PWNED"
    torch.save({"format": "meru-bench/embeddings/1", "task": "classification", "x": _Payload(marker)}, path)
    assert main(["evaluate", "--task", "zeroshot", "--embeddings", str(path), "--out", str(tmp_path / "m.json")]) == 2
    assert not marker.exists() and not (tmp_path / "m.json").exists()
    _one_line_error(capsys, "emb.pt", "refused")


# ------------------------------------------------------------------------------------ diverged weights
def test_save_model_refuses_nan(tmp_path):
    model = build_model("meru", "tiny")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteWeightsError, match="not written"):
        save_model(model, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()


def test_nan_model_refused_by_embed_and_nan_cache_by_evaluate(tmp_path, capsys):
    model = build_model("meru", "tiny")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["curv"] = torch.tensor(float("nan"))
    torch.save(
        {
            "format": "meru-bench/checkpoint/1",
            "kind": "meru",
            "size": "tiny",
            "model_kwargs": {},
            "state_dict": sd,
            "step": 1,
            "config": {},
        },
        tmp_path / "nan.pt",
    )
    (tmp_path / "pool.jsonl").write_text('{"text": "a cat"}\n')
    assert (
        main(
            [
                "embed",
                "--checkpoint",
                str(tmp_path / "nan.pt"),
                "--text-pool",
                str(tmp_path / "pool.jsonl"),
                "--out",
                str(tmp_path / "e.pt"),
            ]
        )
        == 2
    )
    _one_line_error(capsys, "nan.pt", "non-finite", "curv")
    assert not (tmp_path / "e.pt").exists()
    cache = EmbeddingCache(
        task="classification",
        space=get_space("clip"),
        dataset="x",
        image_emb=torch.full((4, 8), float("nan")),
        labels=torch.tensor([0, 1, 0, 1]),
        classnames=["a", "b"],
        templates=["{}"],
        class_text_raw=torch.randn(1, 2, 8),
    )
    with pytest.raises(NonFiniteWeightsError, match="image_emb"):
        cache.save(tmp_path / "nan_emb.pt")  # never written ...
    assert not (tmp_path / "nan_emb.pt").exists()
    torch.save(cache.to_dict(), tmp_path / "nan_emb.pt")  # ... and refused when read
    assert (
        main(
            [
                "evaluate",
                "--task",
                "zeroshot",
                "--embeddings",
                str(tmp_path / "nan_emb.pt"),
                "--out",
                str(tmp_path / "m.json"),
            ]
        )
        == 2
    )
    _one_line_error(capsys, "nan_emb.pt", "non-finite", "image_emb")
    assert not (tmp_path / "m.json").exists()


def test_divergence_at_last_step_saves_nothing_diverged(data, tmp_path, monkeypatch):
    import meru.training.train as tr

    real, calls = tr.train_step, [0]

    def poisoned(model, *a, **k):  # a finite step whose update makes the weights NaN (as a huge lr does)
        out = real(model, *a, **k)
        calls[0] += 1
        if calls[0] == 4:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(tr, "train_step", poisoned)
    with pytest.raises(FloatingPointError, match="non-finite weights after step 4"):
        train(_cfg(data, steps=4), tmp_path)
    assert not (tmp_path / "model.pt").exists()
    state = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())


# ------------------------------------------------------------------------------------ resume and logs
def test_kill_resume_five_of_five_bit_identical_with_one_log_row_per_step(data, tmp_path):
    full = tmp_path / "full"
    train(_cfg(data), full)
    ref = torch.load(full / "model.pt", weights_only=True)["state_dict"]
    ref_log = _traj(_rows(full))
    assert [r[0] for r in ref_log] == [1, 2, 3, 4, 5, 6]
    for k in range(1, 6):
        run = tmp_path / f"k{k}"
        assert train(_cfg(data, sets=[f"runtime.stop_after={k}"]), run) is None
        log = run / "log.jsonl"
        if k == 1:
            log.unlink()  # Snakemake deleted the failed job's log: rebuilt from the checkpoint
        else:
            log.write_text(log.read_text() + log.read_text())  # rows after the checkpoint / duplicates
        (run / "ckpt" / ".last.pt.tmp-999999").write_bytes(b"half")  # killed during a checkpoint write
        train(_cfg(data), run)
        got = torch.load(run / "model.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(ref[n], got[n]) for n in ref), k
        assert _traj(_rows(run)) == ref_log, k
        assert not list((run / "ckpt").glob(".*.tmp-*"))


def test_changed_recipe_resume_refused_or_applied_and_recorded(data, tmp_path, capsys):
    run = tmp_path / "run"
    train(_cfg(data, sets=["runtime.stop_after=2"]), run)
    with pytest.raises(ResumeConfigMismatch, match=r"optim\.lr: 0\.001 -> 0\.0005.*--apply-config-changes"):
        train(_cfg(data, sets=["optim.lr=5e-4"]), run)
    with pytest.raises(ResumeConfigMismatch, match=r"data\.batch_size.*cannot change"):
        train(_cfg(data, sets=["data.batch_size=4"]), run)
    with pytest.raises(ResumeConfigMismatch, match=r"runtime\.seed"):
        train(load_train_config(None, "meru", "tiny", 1, [f"data.train={data}"]), run)
    train(_cfg(data, sets=["optim.lr=5e-4", "runtime.stop_after=3"]), run, apply_config_changes=True)
    rows = _rows(run)
    event = [r for r in rows if r.get("event") == "config_change"]
    assert event and event[0]["step"] == 2 and event[0]["changes"]["optim.lr"] == {"old": 1e-3, "new": 5e-4}
    from meru.training.train import lr_multiplier

    assert rows[-1]["step"] == 3 and rows[-1]["lr"] == pytest.approx(5e-4 * lr_multiplier(3, 2, 6))
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 5e-4  # the config in effect


def test_second_writer_is_refused(data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); f.write('4242'); f.flush(); "
                "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)"
            ),
            str(run / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirLocked, match="4242"):
            train(_cfg(data), run)
        assert not (run / "log.jsonl").exists() and not (run / "ckpt").exists()
    finally:
        holder.kill()
        holder.wait()
    train(_cfg(data, steps=2), run)  # lock released with the process
    assert (run / "model.pt").exists()


# ------------------------------------------------------------------------------------ corrupt data
def _fresh(tmp_path, name, samples=None, shard_size=16):
    out = tmp_path / name
    write_shards(samples if samples is not None else _samples(32), out, "t", shard_size=shard_size, source="test")
    return out


def _loader(path, **kw):
    return TrainLoader(
        path,
        batch_size=4,
        image_size=8,
        context_length=8,
        shuffle_buffer=1,
        captions=CaptionPolicy(sample_json_captions=False),
        augment=False,
        **kw,
    )


@pytest.mark.parametrize("damage", ["truncated", "swapped", "extra", "empty", "garbled-bytes"])
def test_changed_shards_are_refused(tmp_path, damage):
    out = _fresh(tmp_path, damage)
    a, b = out / "t-000000.tar", out / "t-000001.tar"
    _loader(out)  # verified once (fills the stat cache)
    if damage == "truncated":
        a.write_bytes(a.read_bytes()[:5000])
    elif damage == "swapped":
        a.write_bytes(b.read_bytes())
    elif damage == "extra":
        extra = _fresh(tmp_path, "more", _samples(17), shard_size=17) / "t-000000.tar"
        a.write_bytes(extra.read_bytes())
    elif damage == "empty":
        a.write_bytes(b"")
    else:
        raw = bytearray(a.read_bytes())
        raw[3000:3010] = b"\xff" * 10
        a.write_bytes(bytes(raw))
    with pytest.raises(CorruptDatasetError, match=r"t-000000\.tar.*(sha256|bytes)"):
        _loader(out)


def test_garbled_jpeg_missing_member_and_duplicates_are_skipped_and_counted(tmp_path):
    def samples():
        kept = None
        for s in _samples(12, fmt="jpg"):
            i = int(s["__key__"][1:])
            if i == 3:  # garbled entropy-coded data: PIL alone decodes it (grey blocks) without an error
                raw = bytearray(s["jpg"])
                rng = np.random.default_rng(0)
                for j in rng.integers(len(raw) // 3, len(raw) - 10, 50):
                    raw[j] = int(rng.integers(0, 256))
                s["jpg"] = bytes(raw)
            if i == 5:
                del s["jpg"]  # missing image member
            yield s
            if i == 7:
                kept = dict(s)
            if i == 9:
                yield kept  # sample s00007 again (same key, not adjacent)

    out = _fresh(tmp_path, "mixed", samples(), shard_size=13)
    loader = _loader(out)
    batches = [next(it) for it in [iter(loader)] for _ in range(3)]  # 10 usable samples: 2 batches + next epoch
    keys = [k for b in batches[:2] for k in b["keys"]]
    assert "s00003" not in keys and "s00005" not in keys and keys.count("s00007") == 1
    assert len(set(keys)) == 8
    assert loader.skipped_total >= 3  # garbled + missing + duplicate, each counted


def test_temp_files_of_killed_runs_are_removed_on_next_start(tmp_path):
    from meru.io import pid_alive

    dead = next(p for p in range(999_999, 900_000, -1) if not pid_alive(p))
    (tmp_path / f"ds.tmp-{dead}").mkdir()  # a dataset build killed half-way
    (tmp_path / f".emb.pt.tmp-{dead}").write_bytes(b"half")  # an embedding cache write killed half-way
    write_shards(_samples(4), tmp_path / "ds", "t", shard_size=4, source="test")
    EmbeddingCache(task="retrieval", space=get_space("clip"), image_emb=torch.zeros(2, 3)).save(tmp_path / "emb.pt")
    assert not (tmp_path / f"ds.tmp-{dead}").exists() and not (tmp_path / f".emb.pt.tmp-{dead}").exists()
    assert (tmp_path / "ds" / "manifest.json").exists() and (tmp_path / "emb.pt").exists()
