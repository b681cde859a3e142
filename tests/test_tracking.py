"""Experiment tracking offline: `meru train` with a `tracking:` section writes its log rows to TensorBoard
event files, a wandb offline run and an MLflow file store, and `meru track` adds the evaluation metrics to
the same run (one per model and seed); the files are read back and hold the logged values."""

import json
import struct
from pathlib import Path

import pytest
import yaml

from meru.config import ConfigError, load_tracking_config
from meru.records import MetricRecord
from meru.reporting import track as TR
from meru.training import train as T

from cli_helpers import cli

BACKENDS = ["tensorboard", "wandb", "mlflow"]


def tensorboard_scalars(logdir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {
        tag: {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}
        for tag in acc.Tags()["tensors"]
    }


def wandb_history(root: Path, run: str) -> list[dict]:
    """History rows of every wandb offline run folder of ``run`` (the .wandb file: W&B's 7-byte header, then
    LevelDB-log records in 32 KiB blocks, each a protobuf ``Record``)."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for path in sorted(root.glob(f"wandb/wandb/offline-run-*-{run}/run-{run}.wandb")):
        data, pos, buf = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
            if left < 7 or (length == 0 and kind == 0):
                pos += left
                continue
            buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
            if kind in (1, 4):  # FULL or LAST chunk: a whole record
                rec = wandb_internal_pb2.Record()
                rec.ParseFromString(buf)
                buf = b""
                if rec.WhichOneof("record_type") == "history":
                    rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return rows


def mlflow_history(root: Path, run: str, project: str = "meru-bench") -> dict[str, dict[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(root / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name(project)
    (found,) = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.runName = '{run}'")
    return {
        key: {m.step: m.value for m in client.get_metric_history(found.info.run_id, key)} for key in found.data.metrics
    }


def test_tracking_section_defaults_and_one_line_errors(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"runs_dir": "runs-x", "tracking": {"backends": ["wandb"]}}))
    assert load_tracking_config(cfg) == {"backends": ["wandb"], "dir": "runs-x/tracking", "project": "meru-bench"}
    cfg.write_text(yaml.safe_dump({"name": "x"}))
    assert load_tracking_config(cfg) is None
    cfg.write_text(yaml.safe_dump({"tracking": {"backends": ["comet"], "dirr": "x"}}))
    with pytest.raises(ConfigError) as e:
        load_tracking_config(cfg)
    assert "\n" not in str(e.value) and "'comet' is not one of" in str(e.value) and "dirr" in str(e.value)


def test_training_rows_and_evaluation_metrics_reach_every_tracker(synthhier, tmp_path):
    data = synthhier(300, 10) / "train"
    track_dir = tmp_path / "tracking"
    cfg = tmp_path / "workflow.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "train": {
                    "data": {"train": str(data), "batch_size": 8, "num_workers": 0, "shuffle_buffer": 50},
                    "optim": {"warmup_steps": 2, "total_steps": 4, "lr": 1.0e-3},
                    "runtime": {"log_every": 2, "checkpoint_every": 4, "tensorboard": False, "threads": 1},
                },
                "tracking": {"backends": BACKENDS, "dir": str(track_dir)},
            }
        )
    )
    run = tmp_path / "meru-tiny-s0"
    argv = ["--config", str(cfg), "--model", "meru", "--size", "tiny", "--seed", "0", "--out", str(run)]
    assert cli(T, argv) == 0
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert sorted(losses) == [2, 4]

    tb = tensorboard_scalars(track_dir / "tensorboard" / "meru-tiny-s0")
    assert tb["train/loss"] == pytest.approx(losses, rel=1e-6)
    assert mlflow_history(track_dir, "meru-tiny-s0")["train/loss"] == pytest.approx(losses, rel=1e-12)
    wb = {r["step"]: r["train/loss"] for r in wandb_history(track_dir, "meru-tiny-s0") if "train/loss" in r}
    assert wb == pytest.approx(losses, rel=1e-12)

    # evaluation metrics: `meru track` on a metric record of that run, into the same run (step 0)
    rec = MetricRecord(
        kind="meru",
        size="tiny",
        seed=0,
        label="meru-tiny-s0",
        dataset="synthhier-shape",
        task="zeroshot",
        geometry={},
        metrics={"top1": 41.5, "top5": None},
    )
    logged = TR.track_metrics(load_tracking_config(cfg), [rec])
    assert logged == [("meru-tiny-s0", "eval/zeroshot/synthhier-shape/top1", 41.5)]  # None is not logged
    tag = "eval/zeroshot/synthhier-shape/top1"
    assert tensorboard_scalars(track_dir / "tensorboard" / "meru-tiny-s0")[tag] == {0: 41.5}
    assert mlflow_history(track_dir, "meru-tiny-s0")[tag] == {0: 41.5}
    assert [r[tag] for r in wandb_history(track_dir, "meru-tiny-s0") if tag in r] == [41.5]


def test_meru_track_command_logs_a_metrics_directory(tmp_path):
    rec = MetricRecord(
        kind="clip",
        size="tiny",
        seed=1,
        label="clip-tiny-s1",
        dataset="cifar10",
        task="retrieval",
        geometry={},
        metrics={"i2t_r1": 12.5, "t2i_r1": float("nan")},
    )
    rec.write(tmp_path / "metrics" / "clip-tiny-s1" / "retrieval-cifar10.json")
    cfg = tmp_path / "w.yaml"
    cfg.write_text(yaml.safe_dump({"tracking": {"backends": ["tensorboard"], "dir": str(tmp_path / "tr")}}))
    out = tmp_path / "tracking.tsv"
    argv = ["--config", str(cfg), "--metrics", str(tmp_path / "metrics"), "--out", str(out)]
    assert cli(TR, argv) == 0
    assert out.read_text().splitlines() == ["label\ttag\tvalue", "clip-tiny-s1\teval/retrieval/cifar10/i2t_r1\t12.5"]
    assert tensorboard_scalars(tmp_path / "tr" / "tensorboard" / "clip-tiny-s1") == {
        "eval/retrieval/cifar10/i2t_r1": {0: 12.5}
    }
