"""Write tiny clip-benchmark wds-layout eval sets + a caption pool for the evaluation tests.

Used by tests/test_embed.py (imported by path); everything is generated at test time into tmp dirs.
Taxonomy: object -> {animal, plant}; animal -> {cat, dog}; plant -> {tree}.
Caption pool rows: text, specificity, depth, node; each image's json lists its true pool captions.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

TAXONOMY = [("object", "animal"), ("object", "plant"), ("animal", "cat"), ("animal", "dog"), ("plant", "tree")]
CLASSES = ["cat", "dog", "tree"]
POOL = [
    {"text": "an object", "specificity": 0, "depth": 0, "node": "object"},
    {"text": "an animal", "specificity": 1, "depth": 1, "node": "animal"},
    {"text": "a plant", "specificity": 1, "depth": 1, "node": "plant"},
    {"text": "a cat", "specificity": 2, "depth": 2, "node": "cat"},
    {"text": "a dog", "specificity": 2, "depth": 2, "node": "dog"},
    {"text": "a tree", "specificity": 2, "depth": 2, "node": "tree"},
    {"text": "a small red cat", "specificity": 4, "depth": 2, "node": "cat"},
]
TRUE = {"cat": [0, 1, 3, 6], "dog": [0, 1, 4], "tree": [0, 2, 5]}


def _png(rng, h=40, w=48) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_sets(root: Path, n_per_class: int = 2, seed: int = 0, shard_size: int = 4) -> dict[str, Path]:
    import webdataset as wds

    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "taxonomy.txt").write_text("".join(f"{a} {b}\n" for a, b in TAXONOMY))
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in POOL))
    samples = []
    for i in range(n_per_class * len(CLASSES)):
        c = i % len(CLASSES)
        node = CLASSES[c]
        meta = {"node": node, "labels": {"leaf": c}, "true_captions": TRUE[node], "description": f"a {node} {i}"}
        samples.append({"__key__": f"img{i:04d}", "png": _png(rng), "cls": c, "json": meta})

    def write(d: Path, items, dtype: str):
        (d / "test").mkdir(parents=True)
        shards = [items[s : s + shard_size] for s in range(0, len(items), shard_size)]
        for k, chunk in enumerate(shards):
            with wds.TarWriter(str(d / "test" / f"{k}.tar")) as w:
                for it in chunk:
                    w.write(it)
        (d / "test" / "nshards.txt").write_text(f"{len(shards)}\n")
        (d / "dataset_type.txt").write_text(dtype + "\n")

    zs = root / "zeroshot_leaf"
    write(zs, samples, "classification")
    (zs / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    (zs / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\nan image of a {c}.\n")
    (zs / "class_nodes.json").write_text(json.dumps(CLASSES))
    ret = root / "retrieval"
    rsamples = [
        {
            "__key__": s["__key__"],
            "png": s["png"],
            "json": s["json"],
            "txt": s["json"]["description"] + ("\nanother caption" if k == 0 else ""),
        }
        for k, s in enumerate(samples)
    ]
    write(ret, rsamples, "retrieval")
    return {"zeroshot": zs, "retrieval": ret, "pool": root / "captions.jsonl", "taxonomy": root / "taxonomy.txt"}
