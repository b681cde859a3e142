"""Build the ImageNet-1k WordNet 3.0 is-a tree (`meru imagenet-tree`).

Reproduces ``data/imagenet_isa.txt`` of "Making Better Mistakes" (Bertinetto et al., CVPR
2020), the tree HyCoCLIP (Pal et al., ICLR 2025) also uses for its hierarchical metrics,
from the WordNet 3.0 noun database (``data.noun``, as shipped by Debian's ``wordnet-base``
in /usr/share/wordnet or inside nltk's ``corpora/wordnet``):

1. noun hypernym edges ``@`` (instance hypernyms ``@i`` are not used) over all synsets,
   node id ``wnid = 'n%08d' % offset``;
2. three re-wirings made by that tree: street sign (n06794110) and traffic light
   (n06874185) are placed under signboard (n04217882), and bubble (n09229709) under sphere
   the artifact (n04274530), replacing their WordNet hypernyms;
3. root n00001930 (physical entity); for each ImageNet class (sorted wnids) the longest path
   to the root; where several longest paths exist (28 classes), the one listed in
   ``meru/resources/imagenet_tiebreak_paths.json``;
4. union of the chosen paths; every non-root node with exactly one child is removed (its
   child attached to its parent), with child counts taken before any removal;
5. output: ``parent child`` lines in depth-first pre-order from the root, children in
   ascending wnid order.

The published file is matched byte for byte (tests/test_wordnet_tree.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path

from meru.arguments import add_imagenet_tree_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru.io import write_text

ROOT = "n00001930"
# child -> new parent, replacing all of the child's WordNet hypernyms
REWIRINGS = {
    "n06794110": "n04217882",  # street sign -> signboard
    "n06874185": "n04217882",  # traffic light, traffic signal, stoplight -> signboard
    "n09229709": "n04274530",  # bubble -> sphere (the artifact)
}
DEFAULT_WORDNET_DIRS = ("/usr/share/wordnet",)


def _resource_text(name: str) -> str:
    return resources.files("meru.resources").joinpath(name).read_text(encoding="utf-8")


def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1k class wnids, sorted (``meru/resources/imagenet_wnids.txt``)."""
    return [
        line.strip()
        for line in _resource_text("imagenet_wnids.txt").splitlines()
        if line.strip() and not line.startswith("#")
    ]


def tiebreak_paths() -> dict[str, list[str]]:
    """class wnid -> chosen root path (class first, root last), for the 28 tied classes."""
    return json.loads(_resource_text("imagenet_tiebreak_paths.json"))["paths"]


def find_wordnet_dir(wordnet_dir: str | Path | None = None) -> Path:
    """Locate a directory holding WordNet 3.0's ``data.noun``.

    Order: the argument; ``$WORDNET_DIR``; /usr/share/wordnet (Debian ``wordnet-base``);
    nltk's data path (``corpora/wordnet``, unzipped).
    """
    candidates: list[Path] = []
    if wordnet_dir is not None:
        candidates.append(Path(wordnet_dir))
    else:
        if os.environ.get("WORDNET_DIR"):
            candidates.append(Path(os.environ["WORDNET_DIR"]))
        candidates += [Path(d) for d in DEFAULT_WORDNET_DIRS]
        try:
            import nltk

            candidates += [Path(p) / "corpora" / "wordnet" for p in nltk.data.path]
        except ImportError:  # pragma: no cover - nltk is a dependency
            pass
    for c in candidates:
        if (c / "data.noun").is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"WordNet 3.0 data.noun not found (tried {tried}). Install it (Debian/Ubuntu: "
        "`apt-get install wordnet-base`; or nltk's wordnet corpus, unzipped) and pass --wordnet-dir DIR."
    )


def read_noun_hypernyms(wordnet_dir: str | Path) -> dict[str, list[str]]:
    """wnid -> hypernym wnids ('@' pointers only) for every noun synset in ``data.noun``.

    Line format (wndb(5WN)): ``offset lex_filenum ss_type w_cnt word lex_id ... p_cnt
    {pointer_symbol offset pos source/target} ... | gloss``; w_cnt is hexadecimal.
    """
    path = Path(wordnet_dir) / "data.noun"
    hypernyms: dict[str, list[str]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("  "):
                continue  # license header
            fields = line.split(" | ", 1)[0].split()
            try:
                offset = int(fields[0])
                w_cnt = int(fields[3], 16)
                k = 4 + 2 * w_cnt
                p_cnt = int(fields[k])
                ptrs = fields[k + 1 : k + 1 + 4 * p_cnt]
            except (IndexError, ValueError) as exc:
                raise ValueError(f"{path}:{lineno}: not a WordNet data line ({exc}); is this WordNet 3.0?") from exc
            if len(ptrs) != 4 * p_cnt:
                raise ValueError(f"{path}:{lineno}: truncated pointer list")
            hypernyms["n%08d" % offset] = [
                "n%08d" % int(ptrs[j + 1]) for j in range(0, len(ptrs), 4) if ptrs[j] == "@" and ptrs[j + 2] == "n"
            ]
    if ROOT not in hypernyms:
        raise ValueError(f"{path}: synset {ROOT} (physical entity) missing; expected WordNet 3.0 offsets")
    return hypernyms


def build_imagenet_edges(
    wordnet_dir: str | Path | None = None,
    classes: list[str] | None = None,
    tiebreak: dict[str, list[str]] | None = None,
) -> list[tuple[str, str]]:
    """The ImageNet is-a tree as ``(parent, child)`` edges in output order (module docstring)."""
    hyper = read_noun_hypernyms(find_wordnet_dir(wordnet_dir))
    for child, parent in REWIRINGS.items():
        if child not in hyper or parent not in hyper:
            raise ValueError(f"re-wiring {child} -> {parent}: synset missing; expected WordNet 3.0")
        hyper[child] = [parent]
    classes = sorted(imagenet_wnids() if classes is None else classes)
    tiebreak = tiebreak_paths() if tiebreak is None else tiebreak

    @lru_cache(maxsize=None)
    def longest(n: str) -> tuple[int, tuple[tuple[str, ...], ...]]:
        """(length, all longest upward paths n..ROOT); length -1 when ROOT is unreachable."""
        if n == ROOT:
            return 0, ((ROOT,),)
        best, paths = -1, []
        for p in hyper.get(n, ()):
            length, sub = longest(p)
            if length < 0:
                continue
            if length + 1 > best:
                best, paths = length + 1, [(n,) + s for s in sub]
            elif length + 1 == best:
                paths += [(n,) + s for s in sub]
        return best, tuple(paths)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    chosen: list[tuple[str, ...]] = []
    for c in classes:
        if c not in hyper:
            raise ValueError(f"class {c} is not a WordNet 3.0 noun synset")
        length, paths = longest(c)
        if length < 0:
            raise ValueError(f"class {c} has no hypernym path to the root {ROOT}")
        if len(paths) == 1:
            chosen.append(paths[0])
            continue
        if c not in tiebreak:
            raise ValueError(
                f"class {c} has {len(paths)} longest paths to the root and no entry in imagenet_tiebreak_paths.json"
            )
        pick = tuple(tiebreak[c])
        if pick not in paths:
            raise ValueError(
                f"tie-break path for {c} is not one of its longest WordNet paths; is the WordNet version 3.0?"
            )
        chosen.append(pick)

    children: dict[str, set[str]] = {}
    for path in chosen:
        for child, parent in zip(path[:-1], path[1:]):
            children.setdefault(parent, set()).add(child)
    counts = {n: len(k) for n, k in children.items()}  # taken before any removal

    def kept_children(n: str) -> list[str]:
        out = []
        for c in children.get(n, ()):
            while c != ROOT and counts.get(c, 0) == 1:  # drop single-child chains
                (c,) = children[c]
            out.append(c)
        return sorted(out)

    # pre-order from the root, children ascending; an edge is emitted when its child is visited
    edges: list[tuple[str, str]] = []

    def visit(n: str) -> None:
        for c in kept_children(n):
            edges.append((n, c))
            visit(c)

    visit(ROOT)
    return edges


def write_edges(edges: list[tuple[str, str]], out: str | Path) -> None:
    """Write ``parent child`` lines atomically (temp file + rename)."""
    write_text(out, "".join(f"{p} {c}\n" for p, c in edges))


def run(args: argparse.Namespace) -> int:
    try:
        edges = build_imagenet_edges(args.wordnet_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"meru imagenet-tree: error: {exc}", file=sys.stderr)
        return 1
    write_edges(edges, args.out)
    leaves = {c for _, c in edges} - {p for p, _ in edges}
    print(f"wrote {args.out}: {len(edges)} edges, {len(leaves)} leaves, root {ROOT}")
    return 0
