"""Embedding cache (`meru embed`) and the end-to-end path to strict metric JSON (`meru evaluate`).

Uses a tiny MERU model saved with save_model and tiny clip-benchmark wds sets written at test time
(tests/data/eval/make_tiny_sets.py).
"""

import json
import math

import pytest
import torch

from meru.evaluation import embed as E
from meru.evaluation import run as R
from meru.io import read_json, write_json
from meru.records import EmbeddingCache

from cli_helpers import cli, mk, tiny_sets_and_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    paths, ck = tiny_sets_and_model(d, "meru", run_seed=7)
    assert (
        cli(
            E, ["--checkpoint", ck, "--evalset", str(paths["zeroshot"]), "--out", str(d / "zs.pt"), "--batch-size", "4"]
        )
        == 0
    )
    assert (
        cli(
            E,
            [
                "--checkpoint",
                ck,
                "--evalset",
                str(paths["retrieval"]),
                "--out",
                str(d / "ret.pt"),
                "--batch-size",
                "2",
                "--num-workers",
                "2",
            ],
        )
        == 0
    )
    assert cli(E, ["--checkpoint", ck, "--text-pool", str(paths["pool"]), "--out", str(d / "pool.pt")]) == 0
    return d, paths


def test_cache_matches_the_model(setup):
    d, paths = setup
    from meru.models.checkpoints import load_model

    model = load_model(d / "model.pt")
    c = EmbeddingCache.load(d / "zs.pt", "classification")
    assert c.kind == "meru" and c.size == "tiny" and c.seed == 7
    assert c.keys == [f"img{i:04d}" for i in range(6)] and c.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert c.class_nodes == mk.CLASSES and c.meta[0]["true_captions"] == mk.TRUE["cat"]
    assert c.space.curv == pytest.approx(float(model.curv.exp()))
    # recompute image 3 independently: decode its PNG, resize short side + centre crop, encode
    import io
    import webdataset as wds
    from PIL import Image
    import torchvision.transforms.functional as TF

    s = [
        x
        for x in wds.WebDataset(str(paths["zeroshot"] / "test" / "0.tar"), shardshuffle=False)
        if x["__key__"] == "img0003"
    ][0]
    im = Image.open(io.BytesIO(s["png"])).convert("RGB")
    im = TF.center_crop(TF.resize(im, 32, TF.InterpolationMode.BICUBIC), 32)
    with torch.no_grad():
        x = TF.to_tensor(im)[None]
        torch.testing.assert_close(c.image_emb[3], model.encode_image(x)[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(c.image_feats[3], model.image_features(x)[0], rtol=1e-4, atol=1e-5)
        tok = model.tokenize(["an image of a dog."])
        torch.testing.assert_close(
            c.class_text_raw[1, 1], model.encode_text(tok, project=False)[0], rtol=1e-4, atol=1e-5
        )
    assert c.class_text_raw.shape == (2, 3, 32)


def test_retrieval_cache_keeps_order_with_workers(setup):
    d, _ = setup
    c = EmbeddingCache.load(d / "ret.pt", "retrieval")
    assert c.keys == [f"img{i:04d}" for i in range(6)]
    assert c.texts[:2] == ["a cat 0", "another caption"]
    assert c.text_to_image.tolist() == [0, 0, 1, 2, 3, 4, 5]
    p = EmbeddingCache.load(d / "pool.pt", "text-pool")
    assert p.texts == [r["text"] for r in mk.POOL] and p.specificity.tolist() == [r["specificity"] for r in mk.POOL]


def test_one_process_embeds_several_sources_like_separate_runs(setup, tmp_path):
    d, paths = setup
    outs = [tmp_path / "pool.pt", tmp_path / "zs.pt"]  # text pool first: order follows the command line
    assert (
        cli(
            E,
            [
                "--checkpoint",
                str(d / "model.pt"),
                "--text-pool",
                str(paths["pool"]),
                "--out",
                str(outs[0]),
                "--evalset",
                str(paths["zeroshot"]),
                "--out",
                str(outs[1]),
                "--batch-size",
                "4",
            ],
        )
        == 0
    )
    pool, zs = EmbeddingCache.load(outs[0], "text-pool"), EmbeddingCache.load(outs[1], "classification")
    torch.testing.assert_close(pool.text_emb, EmbeddingCache.load(d / "pool.pt").text_emb)
    torch.testing.assert_close(zs.image_emb, EmbeddingCache.load(d / "zs.pt").image_emb)
    assert zs.keys == EmbeddingCache.load(d / "zs.pt").keys


def test_embed_needs_one_out_per_source(setup, tmp_path, capsys):
    d, paths = setup
    argv = [
        "--checkpoint",
        str(d / "model.pt"),
        "--evalset",
        str(paths["zeroshot"]),
        "--text-pool",
        str(paths["pool"]),
        "--out",
        str(tmp_path / "a.pt"),
    ]
    assert cli(E, argv) == 2
    assert "2 source(s)" in capsys.readouterr().err and not (tmp_path / "a.pt").exists()


def test_name_travels_into_the_cache_in_command_line_order(setup, tmp_path, capsys):
    d, paths = setup
    outs = [tmp_path / "zs.pt", tmp_path / "pool.pt"]
    base = ["--checkpoint", str(d / "model.pt"), "--evalset", str(paths["zeroshot"]), "--name", "synthhier-leaf"]
    base += ["--out", str(outs[0]), "--text-pool", str(paths["pool"]), "--name", "textpool-synthhier"]
    assert cli(E, base + ["--out", str(outs[1]), "--batch-size", "4", "--no-prompt-sets"]) == 0
    assert EmbeddingCache.load(outs[0]).dataset == "synthhier-leaf"
    assert EmbeddingCache.load(outs[1]).dataset == "textpool-synthhier"
    assert EmbeddingCache.load(d / "zs.pt").dataset == "zeroshot_leaf"  # default: the directory name
    assert EmbeddingCache.load(d / "pool.pt").dataset == "captions.jsonl"  # default: the file name
    one_name = base[:6] + ["--out", str(tmp_path / "x.pt"), "--text-pool", str(paths["pool"]), "--out", str(outs[1])]
    assert cli(E, one_name) == 2
    assert "1 --name(s)" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def test_wrong_cache_task_is_a_clear_error(setup):
    d, _ = setup
    with pytest.raises(ValueError, match="retrieval"):
        EmbeddingCache.load(d / "zs.pt", "retrieval")
    with pytest.raises(FileNotFoundError, match="meru embed"):
        EmbeddingCache.load(d / "missing.pt")


@pytest.mark.parametrize("task", ["zeroshot", "retrieval", "linear-probe", "structure", "traversal"])
def test_evaluate_writes_strict_json(setup, task):
    d, paths = setup
    emb = d / ("ret.pt" if task == "retrieval" else "zs.pt")
    out = d / f"{task}.json"
    argv = ["--task", task, "--embeddings", str(emb), "--out", str(out), "--n-boot", "50", "--label", "meru-tiny-s7"]
    if task == "zeroshot":
        argv += ["--tree", str(paths["taxonomy"])]
    if task == "linear-probe":
        argv += ["--train-embeddings", str(emb)]
    if task in ("structure", "traversal"):
        argv += ["--text-pool", str(d / "pool.pt")]
    assert cli(R, argv) == 0
    rec = read_json(out)
    assert rec["task"] == task and rec["kind"] == "meru" and rec["size"] == "tiny" and rec["seed"] == 7
    assert rec["label"] == "meru-tiny-s7" and rec["dataset"] in ("zeroshot_leaf", "retrieval")
    assert rec["metrics"] and all(v is None or math.isfinite(v) for v in rec["metrics"].values())
    if task == "zeroshot":
        assert len(rec["per_item"]["correct"]) == 6 and "tie" in rec["metrics"]
        cb = read_json(d / "zeroshot.clip_benchmark.json")
        assert cb["metrics"]["acc1"] == pytest.approx(rec["metrics"]["top1"] / 100)
        assert cb["model"] not in ("meru", "clip")  # tables skip the side file
    if task == "retrieval":
        cb = read_json(d / "retrieval.clip_benchmark.json")
        assert cb["metrics"]["image_retrieval_recall@1"] == pytest.approx(rec["metrics"]["t2i_r1"] / 100)
        assert len(rec["per_item"]["t2i_rank"]) == 7
    if task == "traversal":
        paths = rec["plot"]["paths"]
        assert paths[0]["key"] == "img0000" and paths[0]["steps"][0]["t"] == 0.0


def test_evaluate_missing_input_fails_without_output(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert cli(R, ["--task", "zeroshot", "--embeddings", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    assert not out.exists() and "meru embed" in capsys.readouterr().err


def test_strict_json_writer(tmp_path):
    with pytest.raises(ValueError, match=r"\$\.metrics\.a"):
        write_json(tmp_path / "x.json", {"metrics": {"a": float("nan")}})
    assert not (tmp_path / "x.json").exists()
    write_json(tmp_path / "y.json", {"a": torch.tensor([1.5, float("inf")])}, nonfinite="null")
    assert json.loads((tmp_path / "y.json").read_text()) == {"a": [1.5, None]}


def test_caches_record_their_space_and_metric_json_its_geometry(setup, tmp_path):
    """Evaluation rebuilds the space from the cache alone; every metric JSON labels its geometry."""
    from meru.models import build_model
    from meru.models.checkpoints import save_model
    from meru.models.checkpoints import load_model
    from meru.spaces import Lorentz

    d, paths = setup
    c = EmbeddingCache.load(d / "zs.pt", "classification")
    assert isinstance(c.space, Lorentz) and c.space.matches(load_model(d / "model.pt").space())
    assert torch.load(d / "zs.pt", weights_only=True)["space"] == c.space.record()
    torch.manual_seed(0)
    save_model(build_model("euclip", "tiny"), tmp_path / "eu.pt")
    assert (
        cli(
            E,
            [
                "--checkpoint",
                str(tmp_path / "eu.pt"),
                "--evalset",
                str(paths["zeroshot"]),
                "--out",
                str(tmp_path / "zs.pt"),
                "--text-pool",
                str(paths["pool"]),
                "--out",
                str(tmp_path / "pool.pt"),
            ],
        )
        == 0
    )
    eu = EmbeddingCache.load(tmp_path / "zs.pt")
    assert eu.kind == "euclip" and eu.space.name == "euclidean" and eu.space.curv is None
    assert eu.textual_alpha == pytest.approx(32**-0.5)
    for task in ("zeroshot", "structure", "traversal"):
        out = tmp_path / f"{task}.json"
        argv = ["--task", task, "--embeddings", str(tmp_path / "zs.pt"), "--out", str(out), "--n-boot", "20"]
        argv += ["--text-pool", str(tmp_path / "pool.pt")] if task != "zeroshot" else []
        assert cli(R, argv) == 0
        rec = read_json(out)
        assert rec["kind"] == "euclip" and rec["geometry"] == {"space": "euclidean", "root_distance": "Euclidean norm"}
    out = tmp_path / "meru-structure.json"
    assert (
        cli(
            R,
            [
                "--task",
                "structure",
                "--embeddings",
                str(d / "zs.pt"),
                "--text-pool",
                str(d / "pool.pt"),
                "--out",
                str(out),
                "--n-boot",
                "20",
            ],
        )
        == 0
    )
    assert read_json(out)["geometry"] == {"space": "lorentz", "root_distance": "geodesic distance from the origin"}
