"""Caption choice (SugarCrepe, ARO): readers of the released files on generated fixtures in their real layout,
the tie rule, per-subset accuracy with intervals, and a constructed case where clip-benchmark's dot-product
scorer picks the wrong caption for Lorentz embeddings while the Lorentz score picks the right one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from meru.data import caption_choice as D
from meru.data.evalsets import open_evalset
from meru.evaluation import caption_choice as C
from meru.evaluation import run as R
from meru.records import EmbeddingCache, MetricRecord
from meru.spaces import get_space

from cli_helpers import cli

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- fixtures in the released layouts


def _image(path: Path, size=(40, 30), colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def write_sugar_crepe(source: Path, subset: str, entries: dict) -> Path:
    """clip-benchmark's sugar_crepe root: ``source/<subset>.json`` and the COCO images in ``source/val2017/``."""
    for entry in entries.values():
        _image(source / "val2017" / entry["filename"])
    source.mkdir(parents=True, exist_ok=True)
    (source / f"{subset}.json").write_text(json.dumps(entries, indent=4))
    return source


def write_aro(source: Path, subset: str, entries: list) -> Path:
    """ARO's root: ``source/visual_genome_*.json`` and ``source/images/``."""
    for entry in entries:
        _image(source / "images" / entry["image_path"], size=(64, 48))
    (source / D.ARO_FILES[subset]).write_text(json.dumps(entries))
    return source


SUGAR = {
    "0": {"filename": "000000252219.jpg", "caption": "a man begs.", "negative_caption": "a disabled man begs."},
    "3": {"filename": "000000125211.jpg", "caption": "a zebra by a tree", "negative_caption": "a zebra by a bush"},
    "7": {"filename": "000000252219.jpg", "caption": "a man sits.", "negative_caption": "a man sits."},
}


def _aro_entry(i, **extra):
    return {
        "image_path": f"{i}.jpg",
        "bbox_x": 4,
        "bbox_y": 6,
        "bbox_w": 20,
        "bbox_h": 10,
        "true_caption": f"the cup is on the table {i}",
        "false_caption": f"the table is on the cup {i}",
        **extra,
    }


# ----------------------------------------------------------------------------- readers and packing


def test_sugar_crepe_file_is_read_in_file_order(tmp_path):
    write_sugar_crepe(tmp_path, "add_att", SUGAR)
    items = D.read_set("sugar_crepe/add_att", tmp_path)
    assert [it.id for it in items] == ["0", "3", "7"]
    assert items[1] == D.ChoiceItem("3", "000000125211.jpg", "a zebra by a tree", ("a zebra by a bush",))


def test_our_reader_agrees_with_clip_benchmarks_sugar_crepe(tmp_path):
    """clip-benchmark's own SugarCrepe dataset, on the same fixture root, gives the same images and captions."""
    from clip_benchmark.datasets.sugar_crepe import SugarCrepe

    write_sugar_crepe(tmp_path, "replace_obj", SUGAR)
    theirs = SugarCrepe(root=str(tmp_path / "val2017"), ann_file=str(tmp_path / "replace_obj.json"))
    ours = D.read_set("sugar_crepe/replace_obj", tmp_path)
    assert len(theirs) == len(ours)
    for i, item in enumerate(ours):
        image, captions = theirs[i]
        assert captions == [item.true_caption, *item.false_captions]
        assert image.filename == str(tmp_path / "val2017" / item.image)


def test_aro_files_give_groups_and_boxes(tmp_path):
    write_aro(tmp_path, "vg_relation", [_aro_entry(0, relation_name="on"), _aro_entry(1, relation_name="under")])
    write_aro(tmp_path, "vg_attribution", [_aro_entry(2, attributes=["white", "wooden"])])
    rel = D.read_set("aro_vg_relation", tmp_path)
    assert [it.group for it in rel] == ["on", "under"] and rel[0].bbox == (4.0, 6.0, 20.0, 10.0)
    assert rel[0].false_captions == ("the table is on the cup 0",)
    assert D.read_set("aro/vg_attribution", tmp_path)[0].group == "white_wooden"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"0": {"filename": "a.jpg", "caption": "x"}}', "'negative_caption' is missing"),
        ("[1, 2]", "expected a non-empty JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_bad_sugar_crepe_file_is_one_line(tmp_path, content, message):
    (tmp_path / "swap_obj.json").write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        D.read_set("sugar_crepe/swap_obj", tmp_path)
    assert "\n" not in str(err.value) and "swap_obj.json" in str(err.value)


def test_missing_files_name_where_they_go(tmp_path, capsys):
    from meru import cli as meru_cli

    rc = meru_cli.main(["evalsets", "prepare", "--dataset", "sugar_crepe/add_obj", "--root", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "add_obj.json not found" in err and "sugar-crepe" in err
    write_sugar_crepe(tmp_path / "src", "add_obj", SUGAR)
    (tmp_path / "src" / "val2017" / "000000125211.jpg").unlink()
    rc = meru_cli.main(
        [
            "evalsets",
            "prepare",
            "--dataset",
            "sugar_crepe/add_obj",
            "--root",
            str(tmp_path / "out"),
            "--source",
            str(tmp_path / "src"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "1 of 2 images are not in" in err and "000000125211.jpg" in err
    assert not (tmp_path / "out" / "test").exists()


def test_prepared_sets_open_as_caption_choice_evalsets(tmp_path, capsys):
    from meru import cli as meru_cli

    write_sugar_crepe(tmp_path / "sc", "replace_rel", SUGAR)
    argv = [
        "evalsets",
        "prepare",
        "--dataset",
        "sugar_crepe/replace_rel",
        "--root",
        str(tmp_path / "sugar_crepe_replace_rel"),
    ]
    assert meru_cli.main([*argv, "--source", str(tmp_path / "sc")]) == 0
    assert "3 items, 2 images" in capsys.readouterr().out
    ev = open_evalset(tmp_path / "sugar_crepe_replace_rel", image_size=16)
    assert (ev.task, ev.name, ev.num_items) == ("caption-choice", "sugar_crepe_replace_rel", 3)
    assert ev.choices.texts[:2] == ["a man begs.", "a disabled man begs."]
    assert ev.choices.truth == [1, 0] * 3 and ev.choices.text_to_image == [0, 0, 1, 1, 2, 2]
    assert [m["id"] for m in ev.choices.meta] == ["0", "3", "7"]
    items = [it for batch in ev.batches(2) for it in batch]
    assert [it["key"] for it in items] == ev.choices.keys and items[0]["image"].shape == (3, 16, 16)

    write_aro(tmp_path / "aro", "vg_relation", [_aro_entry(0, relation_name="on")])
    out = tmp_path / "aro_vg_relation"
    D.prepare_caption_choice("aro/vg_relation", out, source=tmp_path / "aro")
    import tarfile

    with tarfile.open(out / "test" / "0.tar") as tar:
        crop = Image.open(tar.extractfile("000000.png"))
        assert crop.size == (20, 10)  # the box, as ARO crops it
    assert open_evalset(out).choices.meta[0]["group"] == "on"


# ----------------------------------------------------------------------------- scoring and ties


@pytest.mark.parametrize(
    "scores, truth, expected",
    [
        ([2.0, 1.0], [1, 0], (1.0, 0, False)),
        ([1.0, 2.0], [1, 0], (0.0, 1, False)),
        ([1.0, 1.0], [1, 0], (0.5, 0, True)),
        ([3.0, 3.0, 3.0], [1, 0, 0], (1 / 3, 0, True)),
        ([1.0, 3.0, 3.0], [1, 0, 0], (0.0, 1, True)),  # a tie among negatives alone is still wrong
    ],
)
def test_tie_credit(scores, truth, expected):
    assert C.choice_credit(torch.tensor(scores), torch.tensor(truth)) == pytest.approx(expected)


def _cache(space, image_emb, captions, meta=None) -> EmbeddingCache:
    """A caption-choice cache: ``captions[i]`` = the embeddings of item i's captions, true first."""
    t2i = [i for i, cs in enumerate(captions) for _ in cs]
    truth = [int(j == 0) for cs in captions for j in range(len(cs))]
    return EmbeddingCache(
        task="caption-choice",
        dataset="fixture",
        space=space,
        image_emb=image_emb,
        meta=meta,
        texts=[f"caption {j}" for j in range(len(t2i))],
        text_emb=torch.stack([c for cs in captions for c in cs]),
        text_to_image=torch.tensor(t2i),
        caption_truth=torch.tensor(truth),
        path="fixture",
    )


def test_known_answers_with_ties_and_groups():
    """Four CLIP items: right, wrong, a tie of two (1/2), a tie of three (1/3); groups a, a, b, b."""
    e = torch.eye(3)
    images = torch.stack([e[0], e[0], e[1], e[2]])
    captions = [[e[0], e[1]], [e[1], e[0]], [e[1], e[1]], [e[2], e[2], e[2]]]
    meta = [{"group": g} for g in "aabb"]
    m = C.evaluate_caption_choice(_cache(get_space("clip"), images, captions, meta), n_boot=200)
    assert m.metrics["acc"] == pytest.approx(100 * (1 + 0 + 0.5 + 1 / 3) / 4)
    assert m.metrics["acc_macro"] == pytest.approx(100 * ((1 + 0) / 2 + (0.5 + 1 / 3) / 2) / 2)
    assert m.per_item["acc"] == pytest.approx([100, 0, 50, 100 / 3])
    assert m.per_item["choice"] == [0, 1, 0, 0]
    assert m.details["n_ties"] == 2 and m.details["chance"] == pytest.approx(100 * (3 * 0.5 + 1 / 3) / 4)
    lo, hi = m.intervals["acc"]
    assert 0 <= lo <= m.metrics["acc"] <= hi <= 100 and hi > lo
    assert len(m.intervals["acc_macro"]) == 2


def test_macro_accuracy_weighs_groups_equally():
    credit = np.array([1.0, 0.0, 1.0, 1.0, 1.0])
    assert C.macro_accuracy(credit, np.array([0, 0, 1, 1, 1])) == pytest.approx((0.5 + 1.0) / 2)
    assert C.macro_accuracy(credit, np.array([0, 0, 2, 2, 2])) == pytest.approx((0.5 + 1.0) / 2)  # ids with gaps


def _lorentz_point(direction: torch.Tensor, r: float, curv: float = 1.0) -> torch.Tensor:
    """Space components of the hyperboloid point at geodesic distance ``r`` from the origin along ``direction``."""
    return math.sinh(math.sqrt(curv) * r) / math.sqrt(curv) * torch.nn.functional.normalize(direction, dim=0)


def _lorentz_case(curv: float = 1.0):
    """Image at distance 1 along e0. True caption: distance 1, 0.2 rad off e0 (geodesic distance ~0.23).
    Negative: exactly along e0 but at distance 5 (geodesic distance 4). Cosine prefers the negative."""
    e0, e1 = torch.eye(2)
    image = _lorentz_point(e0, 1.0, curv)
    true = _lorentz_point(math.cos(0.2) * e0 + math.sin(0.2) * e1, 1.0, curv)
    negative = _lorentz_point(e0, 5.0, curv)
    return image, true, negative


def test_lorentz_score_picks_what_a_dot_product_gets_wrong():
    """clip-benchmark's image_caption_selection (L2-normalised dot product) picks the negative; ours, through
    the Lorentz space, picks the true caption."""
    from clip_benchmark.metrics.image_caption_selection import evaluate as cb_evaluate

    image, true, negative = _lorentz_case()
    space = get_space("meru", 1.0)
    assert (
        float(space.distance(image[None], true[None])) < 0.3 < 3.9 < float(space.distance(image[None], negative[None]))
    )

    texts = {"the true caption": true, "the hard negative": negative}

    class Frozen(torch.nn.Module):  # a model whose towers return the constructed points
        def encode_image(self, images):
            return image.expand(images.shape[0], -1)

        def encode_text(self, tokens):
            return torch.stack(list(texts.values()))[tokens]

    loader = [(torch.zeros(1, 3, 2, 2), [list(texts)])]
    tokenizer = lambda batch: torch.tensor([list(texts).index(t) for t in batch])  # noqa: E731
    cb = cb_evaluate(Frozen(), loader, tokenizer, "cpu", amp=False)
    assert cb["text_acc"] == 0.0  # the dot product of normalised space components picks the negative

    m = C.evaluate_caption_choice(_cache(space, image[None], [[true, negative]]), n_boot=10)
    assert m.metrics["acc"] == 100.0 and m.per_item["choice"] == [0]
    wrong_space = _cache(get_space("clip"), image[None], [[true, negative]])  # the same numbers scored as cosines
    assert C.evaluate_caption_choice(wrong_space, n_boot=10).metrics["acc"] == 0.0


def test_euclip_scores_by_squared_distance():
    """EuCLIP: the true caption is nearer but less aligned in angle; -||x - t||^2 picks it, cosine would not."""
    image = torch.tensor([[1.0, 0.0]])
    true, negative = torch.tensor([1.0, 0.3]), torch.tensor([10.0, 0.0])
    assert (
        C.evaluate_caption_choice(_cache(get_space("euclip"), image, [[true, negative]]), n_boot=10).metrics["acc"]
        == 100
    )
    assert (
        C.evaluate_caption_choice(_cache(get_space("clip"), image, [[true, negative]]), n_boot=10).metrics["acc"] == 0
    )


def test_nonfinite_scores_and_items_without_negatives_are_refused():
    e = torch.eye(2)
    cache = _cache(get_space("clip"), e[:1], [[e[0], e[1]]])
    cache.caption_truth = torch.tensor([1, 1])
    with pytest.raises(ValueError, match="one true caption and at least one negative"):
        C.evaluate_caption_choice(cache)


# ----------------------------------------------------------------------------- through the commands


def test_embed_and_evaluate_a_prepared_set_with_a_tiny_model(tmp_path):
    """Every item's negative repeats its true caption: any model ties, so the accuracy is exactly 50%; an item with
    three equal captions earns 1/3. The record holds the accuracy, its interval and per-item data."""
    from meru.evaluation import embed as E
    from meru.models import build_model
    from meru.models.checkpoints import save_model

    torch.set_num_threads(1)
    entries = {
        str(i): {"filename": f"{i}.jpg", "caption": f"a photo {i}", "negative_caption": f"a photo {i}"}
        for i in range(5)
    }
    entries["5"] = {"filename": "5.jpg", "caption": "x y", "negative_caption": ["x y", "x y"]}
    write_sugar_crepe(tmp_path / "src", "swap_att", entries)
    D.prepare_caption_choice("sugar_crepe/swap_att", tmp_path / "set", source=tmp_path / "src")
    torch.manual_seed(0)
    save_model(build_model("meru", "tiny"), tmp_path / "model.pt")
    emb = tmp_path / "emb.pt"
    argv = [
        "--checkpoint",
        str(tmp_path / "model.pt"),
        "--evalset",
        str(tmp_path / "set"),
        "--name",
        "sugar_crepe_swap_att",
    ]
    assert cli(E, [*argv, "--out", str(emb), "--device", "cpu"]) == 0
    cache = EmbeddingCache.load(emb, "caption-choice")
    assert cache.caption_truth.tolist() == [1, 0] * 5 + [1, 0, 0] and cache.text_to_image.tolist()[-3:] == [5, 5, 5]
    out = tmp_path / "m.json"
    assert cli(R, ["--task", "caption-choice", "--embeddings", str(emb), "--out", str(out), "--n-boot", "100"]) == 0
    rec = MetricRecord.load(out)
    assert (rec.task, rec.dataset, rec.n) == ("caption-choice", "sugar_crepe_swap_att", 6)
    assert rec.metrics["acc"] == pytest.approx(100 * (5 * 0.5 + 1 / 3) / 6) and rec.metrics["acc_macro"] is None
    assert rec.details["n_ties"] == 6 and len(rec.intervals["acc"]) == 2
    assert not (tmp_path / "m.clip_benchmark.json").exists()


def test_table_shows_each_subset_with_its_interval(tmp_path):
    from meru.reporting.tables import SPECS, write_tables

    e = torch.eye(2)
    for kind, space in (("clip", get_space("clip")), ("meru", get_space("meru", 1.0))):
        image = e[:1] if kind == "clip" else _lorentz_case()[0][None]
        true, neg = (e[0], e[1]) if kind == "clip" else _lorentz_case()[1:]
        for dataset in ("sugar_crepe_add_att", "aro_vg_relation"):
            cache = _cache(space, image.repeat(4, 1), [[true, neg]] * 3 + [[neg, true]], [{"group": "on"}] * 4)
            cache.dataset = dataset
            m = C.evaluate_caption_choice(cache, n_boot=50)
            who = dict(kind=kind, size="tiny", seed=0, label=f"{kind}-tiny-s0", dataset=dataset, task="caption-choice")
            MetricRecord.of(m, geometry=space.geometry(), **who).write(tmp_path / "metrics" / kind / f"{dataset}.json")
    frames = write_tables(tmp_path / "metrics", tmp_path / "tables", n_boot=50)
    assert "caption_choice" in [s.name for s in SPECS]
    csv = (tmp_path / "tables" / "caption_choice.csv").read_text()
    assert "sugar_crepe_add_att" in csv and "aro_vg_relation" in csv and "75.0" in csv
    assert len(frames["caption_choice"])


# ----------------------------------------------------------------------------- workflow


def test_config_names_are_the_sets_we_read():
    schema = yaml.safe_load((ROOT / "configs" / "schema.yaml").read_text())
    enum = schema["properties"]["evaluation"]["properties"]["caption_choice"]["items"]["enum"]
    assert tuple(enum) == D.CAPTION_CHOICE_SETS
    assert len(D.SUGAR_CREPE_SUBSETS) == 7


def test_dry_run_plans_prepare_embed_and_evaluate_per_run(tmp_path):
    import subprocess
    import sys

    cfg = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    cfg["evaluation"]["caption_choice"] = ["sugar_crepe/add_att", "sugar_crepe/swap_obj", "aro/vg_relation"]
    cfg["evaluation"]["caption_choice_sources"] = {"sugar_crepe": str(tmp_path / "sc"), "aro": str(tmp_path / "aro")}
    cfg["results_dir"], cfg["runs_dir"] = str(tmp_path / "results"), str(tmp_path / "runs")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--configfile", str(tmp_path / "cfg.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = len(cfg["models"]) * len(cfg["sizes"]) * len(cfg["seeds"])
    assert r.stdout.count("rule evaluate_caption_choice:") == 3 * runs
    assert "--dataset aro_vg_relation" in r.stdout and f"--source {tmp_path / 'aro'}" in r.stdout
    assert "caption-choice-sugar_crepe_swap_obj.json" in r.stdout
