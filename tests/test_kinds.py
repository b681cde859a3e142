"""One list of model kinds (meru.kinds.KINDS): every consumer reads it, nothing else names a kind.

* every registry consumer (the train config schema, configs/schema.yaml as validated, ``meru train --model``
  choices, the Snakefile's ``{model}`` wildcard constraint, reporting names and colours, ``meru info``, the
  space / model / loss lookups) lists exactly ``KINDS``;
* a kind added as ``meru/kinds/<kind>.py`` + one ``KINDS`` entry reaches every consumer (a toy kind, in a
  subprocess so the registry of this process is untouched);
* the kind names appear as string literals only in ``meru/kinds/`` (AST / token scan of ``meru/``,
  ``workflow/``, ``Snakefile``, ``benchmarks/``).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import json
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import yaml

from meru.kinds import KINDS, get_kind, kind_of_space, trainable_kinds

ROOT = Path(__file__).resolve().parent.parent


def snakefile_model_constraint(kinds: dict) -> str:
    """The ``model=`` wildcard constraint of the Snakefile, evaluated with ``KINDS = kinds``."""
    text = (ROOT / "Snakefile").read_text()
    assert "from meru.kinds import KINDS" in text
    block = text.split("wildcard_constraints:", 1)[1].split("\n\n", 1)[0]
    expr = re.search(r"^\s+model=(.+),$", block, re.M).group(1)
    return eval(expr, {"KINDS": kinds, "config": {}})  # the Snakefile's own expression (no variants)


def train_model_choices() -> list[str]:
    from meru.training.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return next(a.choices for a in parser._actions if "--model" in a.option_strings)


def test_registry_records():
    assert list(KINDS) == ["meru", "clip", "euclip", "hycoclip", "uncha"]
    assert trainable_kinds() == ["meru", "clip", "euclip"]  # HyCoCLIP, UNCHA: released checkpoints only
    for name, kind in KINDS.items():
        assert kind.name == name and get_kind(name) is kind and KINDS[kind_of_space(kind.space)].space == kind.space
    trained = [KINDS[k] for k in trainable_kinds()]
    assert len({k.space for k in trained}) == len(trained)  # a space is defined by one trainable kind
    assert {k.space for k in KINDS.values()} == {k.space for k in trained}  # the others embed in those spaces
    with pytest.raises(ValueError, match="unknown model kind 'resnet'; choose one of 'meru', 'clip', 'euclip'"):
        get_kind("resnet")


def test_the_registry_imports_without_torch():
    code = "import sys, meru.kinds, meru.config, meru.models.info; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_config_schemas_list_exactly_the_kinds():
    from meru.config import DEFAULTS, TRAIN_SCHEMA, ConfigError, check_workflow_config, with_kinds

    assert TRAIN_SCHEMA["properties"]["model"]["properties"]["kind"]["enum"] == trainable_kinds()
    options = {key for k in KINDS.values() for key in k.options}
    assert options <= set(TRAIN_SCHEMA["properties"]["model"]["properties"]) and options <= set(DEFAULTS["model"])
    raw = yaml.safe_load((ROOT / "configs" / "schema.yaml").read_text())
    schema = with_kinds(raw)
    assert schema["properties"]["models"]["items"]["enum"] == trainable_kinds()
    assert list(schema["properties"]["train_overrides"]["properties"]) == trainable_kinds()
    released = schema["properties"]["pretrained"]["properties"]["checkpoints"]["items"]["properties"]
    assert released["kind"]["enum"] == list(KINDS)  # a released checkpoint may be any kind
    # the file itself names no kind: the registry is the only list
    assert not re.search(r"\b(" + "|".join(KINDS) + r")\b\s*[,:\]]", (ROOT / "configs" / "schema.yaml").read_text())
    with pytest.raises(ConfigError, match="models.0 = 'resnet' is not one of"):
        check_workflow_config({"models": ["resnet"]}, raw, "cfg.yaml")


def test_cli_snakefile_and_reporting_list_exactly_the_kinds():
    from meru.reporting.records import KIND_COLORS, KIND_NAMES, kind_colors, kind_name

    assert list(train_model_choices()) == trainable_kinds()
    pattern = snakefile_model_constraint(KINDS)
    assert [k for k in [*KINDS, "resnet", "merux"] if re.fullmatch(pattern, k)] == list(KINDS)
    assert KIND_NAMES == {k.name: k.display_name for k in KINDS.values()}
    assert KIND_COLORS == {k.name: k.color for k in KINDS.values()} == kind_colors(KINDS)
    assert [kind_name(k) for k in KINDS] == ["MERU", "CLIP", "EuCLIP", "HyCoCLIP", "UNCHA"]


def test_meru_info_lists_exactly_the_kinds(capsys):
    from meru.models.info import run

    assert run(argparse.Namespace(json=True, sizes=["tiny"])) == 0
    assert [r["kind"] for r in json.loads(capsys.readouterr().out)] == list(KINDS)


@pytest.mark.parametrize("name", list(KINDS))
def test_space_model_and_loss_come_from_the_kind_module(name):
    from meru.losses import build_loss
    from meru.models import build_model
    from meru.spaces import get_space

    kind = KINDS[name]
    assert kind.module.__name__ == f"meru.kinds.{name}"
    space = get_space(name, 1.0)
    assert type(space) is kind.space_class and space.name == kind.space and space.kind == kind_of_space(kind.space)
    model = build_model(name, "tiny", curv_init=0.5, learn_curv=False)
    assert type(model) is kind.model_class and model.kind == name and isinstance(model.space(), kind.space_class)
    if kind.trainable:
        assert type(build_loss(name)) is kind.loss_class
    else:  # a released-checkpoint kind: training it is refused, saying why
        with pytest.raises(ValueError, match=rf"kind {name!r} is evaluated from released checkpoints only \(.*box"):
            build_loss(name)
    # the constructor's keyword arguments are exactly the kind's config options
    params = list(inspect.signature(kind.model_class.__init__).parameters)[2:]
    assert params == list(kind.options)
    given = {"curv_init": 0.5, "learn_curv": False}
    defaults = {k: spec["default"] for k, spec in kind.options.items()}
    assert model.model_kwargs() == {**defaults, **{k: v for k, v in given.items() if k in params}}
    # meru info's scalars: the learned parameters outside the towers
    scalars = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("visual.", "text.")))
    assert scalars == kind.scalars


TOY_KIND = """
import sys, types
import meru.kinds as K
K.KINDS["toy"] = K.Kind("toy", "Toy", "tab:purple", "toy-sphere", {"toy_scale": {"type": "number", "default": 2.0}})
from meru.losses import ClipLoss
from meru.models.clip_meru import CLIP
from meru.spaces import EuclideanSphere
class ToySpace(EuclideanSphere):
    name = "toy-sphere"
class Toy(CLIP):
    kind = "toy"
    def __init__(self, size="tiny", toy_scale=2.0):
        super().__init__(size)
        self.toy_scale = toy_scale
    def space(self):
        return ToySpace()
mod = types.ModuleType("meru.kinds.toy")
mod.SPACE, mod.MODEL, mod.LOSS = ToySpace, Toy, ClipLoss
sys.modules["meru.kinds.toy"] = mod
"""


def test_a_new_kind_is_one_module_and_one_registry_line(tmp_path):
    """A toy kind (a module and a KINDS entry, nothing else) reaches every consumer."""
    check = (
        TOY_KIND
        + """
import argparse, io, json, contextlib, re, yaml
sys.path.insert(0, "tests")
from test_kinds import snakefile_model_constraint, train_model_choices
from meru.config import TRAIN_SCHEMA, load_train_config, with_kinds, DEFAULTS
from meru.losses import build_loss
from meru.models import build_model
from meru.records import space_from_record
from meru.reporting.records import KIND_NAMES, KIND_COLORS
from meru.models.info import run
out = {"schema": TRAIN_SCHEMA["properties"]["model"]["properties"]["kind"]["enum"],
       "option_default": DEFAULTS["model"]["toy_scale"],
       "workflow": with_kinds(yaml.safe_load(open("configs/schema.yaml")))["properties"]["models"]["items"]["enum"],
       "cli": list(train_model_choices()),
       "snakefile": bool(re.fullmatch(snakefile_model_constraint(K.KINDS), "toy")),
       "names": KIND_NAMES["toy"], "colors": KIND_COLORS["toy"]}
model = build_model("toy", "tiny", toy_scale=3.0, curv_init=0.5)
out["model"] = [type(model).__name__, model.toy_scale, type(build_loss("toy")).__name__]
out["space"] = space_from_record(model.space().record()).kind
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    run(argparse.Namespace(json=True, sizes=["tiny"]))
out["info"] = [r["kind"] for r in json.loads(buf.getvalue())]
print(json.dumps(out))
"""
    )
    res = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["schema"] == out["workflow"] == out["cli"] == [*trainable_kinds(), "toy"]
    assert out["info"] == [*KINDS, "toy"]
    assert out["snakefile"] and out["names"] == "Toy" and out["colors"] == "tab:purple"
    assert out["option_default"] == 2.0 and out["model"] == ["Toy", 3.0, "ClipLoss"] and out["space"] == "toy"


# ------------------------------------------------------------------------------------------ kind literals

#: the same words used for something other than a model kind, where it is that: file -> why
NOT_KINDS = {
    "meru/cli.py": "the command's name (argparse prog)",
    "workflow/rules/train.smk": "the command run by each training job (`meru` / `python -m meru`)",
    "meru/data/evalsets.py": "MERU's prompt set (templates and class names of the official evaluation)",
    "meru/evaluation/embed.py": "MERU's prompt set (--prompts)",
    "meru/arguments.py": "MERU's prompt set (meru embed --prompts)",
    "benchmarks/bench_help.py": "the command's name (`python -m meru --help`)",
    "benchmarks/bench_evaluate.py": "the command's name (`python -m meru evaluate`)",
    "meru/reporting/prompt_sensitivity.py": "MERU's prompt set (a column of the prompt-sensitivity table)",
}


def string_literals(path: Path) -> list[tuple[int, str]]:
    """``(line, value)`` of every string literal: the AST's constants for Python, tokens for Snakemake files."""
    text = path.read_text()
    if path.suffix == ".py":
        nodes = ast.walk(ast.parse(text))
        return sorted((n.lineno, n.value) for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str))
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.STRING:
            try:
                out.append((tok.start[0], ast.literal_eval(tok.string)))
            except (ValueError, SyntaxError):  # f-strings: their literal parts are plain text
                out.append((tok.start[0], tok.string))
    return out


def scanned_files() -> list[Path]:
    files = [ROOT / "Snakefile", *sorted((ROOT / "workflow").rglob("*.smk"))]
    for folder in ("meru", "workflow", "benchmarks"):
        files += sorted((ROOT / folder).rglob("*.py"))
    return [f for f in files if f.relative_to(ROOT).parts[:2] != ("meru", "kinds")]


def kind_literals(files: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        for line, value in string_literals(path):
            if value in KINDS and not (value == "meru" and rel in NOT_KINDS):
                found.append(f"{rel}:{line}: {value!r}")
    return found


def test_kind_names_are_string_literals_only_in_meru_kinds():
    files = scanned_files()
    assert ROOT / "Snakefile" in files and ROOT / "meru" / "spaces.py" in files
    assert ROOT / "meru" / "kinds" / "__init__.py" not in files
    found = kind_literals(files)
    assert not found, "kind names outside meru/kinds/ (ask meru.kinds / the space instead):\n" + "\n".join(found)


def test_the_literal_scan_finds_kind_names(tmp_path):
    (tmp_path / "a.py").write_text('x = {"clip": 1}\nif kind == "euclip":\n    pass\n"""meru"""\n')
    (tmp_path / "b.smk").write_text('rule r:\n    params:\n        kind="meru",\n')
    found = kind_literals([tmp_path / "a.py", tmp_path / "b.smk"], tmp_path)
    assert found == ["a.py:1: 'clip'", "a.py:2: 'euclip'", "a.py:4: 'meru'", "b.smk:3: 'meru'"]
