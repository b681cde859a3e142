"""The package reads top-down: each module imports only from its own layer or the layers above it.

Layers, top to bottom (docs/ARCHITECTURE.md): foundation (``meru.io``, ``meru.stats``, ``meru.progress``,
``meru.arguments``) -> geometry -> models -> losses -> data -> training -> records -> evaluation -> reporting. Every import counts,
including those inside functions; ``meru.cli`` (the dispatcher that names every command) is outside the order.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [
    ("foundation", ("meru", "meru.io", "meru.stats", "meru.progress", "meru.resources", "meru.arguments")),
    ("geometry", ("meru.lorentz", "meru.spaces")),
    ("models", ("meru.models",)),
    ("losses", ("meru.losses",)),
    ("data", ("meru.data",)),
    ("training", ("meru.config", "meru.training")),
    ("records", ("meru.records",)),
    ("evaluation", ("meru.evaluation",)),
    ("reporting", ("meru.reporting",)),
]
OUTSIDE = ("meru.cli", "meru.__main__")


def layer_of(module: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (i, p)
    if best is None:
        raise AssertionError(f"{module} is in no layer; add it to LAYERS and docs/ARCHITECTURE.md")
    return best[0]


def modules():
    for path in sorted((ROOT / "meru").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        yield name.removesuffix(".__init__"), path


def meru_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "meru"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("meru"):
            out |= {f"{node.module}.{a.name}" if node.module == "meru" else node.module for a in node.names}
    return out


def test_every_module_has_a_layer():
    for name, _ in modules():
        if name not in OUTSIDE:
            layer_of(name)


@pytest.mark.parametrize("name,path", [m for m in modules() if m[0] not in OUTSIDE], ids=lambda v: str(v))
def test_no_import_reaches_down(name, path):
    mine = layer_of(name)
    below = sorted(m for m in meru_imports(path) if layer_of(m) > mine)
    assert not below, f"{name} ({LAYERS[mine][0]}) imports from lower layers: " + ", ".join(
        f"{m} ({LAYERS[layer_of(m)][0]})" for m in below
    )


def test_a_downward_import_is_found(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from meru.reporting.tables import write_tables\n    import meru.evaluation.embed\n")
    found = meru_imports(bad)
    assert found == {"meru.reporting.tables", "meru.evaluation.embed"}
    assert {layer_of(m) for m in found} == {7, 8} and layer_of("meru.data.loader") == 4
