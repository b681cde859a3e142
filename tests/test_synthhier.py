"""SynthHier generator: layout, captions, caption pool ground truth, images, determinism, atomicity."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meru.cli import main as cli_main
from meru.data import synthhier as sh
from meru.data.manifest import read_manifest

DATA = Path(__file__).parent / "data" / "synthhier"
PREFIXES = sorted(sh.PREFIXES, key=len, reverse=True)


@pytest.fixture(scope="module")
def out(synthhier):
    return synthhier(300, 100, shard_size=120)


def _members(tar_path):
    """{key: {ext: bytes}} of a tar file, read with the standard library (independent of webdataset)."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path) as tf:
        for m in tf.getmembers():
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return samples


def _all(shard_dir):
    out = {}
    for e in read_manifest(shard_dir)["shards"]:
        out.update(_members(shard_dir / e["path"]))
    return out


def _strip_prefix(text):
    for p in PREFIXES:
        if p and text.startswith(p):
            return text[len(p) :]
    return text


def test_phrases_hand_written():
    assert (
        sh.phrase("shape.triangle", {"count": 2, "size": "small", "colour": "red", "texture": "stripes"})
        == "two small red triangles on stripes"
    )
    assert sh.phrase("object", {}) == "an object"
    assert sh.phrase("family.mark", {"colour": "white", "texture": "plain"}) == "a white mark on a plain background"
    assert sh.phrase("shape.cross", {"count": 3}) == "three crosses"
    assert sh.phrase("shape.letter_T", {"size": "large"}) == "a large letter T"
    assert sh.phrase("category.sign", {"count": 1, "texture": "dots"}) == "one sign on dots"


def test_layout_and_taxonomy(out):
    train = read_manifest(out / "train", verify=True)
    assert train["num_samples"] == 300 and [e["num_samples"] for e in train["shards"]] == [120, 120, 60]
    assert [e["path"] for e in train["shards"]] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    edges = set((out / "taxonomy.txt").read_text().splitlines())
    assert edges == set((DATA / "taxonomy.txt").read_text().splitlines())
    names = json.loads((out / "taxonomy_names.json").read_text())
    assert names["shape.letter_T"] == "letter T" and names["object"] == "object" and len(names) == 19
    info = json.loads((out / "info.json").read_text())
    assert info["class_counts"] == {"category": 2, "family": 4, "shape": 12}
    assert info["train_size"] == 300 and info["test_size"] == 100 and info["seed"] == 0
    for level, n in info["class_counts"].items():
        z = out / "eval" / f"zeroshot_{level}"
        assert (z / "dataset_type.txt").read_text().strip() == "classification"
        assert (z / "test" / "nshards.txt").read_text().strip() == "1"
        classnames = (z / "classnames.txt").read_text().splitlines()
        nodes = json.loads((z / "class_nodes.json").read_text())
        assert len(classnames) == len(nodes) == n
        assert [names[x] for x in nodes] == classnames
        for t in (z / "zeroshot_classification_templates.txt").read_text().splitlines():
            assert "{c}" in t
        samples = _members(z / "test" / "0.tar")
        assert len(samples) == 100
        for s in samples.values():
            meta = json.loads(s["json"])
            cls = int(s["cls"])
            # the class node is the image's ancestor at this level
            assert nodes[cls] == meta["path"][sh.LEVELS.index(level) + 1]
    assert (out / "eval" / "retrieval" / "dataset_type.txt").read_text().strip() == "retrieval"
    assert not list(out.parent.glob("*.tmp-*"))


def test_clip_benchmark_reads_eval_sets(out):
    import torchvision.transforms as T
    from clip_benchmark.datasets.builder import build_dataset

    ds = build_dataset("wds/synth", root=str(out / "eval" / "zeroshot_shape"), transform=T.ToTensor(), split="test")
    assert ds.classes[0] == "triangle" and "a photo of a {c}." in ds.templates
    image, label = next(iter(ds))
    assert tuple(image.shape) == (3, 32, 32) and 0 <= label < 12
    ds = build_dataset(
        "wds/synth",
        root=str(out / "eval" / "retrieval"),
        transform=T.ToTensor(),
        split="test",
        task="zeroshot_retrieval",
    )
    image, texts = next(iter(ds))
    assert len(texts) == 1 and texts[0].endswith(".")


def _attr_ok(meta, row):
    return all(meta["attributes"][a] == v for a, v in row["attributes"].items())


def test_training_captions_are_true_and_cover_specificities(out):
    pool = [json.loads(x) for x in (out / "eval" / "captions.jsonl").read_text().splitlines()]
    by_text = {r["text"]: r for r in pool}
    for key, s in list(_all(out / "train").items())[:60]:
        meta = json.loads(s["json"])
        assert s["txt"].decode() == meta["description"]
        caps = meta["captions"]
        assert sorted(c["specificity"] for c in caps) == sorted(list(range(8)) * 3)
        for c in caps:
            row = by_text[_strip_prefix(c["text"])]
            assert row["specificity"] == c["specificity"] == row["depth"] + len(row["attributes"])
            assert row["node"] in meta["path"] and _attr_ok(meta, row), (key, c)


def test_caption_pool_and_ground_truth(out):
    pool = [json.loads(x) for x in (out / "eval" / "captions.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in pool]
    assert len(set(texts)) == len(texts)
    # 19 nodes x (1+3)(1+2)(1+6)(1+3) attribute assignments
    assert len(pool) == 19 * 4 * 3 * 7 * 4
    assert {r["specificity"] for r in pool} == set(range(8)) and {r["depth"] for r in pool} == {0, 1, 2, 3}
    assert "an object." in texts
    matches = json.loads((out / "eval" / "caption_matches.json").read_text())
    retrieval = _members(out / "eval" / "retrieval" / "test" / "0.tar")
    assert matches["keys"] == sorted(retrieval)  # written in test order
    captions = [retrieval[k]["txt"].decode() for k in matches["keys"]]
    assert len(set(captions)) == len(captions)  # tie-free retrieval
    for key, idx, true in zip(matches["keys"], matches["captions"], matches["true_captions"]):
        meta = json.loads(retrieval[key]["json"])
        assert pool[idx]["text"] == retrieval[key]["txt"].decode() == meta["description"]
        assert meta["true_captions"] == true
        # independent ground truth: ancestor-or-self node and all stated attributes match
        expected = [i for i, r in enumerate(pool) if r["node"] in meta["path"] and _attr_ok(meta, r)]
        assert true == expected and len(true) == 4 * 16


def _object_pixels(img):
    """Pixels that are clearly not background (saturated, or bright white)."""
    img = img.astype(int)
    return (img.max(-1) - img.min(-1) > 70) | (img.min(-1) > 175)


def test_images_show_their_attributes(out):
    samples = list(_all(out / "train").values())
    areas = {"small": [], "large": []}
    outside = inside = 0
    for s in samples:
        meta = json.loads(s["json"])
        img = np.asarray(Image.open(io.BytesIO(s["png"])).convert("RGB"))
        assert img.shape == (32, 32, 3)
        obj = _object_pixels(img)
        mean = img[obj].mean(0)
        nearest = min(sh.COLOURS, key=lambda c: np.sum((np.array(sh.COLOURS[c]) - mean) ** 2))
        assert nearest == meta["attributes"]["colour"], meta
        attrs = meta["attributes"]
        areas[attrs["size"]].append(obj.sum() / attrs["count"])
        for cell in range(4):
            r, c = divmod(cell, 2)
            n = obj[16 * r : 16 * r + 16, 16 * c : 16 * c + 16].sum()
            if cell in attrs["cells"]:
                assert n > 0
                inside += n
            else:
                outside += n
    assert outside < 0.03 * inside
    assert np.mean(areas["large"]) > 1.8 * np.mean(areas["small"])


def test_deterministic_and_seed_dependent(out, tmp_path):
    again = tmp_path / "again"
    sh.generate(again, train_size=300, test_size=100, shard_size=120)
    a, b = read_manifest(out / "train"), read_manifest(again / "train")
    assert [e["sha256"] for e in a["shards"]] == [e["sha256"] for e in b["shards"]]
    for rel in [
        "eval/zeroshot_shape/test/0.tar",
        "eval/retrieval/test/0.tar",
        "eval/captions.jsonl",
        "eval/caption_matches.json",
        "info.json",
        "taxonomy.txt",
    ]:
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    sh.generate(other, train_size=300, test_size=100, shard_size=120, seed=1)
    c = read_manifest(other / "train")
    assert all(x["sha256"] != y["sha256"] for x, y in zip(a["shards"], c["shards"]))


def test_killed_run_leaves_nothing_complete(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = sh.render

    def failing(*args, **kw):
        calls["n"] += 1
        if calls["n"] > 150:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kw)

    monkeypatch.setattr(sh, "render", failing)
    with pytest.raises(KeyboardInterrupt):
        sh.generate(tmp_path / "ds", train_size=300, test_size=50, shard_size=100)
    assert list(tmp_path.iterdir()) == []


def test_cli_rejects_bad_size(tmp_path, capsys):
    assert cli_main(["synth", "--out", str(tmp_path / "x"), "--image-size", "15"]) == 2
    assert "--image-size" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_contact_sheet(out, tmp_path):
    png = tmp_path / "sheet.png"
    assert cli_main(["contact-sheet", "--data", str(out), "--out", str(png), "--n", "6", "--columns", "3"]) == 0
    with Image.open(png) as im:
        assert im.width > 300 and im.height > 300
    from meru.data.contact_sheet import read_samples

    samples = read_samples(out, 6)
    assert [s["key"] for s in samples] == [f"train-{i:06d}" for i in range(6)]
    # lowest, middle and highest specificity captions
    assert [spec for spec, _ in samples[0]["captions"]] == [0, 4, 7]
    assert not list(tmp_path.glob(".*tmp*"))
