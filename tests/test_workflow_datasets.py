"""The workflow's real-dataset path, run (not dry-run) on generated offline fixtures.

* a prepared clip-benchmark dataset: MNIST in torchvision's layout, written as idx files by the test and
  "prepared" with `meru evalsets prepare --dataset mnist` (no download: the files are there), then the
  workflow `embed` and `evaluate_zeroshot` rules on it;
* your own dataset: a wds-layout folder at an absolute path with an upper-case name, `train/` beside
  `test/`, zero-shot and a linear probe trained on its own `train` split;
* the pretrained path: the checkpoints come through the `released_checkpoint` rule from `file://` URLs, one
  of them a random ViT-S/16 in the released official file format (tests/official_format.py);
* ImageNet: a torchvision-layout folder with real wnids (`meta.bin`, `val/<wnid>/`, `train/<wnid>/`), zero-shot
  over the 1,000 classes with the WordNet hierarchy metrics and the linear probe, as configs/pretrained.yaml.
"""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent


def write_mnist_raw(root: Path, n_test: int = 12, n_train: int = 4, seed: int = 0) -> np.ndarray:
    """torchvision MNIST raw files (idx format, uncompressed) under ``root/MNIST/raw``; returns test labels."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    labels = {}
    for split, n in (("t10k", n_test), ("train", n_train)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels[split] = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(
            np.array([0x803, n, 28, 28], dtype=">i4").tobytes() + images.tobytes()
        )
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(
            np.array([0x801, n], dtype=">i4").tobytes() + labels[split].tobytes()
        )
    return labels["t10k"]


def write_wds_classification(folder: Path, classes, n_per_split: dict, seed: int = 1) -> None:
    """A clip-benchmark wds-layout classification set with the given splits (one shard each)."""
    import webdataset as wds
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in n_per_split.items():
        (folder / split).mkdir(parents=True)
        with wds.TarWriter(str(folder / split / "0.tar")) as w:
            for i in range(n):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(buf, format="PNG")
                w.write({"__key__": f"{split}{i:03d}", "png": buf.getvalue(), "cls": i % len(classes)})
        (folder / split / "nshards.txt").write_text("1\n")
    (folder / "classnames.txt").write_text("\n".join(classes) + "\n")
    (folder / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    (folder / "dataset_type.txt").write_text("classification\n")


def env():
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e["PYTHONPATH"] = f"{ROOT}{os.pathsep}{e.get('PYTHONPATH', '')}"
    return e


@pytest.mark.slow
def test_prepared_and_own_datasets_run_through_the_workflow(tmp_path):
    from meru.models import build_model
    from meru.models.checkpoints import save_model

    torch.manual_seed(0)
    save_model(build_model("meru", "tiny"), tmp_path / "released.pt")
    evalsets = tmp_path / "evalsets"
    labels = write_mnist_raw(evalsets / "mnist")
    r = subprocess.run(
        [sys.executable, "-m", "meru", "evalsets", "prepare", "--dataset", "mnist", "--root", str(evalsets / "mnist")],
        check=False,
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
    )
    assert r.returncode == 0 and "12 samples" in r.stdout, r.stdout + r.stderr
    own = tmp_path / "elsewhere" / "My_Set"
    write_wds_classification(own, ["red thing", "blue thing", "green thing"], {"test": 6, "train": 9})

    cfg = {
        "name": "fixture",
        "results_dir": str(tmp_path / "results"),
        "runs_dir": str(tmp_path / "runs"),
        "data_dir": str(tmp_path / "data"),
        "models": ["meru"],
        "sizes": ["tiny"],
        "seeds": [0],
        "data": {"source": "synthhier"},
        "pretrained": {
            "checkpoints": [{"kind": "meru", "size": "tiny", "url": f"file://{tmp_path}/released.pt", "sha256": None}]
        },
        "evaluation": {
            "synthhier": False,
            "evalsets_root": str(evalsets),
            "zeroshot": ["mnist", str(own)],
            "linear_probe": [str(own)],
            "batch_size": 8,
            "num_workers": 0,
        },
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    res, label = tmp_path / "results", "meru-tiny-released"
    targets = [
        res / "embeddings" / label / "mnist.pt",
        res / "metrics" / label / "zeroshot-mnist.json",
        res / "metrics" / label / "zeroshot-My_Set.json",
        res / "metrics" / label / "linear-probe-My_Set.json",
    ]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            *map(str, targets),
            "--cores",
            "1",
            "--nolock",
            "--configfile",
            str(tmp_path / "cfg.yaml"),
        ],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        env=env(),
        timeout=600,
    )
    logs = "\n".join(p.read_text() for p in (res / "logs").rglob("*.log")) if (res / "logs").is_dir() else ""
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + logs[-3000:]

    cache = torch.load(targets[0], weights_only=True)
    assert cache["dataset"] == "mnist" and cache["task"] == "classification"
    assert cache["labels"].tolist() == labels.tolist() and cache["image_emb"].shape[0] == 12
    assert cache["classnames"][:2] == ["0", "1"] and len(cache["classnames"]) == 10
    assert cache["prompt_source"]["templates"] == "meru"  # --evalset mnist picks MERU's prompts
    zs = json.loads(targets[1].read_text())
    assert zs["n"] == 12 and zs["label"] == label
    own_zs = json.loads(targets[2].read_text())
    assert own_zs["n"] == 6 and own_zs["dataset"] == "My_Set"
    lp = json.loads(targets[3].read_text())
    train = torch.load(res / "embeddings" / label / "My_Set@train.pt", weights_only=True)
    assert train["image_emb"].shape[0] == 9 and train["keys"][0] == "train000"
    assert lp["n"] == 6 and lp["provenance"]["train_embeddings"].endswith("My_Set@train.pt")
    sha = (tmp_path / "runs" / "released" / f"{label}.sha256").read_text().split()[0]
    import hashlib

    assert sha == hashlib.sha256((tmp_path / "released.pt").read_bytes()).hexdigest()


def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    cfg = {
        "name": "x",
        "models": ["meru"],
        "sizes": ["tiny"],
        "seeds": [0],
        "data": {"source": "synthhier"},
        "evaluation": {"synthhier": False, "zeroshot": [str(tmp_path / "nope" / "Mine")]},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--nolock", "--configfile", str(tmp_path / "cfg.yaml")],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("config error:")]
    assert len(errors) == 1 and f"evaluation.zeroshot = '{tmp_path}/nope/Mine' is not a directory" in errors[0], (
        r.stderr
    )


def write_wds_retrieval(folder: Path, n: int = 6, seed: int = 2) -> None:
    """A COCO/Flickr-style retrieval set in clip-benchmark's wds layout (image + 2 captions per sample)."""
    import webdataset as wds
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "test").mkdir(parents=True)
    with wds.TarWriter(str(folder / "test" / "0.tar")) as w:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(buf, format="JPEG")
            w.write({"__key__": f"{i:05d}", "jpg": buf.getvalue(), "txt": f"a photo number {i}\nimage {i} of a scene"})
    (folder / "test" / "nshards.txt").write_text("1\n")
    (folder / "dataset_type.txt").write_text("retrieval\n")


@pytest.mark.slow
def test_pretrained_config_runs_end_to_end_on_fixtures(tmp_path):
    """configs/pretrained.yaml with its checkpoints, datasets and sizes swapped for fixtures: released
    checkpoints through file:// URLs, a prepared clip-benchmark dataset (MNIST, also the linear probe on
    its train split), COCO / Flickr30K-style retrieval sets; the same rules carry them to tables, plots
    and the provenance record."""
    from official_format import save_official

    from meru.models import build_model
    from meru.models.checkpoints import save_model

    cfg = yaml.safe_load((ROOT / "configs" / "pretrained.yaml").read_text())
    torch.manual_seed(0)
    # MERU: a random ViT-S/16 in the released file format (the smallest size an official file can have: the
    # loader tells S/B/L apart by the ViT width); CLIP: our format at the test size.
    save_official(build_model("meru", "vit-s16"), tmp_path / "meru_vit_s.pth")
    save_model(build_model("clip", "tiny"), tmp_path / "clip.pt")
    evalsets = tmp_path / "evalsets"
    write_mnist_raw(evalsets / "mnist")
    for name in ("coco", "flickr30k"):
        write_wds_retrieval(evalsets / name)
    cfg.update(results_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"), data_dir=str(tmp_path / "data"))
    cfg["pretrained"]["checkpoints"] = [
        {"kind": "meru", "size": "vit-s16", "url": f"file://{tmp_path}/meru_vit_s.pth", "sha256": None},
        {"kind": "clip", "size": "tiny", "url": f"file://{tmp_path}/clip.pt", "sha256": None},
    ]
    cfg["evaluation"].update(
        evalsets_root=str(evalsets),
        zeroshot=["mnist"],
        linear_probe=["mnist"],
        imagenet_hierarchy=False,
        hierarcaps=False,  # HierarCaps has fixture tests of its own (tests/test_hierarcaps.py); it needs COCO
        batch_size=8,
        num_workers=0,
    )
    assert cfg["evaluation"]["retrieval"] == ["coco", "flickr30k"]
    cfg["resources"]["embed"].update(threads=1, gpu=0, mem_mb=2000)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--nolock", "--configfile", str(tmp_path / "cfg.yaml")],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        env=env(),
        timeout=900,
    )
    res = tmp_path / "results"
    logs = (
        "\n".join(f"{p}:\n{p.read_text()[-1500:]}" for p in (res / "logs").rglob("*.log"))
        if (res / "logs").is_dir()
        else ""
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + logs[-6000:]
    for label in ("meru-vit-s16-released", "clip-tiny-released"):
        for name in ("zeroshot-mnist", "retrieval-coco", "retrieval-flickr30k", "linear-probe-mnist"):
            rec = json.loads((res / "metrics" / label / f"{name}.json").read_text())
            assert rec["label"] == label and rec["n"] == (12 if "mnist" in name else 6)
    # the official-format file was downloaded as is and embedded as a MERU ViT-S/16 (hyperbolic geometry)
    released = tmp_path / "runs" / "released" / "meru-vit-s16-released.pth"
    assert torch.load(released, weights_only=True).keys() == {"model"}
    cache = torch.load(res / "embeddings" / "meru-vit-s16-released" / "mnist.pt", weights_only=True)
    assert cache["kind"] == "meru" and cache["size"] == "vit-s16" and cache["image_emb"].shape == (12, 512)
    assert cache["space"]["name"] == "lorentz" and cache["space"]["curv"] == pytest.approx(1.0)
    assert (res / "PROVENANCE.md").is_file() and (res / "tables" / "zeroshot.csv").is_file()
    assert (res / "plots" / "zeroshot_bars.png").is_file()
    assert (res / "plots" / "scaling.png").is_file()  # two model sizes (vit-s16, tiny): the scaling figure
    zs = (res / "tables" / "zeroshot.csv").read_text()
    assert "mnist" in zs and "MERU" in zs and "CLIP" in zs  # the paper-layout table names models by display name


def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1k wnids in class order (``meru/resources/imagenet_wnids.txt``)."""
    lines = (ROOT / "meru" / "resources" / "imagenet_wnids.txt").read_text().splitlines()
    return [w.strip() for w in lines if w.strip() and not w.startswith("#")]


def write_imagenet_folder(root: Path, n_classes: int = 4, n_val: int = 3, n_train: int = 2, seed: int = 3) -> list:
    """ImageNet as torchvision's ``ImageNet`` leaves it after unpacking the devkit and archives (what
    clip-benchmark's ``imagenet1k`` and ``meru evalsets prepare --dataset imagenet`` read): ``root/meta.bin``
    (``(wnid -> class names, val wnids)``, all 1,000 classes) and ``root/{val,train}/<wnid>/*.JPEG``.

    Only the first ``n_classes`` wnids get images: torchvision numbers the class folders present in sorted
    order, so with a prefix of the sorted wnids those numbers are the 1,000-class indices. Returns the val labels.
    """
    from PIL import Image

    wnids = imagenet_wnids()
    names = json.loads((ROOT / "meru" / "resources" / "meru_prompts.json").read_text())["classnames"]["imagenet"]
    rng = np.random.default_rng(seed)
    labels, val_wnids = [], []
    for split, n in (("val", n_val), ("train", n_train)):
        for c, wnid in enumerate(wnids[:n_classes]):
            (root / split / wnid).mkdir(parents=True)
            for j in range(n):
                name = f"ILSVRC2012_val_{len(val_wnids) + 1:08d}.JPEG" if split == "val" else f"{wnid}_{j + 1}.JPEG"
                Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(root / split / wnid / name)
                if split == "val":
                    labels.append(c)
                    val_wnids.append(wnid)
    torch.save(({w: (n,) for w, n in zip(wnids, names)}, val_wnids), root / "meta.bin")
    return labels


def tree_distances(edges_file: Path, pairs) -> list[int]:
    """Edges between two nodes of a ``parent child`` tree (written here from the definition, for the check)."""
    parent = {child: par for par, child in (line.split() for line in edges_file.read_text().splitlines() if line)}

    def path(v):
        out = [v]
        while out[-1] in parent:
            out.append(parent[out[-1]])
        return out

    dists = []
    for a, b in pairs:
        pa, pb = path(a), path(b)
        common = next(v for v in pa if v in set(pb))
        dists.append(pa.index(common) + pb.index(common))
    return dists


@pytest.mark.slow
def test_imagenet_folder_with_wnids_gets_hierarchical_metrics(tmp_path):
    """configs/pretrained.yaml's ImageNet evaluation (zero-shot over the 1,000 classes with the WordNet
    hierarchy metrics, linear probe on the train split) on an ImageNet-style folder with real wnids."""
    from meru.models import build_model
    from meru.models.checkpoints import save_model

    cfg = yaml.safe_load((ROOT / "configs" / "pretrained.yaml").read_text())
    torch.manual_seed(0)
    save_model(build_model("meru", "tiny"), tmp_path / "meru.pt")
    evalsets, data = tmp_path / "evalsets", tmp_path / "data"
    labels = write_imagenet_folder(evalsets / "imagenet")
    # The `imagenet_tree` rule builds this file from WordNet 3.0 (`meru imagenet-tree`, byte-identical to the
    # shipped copy: tests/test_wordnet_tree.py); placing the shipped copy keeps this test independent of WordNet.
    data.mkdir()
    tree = data / "imagenet_tree.txt"
    shutil.copyfile(ROOT / "meru" / "resources" / "imagenet_isa.txt", tree)
    cfg.update(results_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"), data_dir=str(data))
    cfg["pretrained"]["checkpoints"] = [
        {"kind": "meru", "size": "tiny", "url": f"file://{tmp_path}/meru.pt", "sha256": None}
    ]
    assert cfg["evaluation"]["imagenet_hierarchy"] is True and cfg["evaluation"]["linear_probe"] == ["imagenet"]
    cfg["evaluation"].update(
        evalsets_root=str(evalsets), zeroshot=["imagenet"], retrieval=[], hierarcaps=False, batch_size=8, num_workers=0
    )
    cfg["resources"]["embed"].update(threads=1, gpu=0, mem_mb=2000)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    res, label = tmp_path / "results", "meru-tiny-released"
    targets = [res / "tables" / "hierarchy_distance.csv", res / "metrics" / label / "linear-probe-imagenet.json"]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            *map(str, targets),
            "--cores",
            "2",
            "--nolock",
            "--configfile",
            str(tmp_path / "cfg.yaml"),
        ],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        env=env(),
        timeout=600,
    )
    logs = "\n".join(p.read_text()[-1500:] for p in (res / "logs").rglob("*.log")) if (res / "logs").is_dir() else ""
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + logs[-4000:]
    assert not (res / "logs" / "data" / "imagenet_tree.log").exists()  # the placed tree was used, not rebuilt

    cache = torch.load(res / "embeddings" / label / "imagenet.pt", weights_only=True)
    wnids = imagenet_wnids()
    assert cache["labels"].tolist() == labels and cache["class_nodes"] == wnids and len(cache["classnames"]) == 1000
    rec = json.loads((res / "metrics" / label / "zeroshot-imagenet.json").read_text())
    assert rec["n"] == len(labels) and rec["details"]["n_classes"] == 1000
    assert rec["provenance"]["tree"].endswith("data/imagenet_tree.txt")
    for name in ("tie", "lca", "jaccard", "h_precision", "h_recall", "lca_height"):
        assert name in rec["metrics"] and name in rec["intervals"], name
    items = rec["per_item"]
    assert items["label"] == labels
    expected_tie = tree_distances(tree, [(wnids[p], wnids[t]) for p, t in zip(items["pred"], items["label"])])
    assert items["tie"] == expected_tie and rec["metrics"]["tie"] == pytest.approx(np.mean(expected_tie))
    lp = json.loads(targets[1].read_text())
    assert lp["n"] == len(labels) and lp["provenance"]["train_embeddings"].endswith("imagenet@train.pt")
    table = (res / "tables" / "hierarchy_distance.csv").read_text()
    assert "ImageNet" in table or "imagenet" in table
