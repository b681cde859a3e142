"""Dependencies: every third-party import of the package is declared in pyproject.toml, and each conda
env under envs/ installs the package from the repository root (as Snakemake resolves it) with the extra
that covers exactly what its rules import."""

import ast
import re
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
# import name -> distribution name, where they differ
DIST = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "sklearn": "scikit-learn",
    "open_clip": "open_clip_torch",
    "clip_benchmark": "clip-benchmark",
    "mlflow": "mlflow-skinny",
    "snakemake_executor_plugin_slurm": "snakemake-executor-plugin-slurm",
}
# needed at run time without an import statement of ours
RUNTIME = {
    "report": {"tabulate", "jinja2"},  # pandas DataFrame.to_markdown / to_latex
    "train": {"tensorboard"},
}  # torch.utils.tensorboard


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(reqs):
    return {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def _extra(name):
    extras = _project()["optional-dependencies"]
    out = set()
    for r in extras[name]:
        m = re.match(r"meru-bench\[(.*)\]", r)
        out |= set().union(*(_extra(e) for e in m.group(1).split(","))) if m else _names([r])
    return out


def _module_imports(module, seen):
    if module in seen:
        return set()
    seen.add(module)
    path = ROOT / (module.replace(".", "/") + ".py")
    path = path if path.exists() else ROOT / module.replace(".", "/") / "__init__.py"
    if not path.exists():
        return set()
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else ([node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        )
        for n in names:
            out |= _module_imports(n, seen) if n.split(".")[0] == "meru" else {n.split(".")[0]}
    return {n for n in out if n not in sys.stdlib_module_names and n != "__future__"}


def _dists(imports):
    return {DIST.get(n, n).lower().replace("_", "-") for n in imports}


def test_every_import_is_declared():
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "meru").rglob("*.py")]
    used = _dists(set().union(*(_module_imports(m, set()) for m in modules)))
    declared = _names(_project()["dependencies"]) | _extra("all")
    assert used - declared == set(), f"imported but not declared in pyproject.toml: {sorted(used - declared)}"


def _rules_by_env():
    """env name -> set of `meru` commands (and scripts) its rules run, from workflow/rules/*.smk."""
    from meru.cli import COMMANDS

    out = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.MULTILINE)[1:]:
            env = re.search(r'conda:\s*"\.\./\.\./envs/(\w+)\.yaml"', block)
            assert env, f"{smk.name}: rule {block.split(':')[0]} has no conda env"
            cmds = set(re.findall(r"meru ([a-z-]+)", block)) & set(COMMANDS)
            if "{params.launcher} train" in block:
                cmds.add("train")
            modules = {COMMANDS[c][0] for c in cmds}
            if "write_yaml.py" in block:
                modules.add("workflow.scripts.write_yaml")
            out.setdefault(env.group(1), set()).update(modules)
    return out


@pytest.mark.parametrize("env", ["data", "train", "eval", "report"])
def test_env_installs_the_repository_with_the_extra_its_rules_need(env):
    spec = yaml.safe_load((ROOT / "envs" / f"{env}.yaml").read_text())
    deps = spec["dependencies"]
    (pip,) = [d["pip"] for d in deps if isinstance(d, dict)]
    assert pip == [f"-e ../..[{env}]"]  # ../.. from Snakemake's copy in .snakemake/conda/ = the repository root
    assert "python=3.11" in deps and "pip" in deps
    modules = _rules_by_env()[env]
    needed = _dists(set().union(*(_module_imports(m, set()) for m in modules))) | RUNTIME.get(env, set())
    core = _names(_project()["dependencies"])
    provided = _extra(env) | core
    assert needed - provided == set(), f"envs/{env}.yaml lacks {sorted(needed - provided)}"
    assert _extra(env) - needed == set(), (
        f"envs/{env}.yaml installs what its rules do not import: {sorted(_extra(env) - needed)}"
    )


def test_env_path_reaches_the_repository_from_snakemakes_copy():
    copy_dir = ROOT / ".snakemake" / "conda"  # where Snakemake copies env files (default --conda-prefix)
    assert (copy_dir / ".." / "..").resolve() == ROOT and (ROOT / "pyproject.toml").is_file()
