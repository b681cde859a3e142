"""Broken records and files (issue 22): each gives one line naming the file and field, exit code 2, and leaves
nothing finished-looking behind. Cases run through ``meru.cli.main`` (the `meru` command's entry; an escaping
exception would be a traceback and fails the test); one runs as a real subprocess end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from meru.cli import main
from meru.data.manifest import write_manifest
from meru.records import EmbeddingCache
from meru.spaces import get_space

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_RECORD = ROOT / "results/reference/default/metrics/meru-cpu-conv-s0/zeroshot-synthhier-shape.json"


def _one_line(capsys, rc, *needles):
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert len(err) < 600, err
    for n in needles:
        assert n in err, (n, err)
    return err


def _cache_dict(**change) -> dict:
    """A valid classification cache's dict with ``change`` applied (``space`` given as a record)."""
    cache = EmbeddingCache(
        task="classification",
        space=get_space("meru", 1.0),
        dataset="x",
        image_emb=torch.randn(4, 8),
        labels=torch.tensor([0, 1, 0, 1]),
        classnames=["a", "b"],
        templates=["{}"],
        class_text_raw=torch.randn(1, 2, 8),
    )
    return {**cache.to_dict(), **change}


BAD_CACHES = {
    "curv-zero": (_cache_dict(space={"name": "lorentz", "kind": "meru", "curv": 0.0, "min_radius": 0.1}), "space.curv"),
    "curv-negative": (
        _cache_dict(space={"name": "lorentz", "kind": "meru", "curv": -1.0, "min_radius": 0.1}),
        "space.curv = -1.0",
    ),
    "image-emb-1d": (_cache_dict(image_emb=torch.randn(4), labels=torch.tensor([0, 1, 0, 1])), "image_emb"),
    "width-mismatch": (_cache_dict(class_text_raw=torch.randn(1, 2, 5)), "different widths"),
    "label-out-of-range": (_cache_dict(labels=torch.tensor([0, 1, 0, 7])), "labels"),
    "classnames-string": (_cache_dict(classnames="ab"), "classnames"),
}


@pytest.mark.parametrize("case", sorted(BAD_CACHES))
def test_bad_embedding_cache_is_one_line(tmp_path, capsys, case):
    data, needle = BAD_CACHES[case]
    torch.save(data, tmp_path / "emb.pt")
    out = tmp_path / "m.json"
    rc = main(["evaluate", "--task", "zeroshot", "--embeddings", str(tmp_path / "emb.pt"), "--out", str(out)])
    _one_line(capsys, rc, "emb.pt", needle)
    assert not out.exists()


def _metrics_dir(tmp_path, **change) -> Path:
    record = json.loads(REFERENCE_RECORD.read_text())
    for key, value in change.items():
        if key == "metric":
            record["metrics"][next(iter(record["metrics"]))] = value
        else:
            record[key] = value
    (tmp_path / "metrics" / "run").mkdir(parents=True)
    (tmp_path / "metrics" / "run" / "zeroshot.json").write_text(json.dumps(record))
    return tmp_path / "metrics"


@pytest.mark.parametrize(
    "command, change, needle",
    [
        ("claims", {"metrics": [1, 2]}, "metrics is a list, not an object"),
        ("claims", {"metric": "high"}, "= 'high' is not a finite number"),
        ("tables", {"metric": "high"}, "= 'high' is not a finite number"),
        ("tables", {"seed": -3}, "seed = -3"),
        ("claims", {"intervals": {"top1": [1]}}, "intervals.top1"),
    ],
)
def test_bad_metric_record_is_one_line(tmp_path, capsys, command, change, needle):
    metrics = _metrics_dir(tmp_path, **change)
    rc = main([command, "--metrics", str(metrics), "--out", str(tmp_path / "out")])
    _one_line(capsys, rc, "zeroshot.json", needle)
    assert not list((tmp_path / "out").glob("*.md")) if (tmp_path / "out").exists() else True


def _train_argv(tmp_path, data) -> list[str]:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model: {{kind: meru, size: tiny}}\ndata: {{train: {data}, batch_size: 4, num_workers: 0, shuffle_buffer: 4}}\n"
        "optim: {lr: 1.0e-3, warmup_steps: 1, total_steps: 2}\nruntime: {tensorboard: false, device: cpu}\n"
    )
    return [
        "train",
        "--config",
        str(cfg),
        "--model",
        "meru",
        "--size",
        "tiny",
        "--seed",
        "0",
        "--out",
        str(tmp_path / "run"),
    ]


def _empty_shards(directory: Path, promised: int) -> None:
    directory.mkdir(parents=True)
    for i in range(2):
        tarfile.open(directory / f"{i}.tar", "w").close()
    write_manifest(directory, "t", "test", [("0.tar", promised), ("1.tar", promised)])


@pytest.mark.parametrize("promised", [0, 4], ids=["manifest-says-empty", "tars-empty"])
def test_training_set_of_empty_shards_is_one_line(tmp_path, capsys, promised):
    _empty_shards(tmp_path / "data", promised)
    rc = main(_train_argv(tmp_path, tmp_path / "data"))
    _one_line(capsys, rc, "no usable sample" if promised else "are empty")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_manifest_path_outside_the_dataset_is_refused(tmp_path, capsys):
    _empty_shards(tmp_path / "outside", 0)
    (tmp_path / "data").mkdir()
    shutil.copy(tmp_path / "outside" / "0.tar", tmp_path / "data" / "0.tar")
    write_manifest(tmp_path / "data", "t", "test", [("0.tar", 4)])
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    manifest["shards"][0]["path"] = "../outside/0.tar"
    (tmp_path / "data" / "manifest.json").write_text(json.dumps(manifest))
    rc = main(_train_argv(tmp_path, tmp_path / "data"))
    _one_line(capsys, rc, "manifest.json", "shards[0].path = '../outside/0.tar' points outside")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_hierarcaps_csv_short_row_is_one_line(tmp_path, capsys):
    (tmp_path / "hierarcaps_test.csv").write_text("id,captions,image_url\n1,a => b => c => d,http://x/1.jpg\n2,a\n")
    rc = main(["evalsets", "prepare", "--dataset", "hierarcaps", "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "hierarcaps_test.csv: line 3 has fewer fields" in err
    assert not (tmp_path / "test").exists()


def test_reference_values_must_be_finite(tmp_path):
    from meru.reporting.reproduction import ReferenceError, read_published

    text = (ROOT / "meru/resources/reference_values.csv").read_text().splitlines()
    header, row = text[0], text[1].split(",")
    row[header.split(",").index("value")] = "inf"
    (tmp_path / "ref.csv").write_text(header + "\n" + ",".join(row) + "\n")
    with pytest.raises(ReferenceError, match=r"ref\.csv, row 2: value 'inf' is not a finite number"):
        read_published(tmp_path / "ref.csv")


def test_huge_config_value_is_echoed_short_in_a_real_process(tmp_path):
    """End to end: a 100k-character value gives one short line on stderr, exit 2, and no run directory."""
    argv = _train_argv(tmp_path, tmp_path / "data")
    cfg = Path(argv[2])
    cfg.write_text(cfg.read_text().replace("device: cpu", "device: " + "x" * 100_000))
    r = subprocess.run([sys.executable, "-m", "meru", *argv], capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[:2000]
    assert len(r.stderr.strip().splitlines()) == 1 and len(r.stderr) < 600, len(r.stderr)
    assert "runtime.device = 'xxxx" in r.stderr and "..." in r.stderr
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("sizes: {a: [\n", "not valid YAML"),
        (
            "sizes: {a: {image_tower: t, image_size: x, text_layers: 1, text_width: 32, text_heads: 2, "
            "context_length: 16, embed_dim: 32}}\n",
            "image_size must be integers > 0",
        ),
        ("vit_variants: {v: {image_size: 32, patch: -8, width: 32, depth: 1, heads: 2}}\n", "must be integers > 0"),
    ],
)
def test_bad_sizes_file_is_one_line(tmp_path, text, needle):
    from meru.models.registry import register_sizes_file

    (tmp_path / "sizes.yaml").write_text(text)
    with pytest.raises(ValueError, match=needle) as e:
        register_sizes_file(tmp_path / "sizes.yaml")
    assert "sizes.yaml" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("field, value", [("step", "x"), ("step", -1), ("kind", 5), ("model_kwargs", [1])])
def test_bad_checkpoint_metadata_is_one_line(tmp_path, capsys, field, value):
    from meru.models import build_model
    from meru.models.checkpoints import save_model

    save_model(build_model("meru", "tiny"), tmp_path / "model.pt")
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save({**blob, field: value}, tmp_path / "model.pt")
    (tmp_path / "pool.jsonl").write_text('{"text": "a cat"}\n')
    out = tmp_path / "e.pt"
    argv = ["embed", "--checkpoint", str(tmp_path / "model.pt"), "--text-pool", str(tmp_path / "pool.jsonl")]
    rc = main([*argv, "--out", str(out)])
    _one_line(capsys, rc, "model.pt", f"checkpoint field '{field}'")
    assert not out.exists()
