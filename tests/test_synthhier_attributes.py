"""SynthHier attribute zero-shot tasks: eval/zeroshot_{colour,count,size,texture} (labels from the generator's
metadata, in-distribution prompts), adding them to an older directory, a zero-shot run end to end, the table
columns, and the workflow plan (config `data.synthhier.attributes`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from meru.cli import main as cli_main
from meru.data import synthhier as sh
from meru.data.captions import ATTRIBUTE_TEMPLATES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def out(synthhier):
    return synthhier(300, 100, shard_size=120)  # the same directory test_synthhier.py uses


def _samples(set_dir: Path) -> dict[str, dict[str, bytes]]:
    """{key: {member: bytes}} of every shard of ``set_dir/test``, read with the standard library."""
    samples: dict[str, dict[str, bytes]] = {}
    n = int((set_dir / "test" / "nshards.txt").read_text())
    for i in range(n):
        with tarfile.open(set_dir / "test" / f"{i}.tar") as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return samples


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_attribute_sets_label_each_image_with_its_drawn_value(out):
    info = json.loads((out / "info.json").read_text())
    assert info["version"] == sh.GENERATOR_VERSION >= 2 and info["attribute_sets"] == list(sh.ATTRIBUTE_SETS)
    assert set(sh.ATTRIBUTE_SETS) == set(info["attributes"])  # one task per attribute the generator draws
    leaf = _samples(out / "eval" / "zeroshot_shape")
    pool = {row["text"] for row in map(json.loads, _lines(out / "eval" / "captions.jsonl"))}
    for attr in sh.ATTRIBUTE_SETS:
        z = out / "eval" / f"zeroshot_{attr}"
        values = info["attributes"][attr]
        assert (z / "dataset_type.txt").read_text().strip() == "classification"
        assert json.loads((z / "class_values.json").read_text()) == values
        classnames = _lines(z / "classnames.txt")
        assert classnames == [sh.phrase("object", {attr: v}) for v in values]
        assert _lines(z / "zeroshot_classification_templates.txt") == list(ATTRIBUTE_TEMPLATES)
        # every prompt is a training caption: the root with this one attribute and a caption prefix
        for template in ATTRIBUTE_TEMPLATES:
            for c in classnames:
                prompt = template.format(c=c)
                assert any(prompt == p + text for p in sh.PREFIXES for text in pool if text.startswith(c))
        samples = _samples(z)
        assert list(samples) == list(leaf)  # the same test images, in the same order
        labels = []
        for key, s in samples.items():
            assert s["png"] == leaf[key]["png"] and s["json"] == leaf[key]["json"]
            meta = json.loads(s["json"])
            labels.append(int(s["cls"]))
            assert values[labels[-1]] == meta["attributes"][attr]
        assert sorted(set(labels)) == list(range(len(values)))  # 100 images show every value


def test_prompts_read_as_captions():
    assert sh.attribute_classnames("count") == ["one object", "two objects", "three objects"]
    assert sh.attribute_classnames("colour")[0] == "a red object"
    assert sh.attribute_classnames("size") == ["a small object", "a large object"]
    assert "a photo of an object on stripes." in [
        t.format(c=c) for t in ATTRIBUTE_TEMPLATES for c in sh.attribute_classnames("texture")
    ]


def _as_version_1(src: Path, dst: Path) -> None:
    """A copy of ``src`` as the older generator wrote it: no attribute sets, version 1."""
    shutil.copytree(src, dst)
    for attr in sh.ATTRIBUTE_SETS:
        shutil.rmtree(dst / "eval" / f"zeroshot_{attr}")
    info = json.loads((dst / "info.json").read_text())
    info["version"] = 1
    del info["attribute_sets"]
    (dst / "info.json").write_text(json.dumps(info, indent=1) + "\n")


def _manifest_without_run(path: Path) -> dict:
    m = json.loads(path.read_text())
    return {k: v for k, v in m.items() if k not in ("created", "command")}


def test_add_attribute_sets_to_an_older_directory(out, tmp_path, capsys):
    old = tmp_path / out.name  # the same name: the card's title names the directory
    _as_version_1(out, old)
    assert sh.missing_attribute_sets(old) == list(sh.ATTRIBUTE_SETS)
    error = sh.attribute_sets_error(old, ["colour", "size"])
    assert "eval/zeroshot_colour, eval/zeroshot_size" in error and f"--add-attribute-sets --out {old}" in error
    train_before = {p.name: p.read_bytes() for p in (old / "train").iterdir()}
    assert cli_main(["synth", "--out", str(old), "--add-attribute-sets"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == list(sh.ATTRIBUTE_SETS)
    assert sh.missing_attribute_sets(old) == [] and sh.attribute_sets_error(old, sh.ATTRIBUTE_SETS) is None
    assert {p.name: p.read_bytes() for p in (old / "train").iterdir()} == train_before
    fresh = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert sorted(p.relative_to(old) for p in old.rglob("*") if p.is_file()) == fresh  # no temporary left
    for rel in fresh:  # equal to a fresh `meru synth`, but for when and how each manifest was made
        if rel.name == "manifest.json":
            assert _manifest_without_run(old / rel) == _manifest_without_run(out / rel), rel
        else:
            assert (old / rel).read_bytes() == (out / rel).read_bytes(), rel
    assert cli_main(["synth", "--out", str(old), "--add-attribute-sets"]) == 0  # nothing left to add
    assert json.loads(capsys.readouterr().out)["added"] == []
    assert cli_main(["synth", "--out", str(tmp_path / "none"), "--add-attribute-sets"]) == 2
    assert "info.json is missing" in capsys.readouterr().err


def test_zeroshot_on_attribute_sets_end_to_end(out, tmp_path):
    """A tiny CLIP embeds the leaf and two attribute sets; `meru evaluate --task zeroshot` scores them and the
    zero-shot table puts the attributes after the level, never clobbering its model-size column."""
    import torch

    from meru.models import build_model
    from meru.models.checkpoints import save_model
    from meru.records import EmbeddingCache, load_metric_records
    from meru.reporting import tables

    torch.set_num_threads(1)
    torch.manual_seed(0)
    save_model(build_model("clip", "tiny"), tmp_path / "model.pt")
    names = ["shape", "size", "colour"]
    argv = ["embed", "--checkpoint", str(tmp_path / "model.pt"), "--batch-size", "64", "--no-prompt-sets"]
    for name in names:
        argv += ["--evalset", str(out / "eval" / f"zeroshot_{name}"), "--name", f"synthhier-{name}"]
        argv += ["--out", str(tmp_path / f"{name}.pt")]
    assert cli_main(argv) == 0
    metrics = tmp_path / "metrics" / "clip-tiny-s0"
    for name in names:
        cache = EmbeddingCache.load(tmp_path / f"{name}.pt", "classification")
        if name != "shape":
            values = json.loads((out / "eval" / f"zeroshot_{name}" / "class_values.json").read_text())
            drawn = [
                values.index(m["attributes"][name]) for m in map(json.loads, _metas(out / "eval" / "zeroshot_shape"))
            ]
            assert cache.labels.tolist() == drawn and cache.classnames == sh.attribute_classnames(name)
        argv = ["evaluate", "--task", "zeroshot", "--embeddings", str(tmp_path / f"{name}.pt"), "--n-boot", "20"]
        assert (
            cli_main(argv + ["--out", str(metrics / f"zeroshot-synthhier-{name}.json"), "--label", "clip-tiny-s0"]) == 0
        )
    records = load_metric_records(tmp_path / "metrics")
    by_name = {r.dataset: r for r in records}
    assert set(by_name) == {f"synthhier-{n}" for n in names}
    for name, n_classes in (("size", 2), ("colour", 6)):
        r = by_name[f"synthhier-{name}"]
        assert r.details["n_classes"] == n_classes and len(r.per_item["correct"]) == 100
        assert r.metrics["top1"] == pytest.approx(100 * sum(r.per_item["correct"]) / 100)
        assert "tie" not in r.metrics  # attributes are flat: no tree metrics
    spec = next(s for s in tables.SPECS if s.name == "zeroshot")
    wide = tables.wide(tables.build(records, spec, n_boot=20), spec)
    assert list(wide.columns) == ["metric", "model", "size", "seeds", "shape", "colour (attribute)", "size (attribute)"]
    assert set(wide["size"]) == {"tiny"}


def _metas(set_dir: Path) -> list[bytes]:
    return [s["json"] for s in _samples(set_dir).values()]


def _plan(*configs: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--configfile", *configs],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def _data_override(data: Path, extra: str = "") -> str:
    """A config over configs/smoke.yaml with its own name and data directory (no local data is read)."""
    return f"name: smoke-attrs\ndata_dir: {data}\ntrain: {{data: {{train: {data}/synthhier/train}}}}\n{extra}"


def test_workflow_plans_attribute_tasks(tmp_path):
    data = tmp_path / "data"
    (tmp_path / "plain.yaml").write_text(_data_override(data))
    r = _plan("configs/smoke.yaml", str(tmp_path / "plain.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    smoke = _counts(r.stdout)
    assert "zeroshot_colour" not in r.stdout  # default: no attribute tasks
    (tmp_path / "attrs.yaml").write_text(
        _data_override(data, "data: {synthhier: {attributes: [colour, count, size, texture]}}\n")
    )
    r = _plan("configs/smoke.yaml", str(tmp_path / "attrs.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    counts = _counts(r.stdout)
    runs = smoke["train"]
    assert counts["evaluate_zeroshot"] == smoke["evaluate_zeroshot"] + 4 * runs  # 4 attributes per run
    assert counts["evaluate_prompts"] == smoke["evaluate_prompts"]  # no prompt sensitivity for attributes
    assert counts["embed_synthhier"] == smoke["embed_synthhier"] == runs  # still one embedding job per run
    for attr in sh.ATTRIBUTE_SETS:
        assert f"--evalset {data}/synthhier/eval/zeroshot_{attr} --name synthhier-{attr}" in r.stdout
        assert f"zeroshot-synthhier-{attr}.json" in r.stdout


def test_workflow_refuses_an_older_synthhier(out, tmp_path):
    data = tmp_path / "data"
    _as_version_1(out, data / "synthhier")
    (tmp_path / "attrs.yaml").write_text(_data_override(data, "data: {synthhier: {attributes: [texture]}}\n"))
    r = _plan("configs/smoke.yaml", str(tmp_path / "attrs.yaml"))
    assert r.returncode == 1
    assert f"{data}/synthhier has no eval/zeroshot_texture" in r.stderr and "--add-attribute-sets" in r.stderr
