"""Fast help: `meru`, `meru --help`, every `meru <cmd> --help` and argument errors answer from the light
`meru.arguments` without importing torch, timm, open_clip or any other heavy library; the options themselves
are the ones each command had before they moved there."""

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meru.arguments import COMMAND_ARGUMENTS, EVALUATE_TASKS
from meru.cli import COMMANDS, command_parser

ROOT = Path(__file__).resolve().parent.parent
HEAVY = (
    "torch",
    "timm",
    "open_clip",
    "pandas",
    "matplotlib",
    "scipy",
    "sklearn",
    "webdataset",
    "clip_benchmark",
    "datasets",
    "huggingface_hub",
)
PROBE = """
import contextlib, io, json, sys
from meru.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    try:
        code = main(json.loads(sys.argv[1]))
    except SystemExit as e:
        code = e.code
print(json.dumps({"code": code, "text": out.getvalue(), "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


def probe(argv: list[str]) -> dict:
    """Run ``meru.cli.main(argv)`` in a fresh interpreter: its exit code, output and the heavy modules it loaded."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [[], ["--help"], *([name, "--help"] for name in COMMANDS)], ids=" ".join)
def test_help_imports_nothing_heavy(argv):
    result = probe(argv)
    assert result["heavy"] == [], f"meru {' '.join(argv)} imported {result['heavy']}"
    assert result["code"] == (2 if not argv else 0)
    assert "usage: meru" in result["text"]
    if argv[1:] == ["--help"]:
        assert f"usage: meru {argv[0]}" in result["text"] and "--" in result["text"].split("options:")[-1]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--model", "nope"], "argument --model: invalid choice: 'nope'"),
        (["evaluate", "--out", "o.json"], "the following arguments are required: --task"),
        (["tables", "--metrics", "m", "--out", "o", "--n-boot", "x"], "argument --n-boot: invalid int value"),
    ],
)
def test_argument_errors_import_nothing_heavy(argv, message):
    result = probe(argv)
    assert result["code"] == 2 and message in result["text"] and result["heavy"] == []


def test_arguments_module_imports_only_the_standard_library():
    """The standard library, and the torch-free kinds registry (the one list of model kinds)."""
    tree = ast.parse((ROOT / "meru" / "arguments.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    top = {m.split(".")[0] for m in imported - {"meru.kinds"}}
    assert imported and top <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_every_command_has_its_arguments_and_its_module_uses_them():
    assert list(COMMAND_ARGUMENTS) == list(COMMANDS)
    for name, (module, _) in COMMANDS.items():
        assert importlib.import_module(module).add_arguments is COMMAND_ARGUMENTS[name], name


def test_choices_agree_with_their_registries():
    from meru.data.download import SOURCES
    from meru.evaluation.tasks import TASKS
    from meru.kinds import trainable_kinds

    assert tuple(TASKS) == EVALUATE_TASKS  # choices: tasks registry
    assert set(SOURCES) == {"redcaps", "cc3m", "cc12m"}
    model = next(a for a in command_parser("train")._actions if a.dest == "model")
    assert list(model.choices) == trainable_kinds()  # choices: the kinds registry's trainable kinds


# Namespaces the commands parsed to before their options moved to meru.arguments (computed with the old code).
BEFORE = {
    "train": (
        "--config c.yaml --model meru --size tiny --seed 3 --out runs/x --set a.b=1 --set c=2",
        {
            "config": "c.yaml",
            "model": "meru",
            "size": "tiny",
            "seed": 3,
            "out": "runs/x",
            "set": ["a.b=1", "c=2"],
            "resume": "auto",
            "apply_config_changes": False,
            "tracking_config": None,  # added with the tracking: section, after the move
        },
    ),
    "embed": (
        "--checkpoint m.pt --evalset a --text-pool p.jsonl --evalset b --out 1 --out 2 --out 3 --no-prompt-sets",
        {
            "checkpoint": "m.pt",
            "checkpoint_entry": None,  # added with the released-checkpoint formats, after the move
            "evalset": None,
            "text_pool": None,
            "root": None,
            "name": None,
            "out": ["1", "2", "3"],
            "split": "test",
            "batch_size": 256,
            "num_workers": 0,
            "prompts": "auto",
            "device": "auto",
            "prompt_sets": False,
            "amp": "auto",
            "sources": [("evalset", "a"), ("text_pool", "p.jsonl"), ("evalset", "b")],
        },
    ),
    "evaluate": (
        "--task zeroshot --embeddings e.pt --out o.json",
        {
            "task": "zeroshot",
            "embeddings": "e.pt",
            "train_embeddings": None,
            "val_embeddings": None,
            "text_pool": None,
            "tree": None,
            "tree_names": None,
            "out": "o.json",
            "label": None,
            "seed": None,
            "size": None,
            "n_boot": 1000,
            "bootstrap_seed": 0,
            "steps": 50,
            "max_images": None,
        },
    ),
    "reproduce": (
        "--metrics m --out o",
        {
            "metrics": "m",
            "reference": "none",
            "training_data": "",
            "published": str(ROOT / "meru" / "resources" / "reference_values.csv"),
            "out": "o",
        },
    ),
    "tables": ("--metrics m --out o", {"metrics": "m", "out": "o", "n_boot": 1000}),
    "provenance": (
        "--out P.md --data a b --checkpoint c",
        {"out": "P.md", "config_json": None, "data": ["a", "b"], "reference": None, "checkpoint": ["c"], "outputs": []},
    ),
    "reference": (
        "compare --from r",
        {"action": "compare", "source": "r", "dest": "results/reference/default", "rel_tol": 0.0, "out": None},
    ),
    "download": (
        "--source cc3m --annotations a.tsv --out d",
        {
            "source": "cc3m",
            "annotations": "a.tsv",
            "out": "d",
            "image_size": 224,
            "processes": 1,
            "threads": 16,
            "subreddit_prefix_prob": 0.5,
            "max_samples": None,
            "timeout": 10,
            "retries": 0,
            "shard_size": 10000,
        },
    ),
    "info": ("--json --sizes tiny", {"json": True, "sizes": ["tiny"]}),
    "evalsets": (
        "prepare --dataset cifar10",
        {
            "action": "prepare",
            "markdown": False,
            "dataset": "cifar10",
            "root": None,
            "split": "test",
            "coco_dir": None,
            "source": None,
            "images": None,
        },
    ),
    "synth": (
        "--out d",
        {
            "out": "d",
            "train_size": 20000,
            "test_size": 2000,
            "image_size": 32,
            "seed": 0,
            "shard_size": 5000,
            "add_attribute_sets": False,
        },
    ),
}


@pytest.mark.parametrize("name", list(BEFORE))
def test_command_lines_parse_as_before(name):
    line, expected = BEFORE[name]
    assert vars(command_parser(name).parse_args(line.split())) == expected


def test_the_light_evaluate_options_are_the_tasks_own():
    """Every flag a task declares (``Task.arguments``) is in the light ``meru evaluate`` parser, with the same
    options: the task objects and the fast --help cannot drift apart."""
    from meru.cli import command_parser
    from meru.evaluation.run import task_arguments

    actions = {a.option_strings[0]: a for a in command_parser("evaluate")._actions if a.option_strings}
    for flag, options in task_arguments().items():
        assert flag in actions, flag
        action = actions[flag]
        assert action.help == options.get("help") and action.default == options.get("default"), flag
        assert action.type == options.get("type"), flag
