"""Evaluation tasks are objects in one registry (meru.evaluation.tasks.TASKS): `meru embed` and `meru evaluate`
dispatch through it, and its declarations agree with the tables and the cache kinds."""

from __future__ import annotations

import argparse
import json

from meru.data.evalsets import TASKS as SET_KINDS
from meru.evaluation import embed as E
from meru.evaluation import run as R
from meru.evaluation.task import Evaluation, Task, load_test_cache
from meru.evaluation.tasks import TASKS, tasks_embedding
from meru.records import CACHE_TASKS, Measurement
from meru.reporting.tables import SPECS

from cli_helpers import cli, tiny_sets_and_model


def test_every_table_belongs_to_the_task_that_lists_it():
    for spec in SPECS:
        assert spec.task in TASKS, f"table {spec.name} selects task {spec.task!r}, which is not registered"
        assert spec.name in TASKS[spec.task].tables, f"{spec.task}.tables does not list table {spec.name}"
    for task in TASKS.values():
        assert task.name and TASKS[task.name] is task
        for table in task.tables:
            assert [s.task for s in SPECS if s.name == table] == [task.name], f"{task.name}: table {table}"


def test_every_kind_of_cache_is_embedded_by_some_task():
    assert {t.embeds for t in TASKS.values()} - {None} <= set(CACHE_TASKS)
    for kind in (*SET_KINDS, "text-pool"):
        assert tasks_embedding(kind), f"no task embeds {kind} sets"
    assert [t.name for t in tasks_embedding("classification")] == ["zeroshot", "prompts"]


def test_cli_choices_are_the_registry():
    parser = argparse.ArgumentParser()
    R.add_arguments(parser)
    choices = next(a.choices for a in parser._actions if a.dest == "task")
    assert (
        tuple(choices)
        == tuple(TASKS)
        == (
            "zeroshot",
            "retrieval",
            "linear-probe",
            "structure",
            "traversal",
            "prompts",
            "hierarcaps",
            "caption-choice",
        )
    )


class CountImages(Task):
    """A task added in a test: it asks for nothing more than the images, and counts them."""

    name = "count-images"
    embeds = "classification"

    def __init__(self):
        self.embedded = []

    def embed(self, model, evalset, images, options):
        self.embedded.append((evalset.name, len(images.keys), options.batch_size))
        return {}

    def evaluate(self, args, inputs):
        cache = load_test_cache(args, "classification")
        return Evaluation(Measurement({"images": float(len(cache.keys))}, {}, n=len(cache.keys)), cache)


def test_a_registered_task_is_embedded_and_evaluated_without_other_changes(tmp_path, monkeypatch):
    """A task is its object, its registry line and its name among the light `--task` choices (meru.arguments,
    which keeps `meru evaluate --help` free of torch; tests/test_fast_help.py checks the two lists agree)."""
    import meru.arguments

    paths, ck = tiny_sets_and_model(tmp_path)
    task = CountImages()
    monkeypatch.setitem(TASKS, task.name, task)
    monkeypatch.setattr(meru.arguments, "EVALUATE_TASKS", (*meru.arguments.EVALUATE_TASKS, task.name))
    emb = tmp_path / "zs.pt"
    assert (
        cli(E, ["--checkpoint", ck, "--evalset", str(paths["zeroshot"]), "--out", str(emb), "--batch-size", "4"]) == 0
    )
    assert len(task.embedded) == 1 and task.embedded[0][2] == 4
    n_images = task.embedded[0][1]
    out = tmp_path / "count.json"
    assert cli(R, ["--task", "count-images", "--embeddings", str(emb), "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["task"] == "count-images" and rec["metrics"] == {"images": float(n_images)} and n_images > 0
    assert rec["label"] == "meru-tiny-s0"
    assert not R.clip_benchmark_path(out).exists()  # the task has no clip-benchmark counterpart


def test_each_task_brings_its_own_flags_once(monkeypatch):
    flags = R.task_arguments()
    assert list(flags) == [
        "--tree",
        "--tree-names",
        "--train-embeddings",
        "--val-embeddings",
        "--text-pool",
        "--steps",
        "--max-images",
    ]
    assert flags["--steps"] == {"type": int, "default": 50, "help": "traversal: points from image to [ROOT]"}

    class Clash(Task):
        name = "clash"
        arguments = (("--steps", {"type": float}),)

    monkeypatch.setitem(TASKS, "clash", Clash())
    try:
        R.task_arguments()
    except ValueError as e:
        assert "clash declares --steps" in str(e)
    else:
        raise AssertionError("a flag declared two ways was accepted")
