"""The metric record (meru.records.MetricRecord): one shape for every task, strict JSON, one-line errors, and a
reporting layer that reads it without importing the evaluation code."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meru.evaluation import embed as E
from meru.evaluation import run as R
from meru.records import (
    METRIC_FORMAT,
    Measurement,
    MetricRecord,
    Provenance,
    RecordError,
    load_metric_records,
)

from cli_helpers import cli, tiny_sets_and_model
from metric_helpers import record, write

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("zeroshot", "retrieval", "linear-probe", "structure", "traversal", "prompts")


def test_round_trip_and_non_finite_to_null(tmp_path):
    rec = record(
        "meru",
        3,
        "zeroshot",
        metrics={"top1": 50.0, "top5": float("nan")},
        intervals={"top1": [40.0, 60.0]},
        n=2,
        per_item={"correct": [1, 0]},
        plot={"curve": [1.0, float("inf")]},
        details={"n_classes": 5},
        provenance=Provenance(checkpoint="runs/x/model.pt", embeddings="e.pt", tree="t.txt"),
    )
    path = rec.write(tmp_path / "m.json")
    data = json.loads(path.read_text())
    assert data["format"] == METRIC_FORMAT and "model" not in data and "path" not in data
    assert data["metrics"]["top5"] is None and data["plot"]["curve"] == [1.0, None]  # strict JSON: NaN/inf -> null
    back = MetricRecord.load(path)
    assert back.path == path and back.provenance.tree == "t.txt" and back.details == {"n_classes": 5}
    assert back == dataclasses.replace(rec, metrics={"top1": 50.0, "top5": None}, plot={"curve": [1.0, None]})
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside it


def test_measurement_update_adds_every_part():
    a = Measurement({"top1": 1.0}, {"top1": [0.0, 2.0]}, n=3, per_item={"correct": [1]}, details={"n_classes": 2})
    a.update(Measurement({"tie": 0.5}, {"tie": [0, 1]}, n=9, per_item={"tie": [0]}, details={"n_mistakes": 1}))
    assert a == Measurement(
        {"top1": 1.0, "tie": 0.5},
        {"top1": [0.0, 2.0], "tie": [0, 1]},
        n=3,
        per_item={"correct": [1], "tie": [0]},
        details={"n_classes": 2, "n_mistakes": 1},
    )


@pytest.mark.parametrize(
    "content, message",
    [
        ("{nope", "not valid strict JSON"),
        ('{"a": NaN}', "not valid strict JSON"),
        ('{"task": "zeroshot", "kind": "meru", "metrics": {}}', r"not a metric record \(format None"),
        (json.dumps({"format": METRIC_FORMAT, "kind": "meru", "metrics": {}}), "missing"),
        ("[1, 2]", "not a metric record"),
    ],
)
def test_foreign_json_is_a_one_line_error_naming_the_file(tmp_path, content, message):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x.json").write_text(content)
    with pytest.raises(RecordError, match=message) as err:
        load_metric_records(tmp_path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(tmp_path / "run" / "x.json")) and "re-run" in text


def test_directory_loader_skips_clip_benchmark_side_files(tmp_path):
    write(tmp_path, record("clip", 1, "retrieval", "synthhier-retrieval", metrics={"i2t_r1": 10.0}))
    write(tmp_path, record("meru", 0, metrics={"top1": 1.0}))
    (tmp_path / "meru-tiny-s0" / "zeroshot.clip_benchmark.json").write_text('{"dataset": "x", "model": "meru-tiny"}')
    recs = load_metric_records(tmp_path)
    assert [(r.label, r.task) for r in recs] == [("clip-tiny-s1", "retrieval"), ("meru-tiny-s0", "zeroshot")]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Every `meru evaluate` task on the tiny generated sets, written by the CLI."""
    d = tmp_path_factory.mktemp("records")
    paths, ck = tiny_sets_and_model(d, "meru", run_seed=2)
    for name, source in (
        ("zs", ["--evalset", str(paths["zeroshot"])]),
        ("ret", ["--evalset", str(paths["retrieval"])]),
    ):
        assert cli(E, ["--checkpoint", ck, *source, "--out", str(d / f"{name}.pt"), "--batch-size", "4"]) == 0
    assert cli(E, ["--checkpoint", ck, "--text-pool", str(paths["pool"]), "--out", str(d / "pool.pt")]) == 0
    out = {}
    for task in TASKS:
        emb = d / ("ret.pt" if task == "retrieval" else "zs.pt")
        argv = ["--task", task, "--embeddings", str(emb), "--out", str(d / "m" / f"{task}.json"), "--n-boot", "20"]
        argv += {
            "zeroshot": ["--tree", str(paths["taxonomy"])],
            "linear-probe": ["--train-embeddings", str(emb)],
            "structure": ["--text-pool", str(d / "pool.pt")],
            "traversal": ["--text-pool", str(d / "pool.pt"), "--steps", "5"],
        }.get(task, [])
        assert cli(R, argv) == 0, task
        out[task] = d / "m" / f"{task}.json"
    return d, out, paths


def test_every_task_writes_the_same_record_shape(evaluated):
    d, files, paths = evaluated
    keys = None
    for task, path in files.items():
        raw = json.loads(path.read_text())
        keys = keys or list(raw)
        assert list(raw) == keys, task  # same fields, same order, for every task
        rec = MetricRecord.load(path)
        assert rec.task == task and rec.kind == "meru" and rec.size == "tiny" and rec.seed == 2
        assert (rec.model_name, rec.model_display) == ("meru", "MERU")  # no model.name in its config: the kind
        assert rec.label == "meru-tiny-s2" and rec.geometry["space"] and rec.geometry["root_distance"]
        assert isinstance(rec.n, int) and rec.n > 0 and rec.metrics
        assert all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in rec.metrics.values()), task
        assert all(len(iv) == 2 for iv in rec.intervals.values())
        assert all(isinstance(v, list) for v in rec.per_item.values())
        assert rec.provenance.checkpoint == str(d / "model.pt") and rec.provenance.embeddings.endswith(".pt")
    assert list(keys) == ["format", "kind", "model_name", "model_display", "size", "seed", "label", "dataset"] + [
        "task",
        "geometry",
        "metrics",
        "intervals",
        "n",
        "per_item",
        "plot",
        "details",
        "provenance",
    ]
    recs = {t: MetricRecord.load(p) for t, p in files.items()}
    # where each task's facts live
    assert recs["zeroshot"].details["n_classes"] == 3 and "tie" in recs["zeroshot"].per_item
    assert recs["zeroshot"].provenance.tree == str(paths["taxonomy"]) and recs["retrieval"].provenance.tree is None
    assert set(recs["retrieval"].per_item) == {"i2t_rank", "t2i_rank"} and recs["retrieval"].details["n_texts"] == 7
    assert recs["linear-probe"].provenance.train_embeddings == str(d / "zs.pt")
    assert {"cost", "cost_search", "n_train"} <= set(recs["linear-probe"].details)
    assert {"histogram", "text_root_by_specificity"} <= set(recs["structure"].plot)
    assert recs["structure"].provenance.text_pool == str(d / "pool.pt") and "n_texts" in recs["structure"].details
    assert set(recs["traversal"].plot) == {"paths", "per_step"} and len(recs["traversal"].plot["per_step"]["t"]) == 5
    assert set(recs["prompts"].details["prompt_sets"]) == {"evalset", "single", "meru", "clip_benchmark"}
    # the clip-benchmark side files sit beside their records and the loader skips them
    assert sorted(p.name for p in (d / "m").glob("*.clip_benchmark.json")) == [
        "linear-probe.clip_benchmark.json",
        "retrieval.clip_benchmark.json",
        "zeroshot.clip_benchmark.json",
    ]
    assert sorted(r.task for r in load_metric_records(d / "m")) == sorted(TASKS)


def test_size_flag_sets_the_record_size(evaluated):
    d, files, paths = evaluated
    out = d / "sized.json"
    argv = ["--task", "retrieval", "--embeddings", str(d / "ret.pt"), "--out", str(out), "--n-boot", "5"]
    assert cli(R, argv + ["--size", "tiny-grit", "--label", "meru-tiny-grit-released", "--seed", "0"]) == 0
    rec = MetricRecord.load(out)
    assert (rec.size, rec.label, rec.seed) == ("tiny-grit", "meru-tiny-grit-released", 0)
    assert rec.metrics == MetricRecord.load(files["retrieval"]).metrics
    assert json.loads(out.with_name("sized.clip_benchmark.json").read_text())["model"] == "meru-tiny-grit"


def test_reporting_never_imports_the_evaluation_code():
    modules = sorted(p.stem for p in (ROOT / "meru" / "reporting").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module('meru.reporting.' + m)\n"
        "bad = sorted(m for m in sys.modules if m.startswith('meru.evaluation'))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
