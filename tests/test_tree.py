"""Tree structure: parsing, depth/height/lca, and the errors a bad edge file gives."""

from pathlib import Path

import pytest

from meru.evaluation.tree import Tree

#        r
#      /   \
#     a     b
#    / \   / \
#   a1 a2 b1  bx
#            /  \
#           b2  b3
EDGES = [("r", "a"), ("r", "b"), ("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "bx"), ("bx", "b2"), ("bx", "b3")]


def test_structure_queries():
    t = Tree.from_edges(EDGES)
    assert t.root == "r"
    assert sorted(t.leaves) == ["a1", "a2", "b1", "b2", "b3"]
    assert t.parent("b2") == "bx" and t.parent("r") is None
    assert t.ancestors("b2") == ["bx", "b", "r"]
    assert t.ancestors("b2", include_self=True) == ["b2", "bx", "b", "r"]
    assert [t.depth(n) for n in ("r", "a", "a1", "b2")] == [0, 1, 2, 3]
    assert [t.height(n) for n in ("r", "a", "b", "bx", "b3")] == [3, 1, 2, 1, 0]
    assert t.lca("a1", "a2") == "a" and t.lca("a1", "b3") == "r" and t.lca("b2", "b1") == "b"
    assert t.lca("bx", "b3") == "bx"
    assert t.distance("a1", "b2") == 5 and t.distance("b3", "b3") == 0
    assert sorted(t.descendants("b")) == ["b1", "b2", "b3", "bx"]
    assert set(t.edges()) == set(EDGES)


def test_from_file_with_names(tmp_path: Path):
    f = tmp_path / "tree.txt"
    f.write_text("# comment\n" + "\n".join(f"{p} {c}" for p, c in EDGES) + "\n\n")
    names = tmp_path / "names.json"
    names.write_text('{"a1": "apple"}')
    t = Tree.from_edges_file(f, names=names)
    assert t.name("a1") == "apple" and t.name("a2") == "a2"
    assert len(t) == 9


def test_synthhier_taxonomy_reads():
    path = Path(__file__).parent / "data" / "synthhier" / "taxonomy.txt"
    if not path.exists():
        pytest.skip("tests/data/synthhier/taxonomy.txt not present")
    t = Tree.from_edges_file(path)
    assert t.root == "object"
    assert all(t.depth(leaf) >= 1 for leaf in t.leaves)


@pytest.mark.parametrize(
    "edges, message",
    [
        ([("r", "a"), ("s", "a")], "two parents"),
        ([("r", "a"), ("s", "b")], "exactly one root"),
        ([("r", "a"), ("a", "b"), ("b", "a2"), ("a2", "b")], "two parents|root"),
        ([("r", "r")], "self-loop"),
        ([], "no edges"),
    ],
)
def test_bad_trees(edges, message):
    with pytest.raises(ValueError, match=message):
        Tree.from_edges(edges)


def test_bad_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="imagenet-tree"):
        Tree.from_edges_file(tmp_path / "missing.txt")
    f = tmp_path / "bad.txt"
    f.write_text("r a\nr a b\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        Tree.from_edges_file(f)
    with pytest.raises(KeyError, match="not in the tree"):
        Tree.from_edges(EDGES).depth("zzz")
