"""Evaluation datasets: MERU -> clip-benchmark mapping, local wds layout, MERU prompts, missing-data errors."""

from __future__ import annotations


import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from meru.data import evalsets as ev

MERU_ZEROSHOT = [
    "imagenet",
    "food101",
    "cifar10",
    "cifar100",
    "cub2011",
    "sun397",
    "cars",
    "aircraft",
    "dtd",
    "pets",
    "caltech101",
    "flowers102",
    "stl10",
    "eurosat",
    "resisc45",
    "country211",
    "mnist",
    "clevr",
    "pcam",
    "sst2",
]


def _write_wds(root, samples, classnames=None, templates=None, dataset_type=None, split="test", per_shard=3):
    (root / split).mkdir(parents=True)
    shards = [samples[i : i + per_shard] for i in range(0, len(samples), per_shard)]
    for k, chunk in enumerate(shards):
        with wds.TarWriter(str(root / split / f"{k}.tar")) as w:
            for s in chunk:
                w.write(s)
    (root / split / "nshards.txt").write_text(f"{len(shards)}\n")
    if classnames:
        (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    if templates:
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    if dataset_type:
        (root / "dataset_type.txt").write_text(dataset_type + "\n")


def _img(v):
    return Image.fromarray(np.full((8, 8, 3), v, dtype=np.uint8))


def test_local_wds_classification(tmp_path):
    root = tmp_path / "zeroshot_leaf"
    samples = [{"__key__": f"s{i:03d}", "png": _img(i * 20), "cls": i % 3, "json": {"node": f"n{i}"}} for i in range(7)]
    _write_wds(root, samples, ["red", "green", "blue"], ["a photo of a {c}.", "a {c}."])
    for name in (str(root), "whatever"):  # as name, or as root with a name
        ds = ev.build_eval_dataset(name, root, transform=lambda im: np.asarray(im))
        assert ds.classes == ["red", "green", "blue"]
        assert ds.templates == ["a photo of a {c}.", "a {c}."]
        got = list(ds)
        assert [int(y) for _, y in got] == [i % 3 for i in range(7)]
        assert [int(x[0, 0, 0]) for x, _ in got] == [i * 20 for i in range(7)]


def test_local_wds_retrieval(tmp_path):
    root = tmp_path / "retrieval"
    samples = [{"__key__": f"r{i}", "png": _img(i), "txt": f"caption {i} a\ncaption {i} b"} for i in range(4)]
    _write_wds(root, samples, dataset_type="retrieval")
    ds = ev.build_eval_dataset(str(root), tmp_path, transform=lambda im: im.size)
    assert ds.classes is None and ds.templates is None
    assert list(ds) == [((8, 8), [f"caption {i} a", f"caption {i} b"]) for i in range(4)]


def test_meru_prompts_on_local_copy(tmp_path):
    """A local wds copy of a MERU dataset (CUB is only available this way) gets MERU's prompts on request."""
    names = ev.meru_prompts()["classnames"]["cub2011"]
    root = tmp_path / "cub"
    _write_wds(root, [{"__key__": "a", "png": _img(1), "cls": 0}], [n.replace(" ", "_") for n in names], ["{c}"])
    ds = ev.build_eval_dataset("cub2011", root, prompts="meru")
    assert ds.templates == ["bird pics : {}.", "birding : {}.", "birds : {}.", "bird photography : {}."]
    assert ds.classes == names and ds.prompt_source == {"templates": "meru", "classnames": "meru"}
    ds = ev.build_eval_dataset("cub2011", root)  # default: the copy's own files
    assert ds.templates == ["{c}"] and ds.classes[0] == names[0].replace(" ", "_")


def test_meru_classnames_not_aligned_kept(tmp_path):
    root = tmp_path / "pets_copy"
    _write_wds(root, [{"__key__": "a", "png": _img(1), "cls": 0}], ["x", "y"], ["{c}"])
    with pytest.warns(UserWarning, match="not verified"):
        ds = ev.build_eval_dataset("pets", root, prompts="meru")
    assert ds.classes == ["x", "y"] and ds.templates == ["a photo of a {}, a type of pet."]


def test_clevr_reorder_matches_counts():
    """MERU's clevr labels are [10, 3..9]; clip-benchmark's vtab/clevr_count_all label i means count i+3."""
    names = ev.meru_prompts()["classnames"]["clevr"]
    reorder = ev.dataset_table()["clevr"]["meru_classnames_reorder"]
    assert [names[j] for j in reorder] == [str(i + 3) for i in range(8)]


def test_mapping_table_complete():
    table = ev.dataset_table()
    assert set(MERU_ZEROSHOT) | {"coco", "flickr30k"} == set(table)
    assert table["cub2011"]["clip_benchmark"] is None
    for d in ("sun397", "eurosat", "resisc45", "clevr"):
        assert table[d]["split_protocol"] == "different", d
    assert table["coco"]["task"] == table["flickr30k"]["task"] == "zeroshot_retrieval"
    assert all(table[d]["metric"] == "mean_per_class_accuracy" for d in MERU_ZEROSHOT)
    assert sorted(d for d in table if table[d]["linear_probe"]) == sorted(set(MERU_ZEROSHOT) - {"imagenet"})
    prompts = ev.meru_prompts()
    assert set(prompts["templates"]) == set(MERU_ZEROSHOT) == set(prompts["classnames"])
    assert all(len(prompts["classnames"][d]) == table[d]["num_classes"] for d in MERU_ZEROSHOT)
    assert prompts["templates"]["imagenet"][0] == "i took a picture : itap of a {}."
    md = ev.format_table(markdown=True)
    assert md.count("\n| ") == 22 and "| aircraft | classification | fgvc_aircraft |" in md


def test_imagenet_missing_names_path(tmp_path):
    with pytest.raises(ev.EvalDatasetUnavailable) as e:
        ev.build_eval_dataset("imagenet", tmp_path / "imagenet")
    msg = str(e.value)
    assert (
        str(tmp_path / "imagenet") in msg and "ILSVRC2012_img_val.tar" in msg and "ILSVRC2012_devkit_t12.tar.gz" in msg
    )
    assert not (tmp_path / "imagenet").exists()  # nothing created, nothing fetched


def test_cub_missing_explains(tmp_path):
    with pytest.raises(ev.EvalDatasetUnavailable, match="not in clip-benchmark"):
        ev.build_eval_dataset("cub2011", tmp_path)


def test_clip_benchmark_templates_cifar10(tmp_path, monkeypatch):
    """Torchvision CIFAR-10 files in clip-benchmark's root (a fake 1-batch copy): classes from batches.meta,
    templates from clip-benchmark's packaged list."""
    import pickle

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    data = np.zeros((2, 3072), dtype=np.uint8)
    for f in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        with open(base / f, "wb") as fh:
            pickle.dump({"data": data, "labels": [3, 5]}, fh)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": classes}, fh)
    import torchvision.datasets.cifar as tvc

    monkeypatch.setattr(tvc, "check_integrity", lambda *a, **k: True)  # md5 of our fake files differs
    monkeypatch.setattr(tvc.CIFAR10, "_check_integrity", lambda self: True)
    ds = ev.build_eval_dataset("cifar10", tmp_path)
    ds_m = ev.build_eval_dataset("cifar10", tmp_path, prompts="meru")
    assert ds.classes == classes and len(ds) == 2 and ds[0][1] == 3
    assert "a photo of a {c}." in ds.templates and len(ds.templates) == 18
    assert ds_m.templates[0] == "a photo of a {}." and ds_m.prompt_source["classnames"] == "meru"


def test_missing_torchvision_data_no_download(tmp_path):
    with pytest.raises(ev.EvalDatasetUnavailable, match="meru evalsets prepare"):
        ev.build_eval_dataset("cifar10", tmp_path)
