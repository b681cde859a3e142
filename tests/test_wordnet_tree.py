"""The ImageNet WordNet tree built from WordNet 3.0 equals the published one."""

from pathlib import Path

import pytest

from meru.evaluation import wordnet_tree as wt
from meru.evaluation.tree import Tree

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "imagenet_isa.txt"
PACKAGED = REPO / "meru" / "resources" / "imagenet_isa.txt"


def _wordnet_dir():
    try:
        return wt.find_wordnet_dir()
    except FileNotFoundError as exc:
        pytest.skip(f"WordNet 3.0 not installed (apt-get install wordnet-base): {exc}")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tree") / "imagenet_isa.txt"
    args = wt.argparse.Namespace(out=str(out), wordnet_dir=str(_wordnet_dir()))
    assert wt.run(args) == 0
    return out


def test_resources_are_consistent():
    wnids = wt.imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) and wnids == sorted(wnids)
    tb = wt.tiebreak_paths()
    assert len(tb) == 28
    for cls, path in tb.items():
        assert cls in wnids and path[0] == cls and path[-1] == wt.ROOT


def test_built_tree_shape(built):
    tree = Tree.from_edges_file(built)
    assert tree.root == "n00001930"
    assert sorted(tree.leaves) == wt.imagenet_wnids()
    assert len(tree.edges()) == 1371 and len(tree) - len(tree.leaves) == 372
    # no non-root node with a single child survives
    assert all(len(tree.children(n)) != 1 for n in tree.nodes if n != tree.root)
    # the re-wirings: street sign and traffic light under signboard
    assert tree.parent("n06794110") == "n04217882" and tree.parent("n06874185") == "n04217882"


def test_built_tree_equals_reference(built):
    if not REFERENCE.is_file():
        pytest.skip(f"reference tree {REFERENCE} not present (only in the development checkout)")
    ref = REFERENCE.read_text()
    got = built.read_text()
    assert set(got.splitlines()) == set(ref.splitlines())  # same edge set
    assert got == ref  # and byte-identical order


def test_packaged_copy_equals_built_and_reference(built):
    assert PACKAGED.read_text() == built.read_text(), (
        "regenerate: meru imagenet-tree --out meru/resources/imagenet_isa.txt"
    )
    if REFERENCE.is_file():
        assert PACKAGED.read_text() == REFERENCE.read_text()


def test_missing_wordnet_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        wt.find_wordnet_dir(tmp_path)
    args = wt.argparse.Namespace(out=str(tmp_path / "t.txt"), wordnet_dir=str(tmp_path))
    assert wt.run(args) == 1
    assert "data.noun" in capsys.readouterr().err
    assert not (tmp_path / "t.txt").exists()


def test_tiebreak_needed(tmp_path):
    _wordnet_dir()
    # without the tie-break facts a tied class is refused rather than silently decided
    with pytest.raises(ValueError, match="longest paths"):
        wt.build_imagenet_edges(classes=["n02504013"], tiebreak={})
