"""Taxonomy trees ("parent child" edge files) and hierarchical classification metrics.

A :class:`Tree` is read from an edge list in the format of ``imagenet_isa.txt`` (one
``parent child`` pair per line; SynthHier's ``taxonomy.txt`` uses the same format). Depth
counts edges from the root (root depth 0); height counts edges down to the deepest leaf
below a node (leaf height 0).

Metrics (exact definitions with citations in docs/METRICS.md). For a true class y and a
prediction p, with ``A(n)`` the proper ancestors of n (n itself excluded, root included),
``S(n) = A(n) ∪ {n}`` and ``I = A(y) ∩ A(p)``:

* ``tie``  — tree-induced error: edges on the path p..y
  ``= depth(y) + depth(p) - 2 depth(lca(y, p))`` (HyCoCLIP: shortest undirected path).
* ``lca``  — HyCoCLIP's LCA error ``|A(p)| - |I| + 1`` (1 for a correct prediction).
* ``jaccard`` ``|I| / |A(y) ∪ A(p)|``; ``h_precision`` ``|I| / |A(p)|``;
  ``h_recall`` ``|I| / |A(y)|`` — HyCoCLIP (Pal et al., ICLR 2025), leaf excluded.
* ``*_full`` — the textbook set-based variants (Kiritchenko et al. 2006) with the class
  itself included (``S`` instead of ``A``); ``h_f1_full`` their harmonic mean.
* ``lca_height`` — height of lca(y, p) (0 when correct); ``mistake_severity`` — the same
  but NaN for correct predictions, so its mean over non-NaN items is Bertinetto et al.'s
  "average mistake severity" (CVPR 2020), and ``lca_height``'s plain mean their
  "average hierarchical distance of top-1".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "Tree",
    "METRIC_NAMES",
    "hierarchical_metrics",
    "summarize_hierarchical",
    "chance_hierarchical",
]

# per-sample keys returned by hierarchical_metrics, in report order
METRIC_NAMES = (
    "correct",
    "tie",
    "lca",
    "jaccard",
    "h_precision",
    "h_recall",
    "jaccard_full",
    "h_precision_full",
    "h_recall_full",
    "h_f1_full",
    "lca_height",
    "mistake_severity",
)


class Tree:
    """A rooted tree over string node ids.

    Build with :meth:`from_edges` / :meth:`from_edges_file`. Every node except the root has
    exactly one parent; a second parent, a cycle, or several roots is an error.
    """

    def __init__(
        self, edges: Iterable[tuple[str, str]], names: Mapping[str, str] | None = None, source: str = "<edges>"
    ):
        self.source = source
        self._parent: dict[str, str] = {}
        self._children: dict[str, list[str]] = {}
        order: dict[str, None] = {}
        for i, edge in enumerate(edges):
            if len(edge) != 2:
                raise ValueError(f"{source}: edge {i + 1} {edge!r} is not a (parent, child) pair")
            parent, child = str(edge[0]), str(edge[1])
            if parent == child:
                raise ValueError(f"{source}: self-loop on {parent!r}")
            if child in self._parent:
                if self._parent[child] == parent:
                    continue  # duplicate edge
                raise ValueError(
                    f"{source}: node {child!r} has two parents "
                    f"({self._parent[child]!r} and {parent!r}); a tree needs one"
                )
            self._parent[child] = parent
            self._children.setdefault(parent, []).append(child)
            order.setdefault(parent)
            order.setdefault(child)
        if not order:
            raise ValueError(f"{source}: no edges; expected 'parent child' lines")
        roots = [n for n in order if n not in self._parent]
        if len(roots) != 1:
            raise ValueError(
                f"{source}: expected exactly one root (node without a parent), found {len(roots)}: {roots[:5]}"
            )
        self.root: str = roots[0]
        self.nodes: list[str] = list(order)
        # depth by walking from the root (also detects nodes unreachable = cycles)
        self._depth: dict[str, int] = {self.root: 0}
        stack = [self.root]
        while stack:
            n = stack.pop()
            for c in self._children.get(n, ()):
                self._depth[c] = self._depth[n] + 1
                stack.append(c)
        if len(self._depth) != len(self.nodes):
            bad = [n for n in self.nodes if n not in self._depth][:5]
            raise ValueError(f"{source}: nodes not reachable from root {self.root!r} (cycle?): {bad}")
        self.leaves: list[str] = [n for n in self.nodes if n not in self._children]
        self._height: dict[str, int] = {}
        for n in sorted(self.nodes, key=self._depth.__getitem__, reverse=True):
            kids = self._children.get(n)
            self._height[n] = 0 if not kids else 1 + max(self._height[c] for c in kids)
        self._index = {n: i for i, n in enumerate(self.nodes)}
        self.names: dict[str, str] = dict(names or {})

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_edges(cls, edges: Iterable[tuple[str, str]], names: Mapping[str, str] | None = None) -> "Tree":
        return cls(edges, names=names)

    @classmethod
    def from_edges_file(cls, path: str | Path, names: Mapping[str, str] | str | Path | None = None) -> "Tree":
        """Read ``parent child`` lines (blank lines and ``#`` comments skipped).

        names: optional ``{node: name}`` mapping or path of a JSON file holding one
        (e.g. SynthHier's ``taxonomy_names.json``).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"tree file {path} not found; build it with `meru imagenet-tree --out {path}` "
                "or `meru synth` (taxonomy.txt)"
            )
        edges = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'parent child', got {line!r}")
            edges.append((parts[0], parts[1]))
        if isinstance(names, (str, Path)):
            names_path = Path(names)
            try:
                names = json.loads(names_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"tree names file {names_path}: {exc}; expected a JSON object node -> name") from exc
            if not isinstance(names, dict):
                raise ValueError(f"tree names file {names_path}: expected a JSON object node -> name")
        return cls(edges, names=names, source=str(path))

    # ---- queries --------------------------------------------------------------------------
    def __contains__(self, node: str) -> bool:
        return node in self._depth

    def __len__(self) -> int:
        return len(self.nodes)

    def _check(self, n: str) -> str:
        if n not in self._depth:
            raise KeyError(f"node {n!r} is not in the tree {self.source}")
        return n

    def edges(self) -> list[tuple[str, str]]:
        return [(p, c) for p in self.nodes for c in self._children.get(p, ())]

    def parent(self, n: str) -> str | None:
        """Parent of n (None for the root)."""
        return self._parent.get(self._check(n))

    def children(self, n: str) -> list[str]:
        return list(self._children.get(self._check(n), ()))

    def ancestors(self, n: str, include_self: bool = False) -> list[str]:
        """Ancestors of n, nearest first, root last (n first if include_self)."""
        out = [self._check(n)] if include_self else []
        p = self._parent.get(n)
        while p is not None:
            out.append(p)
            p = self._parent.get(p)
        return out

    def depth(self, n: str) -> int:
        """Edges from the root (root: 0)."""
        return self._depth[self._check(n)]

    def height(self, n: str) -> int:
        """Edges on the longest downward path from n to a leaf (leaf: 0)."""
        return self._height[self._check(n)]

    def lca(self, a: str, b: str) -> str:
        """Lowest common ancestor (a node counts as its own ancestor)."""
        anc = set(self.ancestors(a, include_self=True))
        for n in self.ancestors(b, include_self=True):
            if n in anc:
                return n
        raise AssertionError("unreachable: the root is a common ancestor")

    def distance(self, a: str, b: str) -> int:
        """Edges on the path between a and b."""
        return self.depth(a) + self.depth(b) - 2 * self.depth(self.lca(a, b))

    def descendants(self, n: str, include_self: bool = False) -> list[str]:
        out, stack = [], [self._check(n)]
        while stack:
            m = stack.pop()
            if m != n or include_self:
                out.append(m)
            stack.extend(self._children.get(m, ()))
        return out

    def name(self, n: str) -> str:
        return self.names.get(n, n)

    # ---- vectorised helpers ---------------------------------------------------------------
    def ancestor_matrix(self, classes: Sequence[str]) -> np.ndarray:
        """Bool ``[C, V]``: row c marks ``S(classes[c])`` (ancestors and the class itself),
        columns in ``self.nodes`` order."""
        m = np.zeros((len(classes), len(self.nodes)), dtype=bool)
        for i, c in enumerate(classes):
            m[i, [self._index[a] for a in self.ancestors(c, include_self=True)]] = True
        return m


def _class_indices(tree: Tree, true_leaves, pred_leaves, classes):
    """Map inputs to (class list, true idx [N], pred idx [N])."""
    if classes is None:
        t = [str(x) for x in true_leaves]
        p = [str(x) for x in pred_leaves]
        classes = sorted(set(t) | set(p))
        lookup = {c: i for i, c in enumerate(classes)}
        ti = np.array([lookup[x] for x in t], dtype=np.int64)
        pi = np.array([lookup[x] for x in p], dtype=np.int64)
    else:
        classes = [str(c) for c in classes]
        ti = np.asarray(true_leaves, dtype=np.int64).reshape(-1)
        pi = np.asarray(pred_leaves, dtype=np.int64).reshape(-1)
        for name, arr in (("true", ti), ("pred", pi)):
            if arr.size and (arr.min() < 0 or arr.max() >= len(classes)):
                raise ValueError(f"hierarchical_metrics: {name} class index out of range [0, {len(classes)})")
    if ti.shape != pi.shape:
        raise ValueError(f"hierarchical_metrics: {ti.shape[0]} true labels but {pi.shape[0]} predictions")
    missing = [c for c in classes if c not in tree]
    if missing:
        raise KeyError(f"classes not in tree {tree.source}: {missing[:5]} (check the --tree file matches the dataset)")
    if tree.root in classes:
        raise ValueError(f"the root {tree.root!r} cannot be a class: its ancestor set is empty")
    return classes, ti, pi


def hierarchical_metrics(
    tree: Tree, true_leaves, pred_leaves, classes: Sequence[str] | None = None, batch_size: int = 8192
) -> dict[str, np.ndarray]:
    """Per-sample hierarchical metrics of predictions against ground truth.

    true_leaves, pred_leaves: ``[N]`` node ids, or — with ``classes`` (``[C]`` node ids) —
    integer class indices into ``classes``. Returns ``{name: float64 [N]}`` for every name in
    :data:`METRIC_NAMES` (definitions in the module docstring; ``mistake_severity`` is NaN on
    correct items). Classes may be any non-root nodes, though the published protocols use
    leaves.
    """
    classes, ti, pi = _class_indices(tree, true_leaves, pred_leaves, classes)
    n = ti.shape[0]
    out = {k: np.empty(n, dtype=np.float64) for k in METRIC_NAMES}
    if n == 0:
        return out
    S = tree.ancestor_matrix(classes)  # [C, V] incl. self
    node_depth = np.array([tree.depth(v) for v in tree.nodes], dtype=np.int64)
    node_height = np.array([tree.height(v) for v in tree.nodes], dtype=np.float64)
    cls_col = np.array([tree._index[c] for c in classes], dtype=np.int64)
    A = S.copy()
    A[np.arange(len(classes)), cls_col] = False  # [C, V] proper ancestors
    sizeS = S.sum(1).astype(np.float64)
    sizeA = A.sum(1).astype(np.float64)
    cdepth = node_depth[cls_col]
    for s in range(0, n, batch_size):
        t, p = ti[s : s + batch_size], pi[s : s + batch_size]
        common = S[t] & S[p]  # [B, V] = S(lca)
        inter_full = common.sum(1).astype(np.float64)
        # lca = deepest common node: depth is unique along a root path
        lca_col = np.argmax(np.where(common, node_depth[None, :], -1), axis=1)
        lca_depth = node_depth[lca_col]
        inter = (A[t] & A[p]).sum(1).astype(np.float64)
        union = sizeA[t] + sizeA[p] - inter
        union_full = sizeS[t] + sizeS[p] - inter_full
        sl = slice(s, s + t.shape[0])
        correct = t == p
        out["correct"][sl] = correct
        out["tie"][sl] = cdepth[t] + cdepth[p] - 2 * lca_depth
        out["lca"][sl] = sizeA[p] - inter + 1
        out["jaccard"][sl] = inter / union
        out["h_precision"][sl] = inter / sizeA[p]
        out["h_recall"][sl] = inter / sizeA[t]
        out["jaccard_full"][sl] = inter_full / union_full
        hp, hr = inter_full / sizeS[p], inter_full / sizeS[t]
        out["h_precision_full"][sl] = hp
        out["h_recall_full"][sl] = hr
        out["h_f1_full"][sl] = 2 * hp * hr / (hp + hr)
        h = node_height[lca_col]
        out["lca_height"][sl] = h
        out["mistake_severity"][sl] = np.where(correct, np.nan, h)
    return out


def summarize_hierarchical(per_sample: Mapping[str, np.ndarray]) -> dict[str, float | None]:
    """Means of the per-sample metrics; ``mistake_severity`` averages over mistakes only
    (``None`` when there are none). Adds ``n`` and ``n_mistakes``. JSON-safe (no NaN)."""
    out: dict[str, float | None] = {}
    for k, v in per_sample.items():
        v = np.asarray(v, dtype=np.float64)
        if v.size == 0:
            out[k] = None
            continue
        if k == "mistake_severity":
            m = v[~np.isnan(v)]
            out[k] = float(m.mean()) if m.size else None
        else:
            val = float(v.mean())
            out[k] = val if math.isfinite(val) else None
    if "correct" in per_sample:
        c = np.asarray(per_sample["correct"])
        out["n"] = int(c.size)
        out["n_mistakes"] = int(c.size - np.sum(c))
    return out


def chance_hierarchical(
    tree: Tree, classes: Sequence[str] | None = None, true_weights: Sequence[float] | None = None
) -> dict[str, float | None]:
    """Exact expected metrics of a classifier that predicts uniformly at random.

    classes: candidate classes (default: all leaves). The prediction is uniform over
    ``classes``, independent of the truth; the truth is distributed by ``true_weights``
    (default uniform over ``classes``). Enumerates all C x C pairs:
    ``E[m] = sum_{y, p} w_y / C * m(y, p)``; ``mistake_severity`` is the expectation
    conditional on ``p != y``. Returns the same keys as :func:`summarize_hierarchical`
    (without the counts).
    """
    classes = list(tree.leaves if classes is None else classes)
    C = len(classes)
    w = np.full(C, 1.0 / C) if true_weights is None else np.asarray(true_weights, dtype=np.float64)
    if w.shape != (C,) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"chance_hierarchical: true_weights must be {C} non-negative numbers")
    w = w / w.sum()
    ti = np.repeat(np.arange(C), C)
    pi = np.tile(np.arange(C), C)
    per = hierarchical_metrics(tree, ti, pi, classes=classes)
    pw = np.repeat(w, C) / C  # pair probabilities
    out: dict[str, float | None] = {}
    for k, v in per.items():
        if k == "mistake_severity":
            mask = ~np.isnan(v)
            out[k] = float(np.sum(pw[mask] * v[mask]) / np.sum(pw[mask])) if mask.any() else None
        else:
            out[k] = float(np.sum(pw * v))
    return out
