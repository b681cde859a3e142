"""The package reads top-down: each module imports only from its own layer or the layers above it.

Layers, top to bottom (docs/ARCHITECTURE.md): foundation (``meru.io``, ``meru.stats``, ``meru.progress``,
``meru.runs``, ``meru.arguments``, the light kind registry ``meru.kinds`` and its format table ``meru.kinds.formats``) -> geometry -> models -> losses -> kinds
(``meru/kinds/<kind>.py``) -> data -> training -> records -> evaluation -> reporting. Every import counts,
including those inside functions; ``meru.cli`` (the dispatcher that names every command) is outside the order. A
prefix ending in ``.`` names submodules only.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [
    (
        "foundation",
        (
            "meru",
            "meru.io",
            "meru.stats",
            "meru.progress",
            "meru.resources",
            "meru.kinds",
            "meru.kinds.formats",
            "meru.runs",
            "meru.arguments",
        ),
    ),
    ("geometry", ("meru.lorentz", "meru.spaces")),
    ("models", ("meru.models",)),
    ("losses", ("meru.losses",)),
    ("kinds", ("meru.kinds.",)),
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
            hit = module.startswith(p) if p.endswith(".") else module == p or module.startswith(p + ".")
            if hit and (best is None or len(p) > len(best[1])):
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
    assert {layer_of(m) for m in found} == {8, 9} and layer_of("meru.data.loader") == 5


def test_the_kind_registry_is_foundation_and_each_kind_below_the_losses():
    assert layer_of("meru.kinds") == 0
    assert layer_of("meru.kinds.meru") == layer_of("meru.losses") + 1 == layer_of("meru.data") - 1


def import_graph(paths: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the meru modules it imports (module level and inside functions); ``from meru.data import
    wds_layout`` counts as importing ``meru.data.wds_layout``."""
    graph = {}
    for name, path in paths.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in paths}
            elif (
                isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("meru")
            ):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    edges.add(sub if sub in paths else node.module)
        graph[name] = {m for m in edges if m in paths and m != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    paths = dict((name, path) for name, path in modules())
    cycles = import_cycles(import_graph(paths))
    assert not cycles, "import circles in meru/: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_an_import_circle_is_found(tmp_path):
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text("from meru.x import b\n")
    b.write_text("def f():\n    import meru.x.a\n")  # a function-level import closes the circle
    c.write_text("from meru.x.a import something\n")
    graph = import_graph({"meru.x.a": a, "meru.x.b": b, "meru.x.c": c})
    assert graph == {"meru.x.a": {"meru.x.b"}, "meru.x.b": {"meru.x.a"}, "meru.x.c": {"meru.x.a"}}
    assert import_cycles(graph) == [["meru.x.a", "meru.x.b"]]


MAX_FUNCTION_LINES = 80


def long_functions(paths) -> list[str]:
    """``path:line name (N lines)`` for every function or method longer than :data:`MAX_FUNCTION_LINES`."""
    out = []
    for path in paths:
        for node in ast.walk(ast.parse(Path(path).read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{path}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_longer_than_80_lines():
    """Setup, loops and evaluators are split into named steps (issue 19): none runs past 80 lines."""
    assert not long_functions(sorted((ROOT / "meru").rglob("*.py"))), long_functions(
        sorted((ROOT / "meru").rglob("*.py"))
    )


def test_a_long_function_is_found(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}")
    assert long_functions([tmp_path / "m.py"]) == [f"{tmp_path / 'm.py'}:5 long ({MAX_FUNCTION_LINES + 1} lines)"]
