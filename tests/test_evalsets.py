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


# ----------------------------------------------------------------------------- open_evalset -> EvalSet


def _items(evalset, batch_size=3, num_workers=0):
    items = [it for batch in evalset.batches(batch_size, num_workers) for it in batch]
    return sorted(items, key=lambda it: it["order"])


def test_open_evalset_classification_fields_and_items(tmp_path):
    root = tmp_path / "zeroshot_leaf"
    samples = [{"__key__": f"s{i:03d}", "png": _img(i * 20), "cls": i % 3, "json": {"node": f"n{i}"}} for i in range(7)]
    _write_wds(root, samples, ["red", "green", "blue"], ["a photo of a {c}.", "a {c}."])
    (root / "class_nodes.json").write_text('["c.red", "c.green", "c.blue"]')
    es = ev.open_evalset(root, image_size=6)
    assert (es.name, es.task, es.split, es.num_items) == ("zeroshot_leaf", "classification", "test", None)
    assert es.classnames == ["red", "green", "blue"] and es.templates == ["a photo of a {c}.", "a {c}."]
    assert es.class_nodes == ["c.red", "c.green", "c.blue"] and es.hierarchies is None
    assert es.prompt_source == {"templates": "clip_benchmark", "classnames": "clip_benchmark"}
    assert list(es.prompt_sets) == ["single", "meru", "clip_benchmark"]
    for workers in (0, 2):  # shards read by different workers; "order" restores file order
        items = _items(es, 2, workers)
        assert [it["key"] for it in items] == [f"s{i:03d}" for i in range(7)]
        assert [it["label"] for it in items] == [i % 3 for i in range(7)]
        assert [it["meta"] for it in items] == [{"node": f"n{i}"} for i in range(7)]
        assert items[3]["image"].shape == (3, 6, 6) and float(items[3]["image"][0, 0, 0]) == pytest.approx(60 / 255)
    assert ev.open_evalset(root, image_size=6, name="synthhier-leaf").name == "synthhier-leaf"
    # the same folder as --root of a named set: the name is the one given, its prompts MERU's
    with pytest.warns(UserWarning, match="not verified"):  # 3 local classes are not CIFAR-10's 10
        named = ev.open_evalset("cifar10", root=root, image_size=6)
    assert named.name == "cifar10" and named.prompt_sets["meru"]["source"] == "meru_prompts.json:cifar10"


def test_open_evalset_retrieval_and_manifest_count(tmp_path):
    root = tmp_path / "retrieval"
    samples = [{"__key__": f"r{i}", "png": _img(i), "txt": f"caption {i} a\ncaption {i} b"} for i in range(4)]
    _write_wds(root, samples, dataset_type="retrieval")
    (root / "test" / "manifest.json").write_text('{"shards": [{"num_samples": 3}, {"num_samples": 1}]}')
    es = ev.open_evalset(str(root), image_size=8, name="synthhier-retrieval")
    assert (es.name, es.task, es.num_items) == ("synthhier-retrieval", "retrieval", 4)
    assert es.classnames is None and es.templates is None and es.prompt_sets is None
    items = _items(es)
    assert [it["captions"] for it in items] == [[f"caption {i} a", f"caption {i} b"] for i in range(4)]
    assert items[0]["image"].shape == (3, 8, 8)


def test_open_evalset_named_without_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--root"):
        ev.open_evalset("cifar10")


def test_text_pool(tmp_path):
    p = tmp_path / "captions.jsonl"
    p.write_text('{"text": "a cat.", "depth": 1}\n\n{"text": "an object.", "depth": 0}\n')
    pool = ev.open_text_pool(p)
    assert pool.name == "captions.jsonl" and pool.texts == ["a cat.", "an object."] and pool.rows[0]["depth"] == 1
    assert ev.open_text_pool(p, name="textpool-synthhier").name == "textpool-synthhier"
    p.write_text('{"txt": "x"}\n')
    with pytest.raises(KeyError, match="line 1 has no 'text'"):
        ev.open_text_pool(p)
    p.write_text("\n")
    with pytest.raises(ValueError, match="empty caption pool"):
        ev.open_text_pool(p)


def test_prompt_sets_for_synthhier_names():
    for name in ("synthhier-shape", "zeroshot_shape"):  # no MERU or clip-benchmark set: ImageNet's
        sets = ev.prompt_sets(name)
        assert sets["meru"]["templates"] == ev.meru_prompts()["templates"]["imagenet"]
        assert sets["clip_benchmark"]["source"].startswith("clip_benchmark:imagenet1k")


def _meru(*args, env_extra=None):
    """The real `meru` command in a user's environment (no HF_HUB_OFFLINE)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parent.parent), **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "meru", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


def test_prepare_unknown_dataset_suggests_close_names(tmp_path):
    r = _meru("evalsets", "prepare", "--dataset", "cifar1000", "--root", tmp_path)
    err = r.stderr.strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("meru evalsets prepare: error: --dataset 'cifar1000'") and "did you mean cifar100" in err


def test_prepare_offline_names_the_url_and_the_manual_path(tmp_path):
    """No network (every request goes to a closed loopback proxy port): one line with CIFAR-10's URL and the
    file to place by hand."""
    refused = {k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
    r = _meru("evalsets", "prepare", "--dataset", "cifar10", "--root", tmp_path, env_extra={**refused, "no_proxy": ""})
    err = r.stderr.strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in err
    assert f"put it at {tmp_path / 'cifar-10-python.tar.gz'}" in err
