"""HierarCaps metrics on hand-built embeddings with known answers (perfect, reversed, all tied), the
tie-aware AP/AUROC against sklearn, negative sampling, and the data preparation against a loopback server."""

from __future__ import annotations

import argparse
import io
import json
import math
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from meru.evaluation import hierarcaps as H
from meru.records import EmbeddingCache
from meru.spaces import get_space
from meru.stats import cluster_bootstrap_ci

LEVELS = 4


# ----------------------------------------------------------------------------- fixtures


def _lorentz_point(direction: torch.Tensor, r: float, curv: float = 1.0) -> torch.Tensor:
    """Space components of the hyperboloid point at geodesic distance r from the origin along ``direction``."""
    return math.sinh(math.sqrt(curv) * r) / math.sqrt(curv) * torch.nn.functional.normalize(direction, dim=0)


def meru_cache(
    n_h: int = 5, radii=(0.5, 1.0, 1.5, 2.0), image_r: float = 3.0, same_point: bool = False
) -> EmbeddingCache:
    """H hierarchies on orthogonal rays, caption level l at ``radii[l]``, image h further out on the same ray.
    ``same_point``: every caption and every image is one and the same point (all scores tied)."""
    dim = n_h + 1
    texts, emb, t2i, images = [], [], [], []
    for h in range(n_h):
        u = torch.eye(dim)[h] if not same_point else torch.eye(dim)[0]
        for lv in range(LEVELS):
            texts.append(f"hier {h} level {lv}")
            emb.append(_lorentz_point(u, radii[lv] if not same_point else 1.0))
            t2i.append(h)
        images.append(_lorentz_point(u, image_r if not same_point else 1.0))
    return EmbeddingCache(
        task="hierarcaps",
        space=get_space("meru", 1.0),
        texts=texts,
        text_emb=torch.stack(emb),
        image_emb=torch.stack(images),
        text_to_image=torch.tensor(t2i),
        root_emb=torch.zeros(1, dim),
        path="fixture",
    )


def clip_cache(n_h: int = 4, reverse: bool = False) -> EmbeddingCache:
    """Unit vectors: caption level l at angle 0.2 (l + 1) from the root direction e0 towards hierarchy h's axis."""
    dim = n_h + 1
    texts, emb, t2i, images = [], [], [], []
    for h in range(n_h):
        for lv in range(LEVELS):
            a = 0.2 * ((LEVELS - lv) if reverse else (lv + 1))
            texts.append(f"h{h} l{lv}")
            emb.append(math.cos(a) * torch.eye(dim)[0] + math.sin(a) * torch.eye(dim)[h + 1])
            t2i.append(h)
        images.append(math.cos(1.2) * torch.eye(dim)[0] + math.sin(1.2) * torch.eye(dim)[h + 1])
    return EmbeddingCache(
        task="hierarcaps",
        space=get_space("clip"),
        texts=texts,
        text_emb=torch.stack(emb),
        image_emb=torch.stack(images),
        text_to_image=torch.tensor(t2i),
        root_emb=torch.eye(dim)[:1],
        path="fixture",
    )


# ----------------------------------------------------------------------------- depth


def test_depth_tau_perfect_reversed_tied_and_scipy():
    tau = H.depth_tau(np.array([[1, 2, 3, 4], [4, 3, 2, 1], [5, 5, 5, 5], [1, 1, 2, 2.0]]))
    assert tau[0] == pytest.approx(1.0) and tau[1] == pytest.approx(-1.0) and math.isnan(tau[2])
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 3, size=(200, LEVELS)).astype(float)  # many ties
    got = H.depth_tau(rows)
    for r, g in zip(rows, got):
        want = kendalltau(r, np.arange(LEVELS)).statistic
        assert (math.isnan(g) and math.isnan(want)) or g == pytest.approx(want)


def test_depth_tau_interval_resamples_images_with_their_hierarchies():
    radii = torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1], [5, 5, 5, 5], [1, 1, 2, 2.0], [2, 1, 3, 4]]).reshape(-1)
    images = np.array([0, 0, 1, 1, 2])  # image 0 has two hierarchies; hierarchy 2 is undefined (all tied)
    metrics, intervals, ties, tau = H._depth_part(radii, images, n_boot=200, seed=1)
    defined = ~np.isnan(tau)
    assert ties["undefined_hierarchies"] == 1 and metrics["depth_tau"] == pytest.approx(tau[defined].mean())
    want = cluster_bootstrap_ci(tau[defined], images[defined], n_boot=200, seed=1)
    assert intervals["depth_tau"] == pytest.approx(list(want))


# ----------------------------------------------------------------------------- full evaluation, known answers


def test_meru_perfect_hierarchy_scores_one_everywhere():
    res = H.evaluate_hierarcaps(meru_cache(), n_boot=50, n_negatives=1000)
    m = res.metrics
    assert m["depth_tau"] == pytest.approx(1.0)
    assert m["hr_precision"] == 1.0 and m["hr_recall"] == 1.0 and m["order_recall"] == 1.0
    assert m["entail_ap"] == pytest.approx(1.0) and m["entail_auroc"] == pytest.approx(1.0)
    assert m["entail_cone_ap"] == pytest.approx(1.0) and m["entail_cone_auroc"] == pytest.approx(1.0)
    n_pos, n_neg = 20, 5 * 4 * 4  # every caption x every other image
    assert res.details["n_positives"] == n_pos and res.details["n_negatives"] == n_neg
    cone = res.details["ties"]["entail_cone"]  # binary cone scores: two distinct values
    assert cone["n_distinct"] == 2 and cone["modal_share"] == pytest.approx(n_neg / (n_pos + n_neg))
    assert cone["tied_pos_neg_share"] == 0.0
    assert res.details["ties"]["depth"]["undefined_hierarchies"] == 0


def test_meru_reversed_depth():
    res = H.evaluate_hierarcaps(meru_cache(radii=(2.0, 1.5, 1.0, 0.5)), n_boot=20, n_negatives=1000)
    m = res.metrics
    assert m["depth_tau"] == pytest.approx(-1.0)
    # thresholds admit level 3 first (nearest the root), then 2, 1, 0: every caption found, never in order
    assert m["hr_precision"] == 1.0 and m["hr_recall"] == 1.0 and m["order_recall"] == pytest.approx(0.25)


def test_all_tied_scores_are_handled_tie_aware():
    res = H.evaluate_hierarcaps(meru_cache(same_point=True), n_boot=20, n_negatives=1000)
    m, t = res.metrics, res.details["ties"]
    assert m["depth_tau"] is None and t["depth"]["undefined_hierarchies"] == 5
    assert t["depth"]["tied_hierarchies_share"] == 1.0
    # one threshold admits everything; the lowest index wins: hierarchy 0 level 0 for every image
    assert m["hr_recall"] == pytest.approx((0.25 + 0 * 4) / 5)
    p, n = res.details["n_positives"], res.details["n_negatives"]
    assert m["entail_ap"] == pytest.approx(p / (p + n)) and m["entail_auroc"] == pytest.approx(0.5)
    sim = t["entail"]
    assert sim["n_distinct"] == 1 and sim["modal_share"] == 1.0 and sim["tied_pos_neg_share"] == 1.0
    assert sim["ap_optimistic"] == pytest.approx(1.0)
    assert sim["ap_pessimistic"] == pytest.approx(np.mean([k / (n + k) for k in range(1, p + 1)]))


def test_clip_space_depth_and_no_cones():
    res = H.evaluate_hierarcaps(clip_cache(), n_boot=20)
    assert res.metrics["depth_tau"] == pytest.approx(1.0)
    assert res.metrics["hr_recall"] == 1.0 and res.metrics["order_recall"] == 1.0
    assert "entail_cone_ap" not in res.metrics and res.details["ties"]["entail_cone"] is None
    rev = H.evaluate_hierarcaps(clip_cache(reverse=True), n_boot=20)
    assert rev.metrics["depth_tau"] == pytest.approx(-1.0)


def test_metric_json_is_strict(tmp_path):
    from meru.records import MetricRecord

    res = H.evaluate_hierarcaps(meru_cache(same_point=True), n_boot=20)
    geometry = {"space": "lorentz", "root_distance": "geodesic distance from the origin"}
    rec = MetricRecord.of(
        res, kind="meru", size="tiny", seed=0, label="x", dataset="hierarcaps", task="hierarcaps", geometry=geometry
    )
    back = MetricRecord.load(rec.write(tmp_path / "m.json"))
    assert back.metrics["depth_tau"] is None and back.per_item["depth_tau"] == [None] * 5


# ----------------------------------------------------------------------------- pieces


def test_ap_auroc_match_sklearn_with_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 300).astype(float)  # heavy ties
    labels = rng.random(300) < 0.3
    assert H.average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores))
    assert H.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    d = H.tie_diagnostics(scores, labels)
    assert d["ap_pessimistic"] <= H.average_precision(scores, labels) <= d["ap_optimistic"]
    assert d["n_distinct"] == 5


def test_order_recall_and_precision_by_hand():
    # one image, hierarchy a0..a3; captions b0, b1 belong to nobody's image here
    texts = ["a0", "a1", "a2", "a3", "b0"]
    radii = torch.tensor([0.0, 1.0, 2.0, 3.0, 0.5])
    scores = torch.tensor([[1.0, 0.5, 3.0, 2.0, 1.5]])
    out = H.hierarchical_retrieval(scores, radii, texts, [[["a0", "a1", "a2", "a3"]]], steps=7)
    # thresholds 0, .5, 1, 1.5, 2, 2.5, 3 -> a0, b0, b0, b0, a2, a2, a2
    assert out["predictions"][0] == ["a0", "b0", "a2"]
    assert out["hr_precision"][0] == pytest.approx(2 / 3)
    assert out["hr_recall"][0] == pytest.approx(2 / 4)
    assert out["order_recall"][0] == pytest.approx(2 / 4)  # levels 0 -> 2: one increasing step
    assert H._longest_increasing_run([0, 2, 1, 3]) == 2 and H._longest_increasing_run([3, 2, 1, 0]) == 1
    assert H._longest_increasing_run([0, 0, 1, 1, 2, 3]) == 4


def test_negatives_exclude_true_captions_and_are_deterministic():
    # image 0 has two hierarchies sharing "bird"; image 1 also says "bird"
    hiers = [[["bird", "blue bird", "x", "y"], ["bird", "small bird", "z", "w"]], [["bird", "red bird", "p", "q"]]]
    texts = [c for hs in hiers for h in hs for c in h]
    t2i = np.array([0] * 8 + [1] * 4)
    a = H.sample_negatives(t2i, texts, hiers, 100, seed=3)
    b = H.sample_negatives(t2i, texts, hiers, 100, seed=3)
    assert np.array_equal(a, b)
    for k, j in a:
        assert j != t2i[k] and texts[k] not in {c for h in hiers[j] for c in h}
    assert len(a) == 6 + 3  # image 0's 8 captions less its two "bird"s; image 1's 4 less "bird"
    assert len(H.sample_negatives(t2i, texts, hiers, 4, seed=3)) == 4


# ----------------------------------------------------------------------------- data preparation

CSV_ROWS = [
    ("0", "bird => blue bird => blue bird on a branch => A blue bird sitting on a branch.", 1),
    ("1", "table => table with plates => table with three plates => A table with three plates of food.", 2),
    ("2", "bird => small bird => small bird in the grass => A small bird standing in tall grass.", 1),
]


def _jpeg(v: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((40, 48, 3), v, dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture()
def server(tmp_path):
    site = tmp_path / "site"
    (site / "val2014").mkdir(parents=True)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(site)))
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    lines = ["id,captions,image_url"]
    for rid, caps, img in CSV_ROWS:
        name = f"COCO_val2014_{img:012d}.jpg"
        (site / "val2014" / name).write_bytes(_jpeg(40 * img))
        lines.append(f'{rid},"{caps}",{base}/val2014/{name}')
    (site / "hierarcaps_test.csv").write_text("\n".join(lines) + "\n")
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield base, site
    httpd.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_prepare_downloads_and_packs(server, tmp_path):
    import webdataset as wds

    from meru.data import hierarcaps as D

    base, site = server
    root = tmp_path / "hc"
    info = D.prepare_hierarcaps(root, csv_url=f"{base}/hierarcaps_test.csv", threads=2)
    assert info == {"hierarchies": 3, "images": 2, "downloaded": 2}
    assert (root / "dataset_type.txt").read_text().strip() == "hierarcaps"
    assert (root / "test" / "nshards.txt").read_text().strip() == "1"
    samples = list(wds.WebDataset(str(root / "test" / "0.tar"), shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == ["COCO_val2014_000000000001", "COCO_val2014_000000000002"]
    meta = json.loads(samples[0]["json"])
    assert meta["ids"] == ["0", "2"] and meta["hierarchies"][1][0] == "bird" and len(meta["hierarchies"][1]) == 4
    assert samples[0]["jpg"] == (site / "val2014" / "COCO_val2014_000000000001.jpg").read_bytes()
    # a re-run finds everything locally (server gone is fine)
    assert D.prepare_hierarcaps(root, csv_url="http://127.0.0.1:9/none.csv")["downloaded"] == 0


def test_open_evalset_reads_the_hierarchies(server, tmp_path):
    from meru.data import evalsets as ev
    from meru.data import hierarcaps as D

    base, _ = server
    root = tmp_path / "hc"
    D.prepare_hierarcaps(root, csv_url=f"{base}/hierarcaps_test.csv", threads=2)
    es = ev.open_evalset(root, image_size=16)
    assert (es.task, es.name, es.num_items) == ("hierarcaps", "hierarcaps", 2)
    h = es.hierarchies
    assert h.keys == ["COCO_val2014_000000000001", "COCO_val2014_000000000002"]
    assert h.hierarchy_ids == ["0", "2", "1"] and h.levels == [0, 1, 2, 3] * 3
    assert h.texts[:4] == [c.strip() for c in CSV_ROWS[0][1].split("=>")] and h.texts[4] == "bird"
    assert h.text_to_image == [0] * 8 + [1] * 4
    items = [it for batch in es.batches(4, 0) for it in batch]
    assert [it["key"] for it in items] == h.keys and items[0]["image"].shape == (3, 16, 16)
    assert ev.open_evalset(root, image_size=16, name="hierarcaps-coco").name == "hierarcaps-coco"
    # a packed sample without hierarchies: refused when the set is opened, naming the sample and the fix
    import webdataset as wds

    with wds.TarWriter(str(root / "test" / "0.tar")) as w:
        w.write({"__key__": "x", "jpg": _jpeg(3), "txt": "a", "json": json.dumps({"image_url": "u"}).encode()})
    with pytest.raises(KeyError, match="'x' has no json 'hierarchies'.*meru evalsets prepare"):
        ev.open_evalset(root, image_size=16)


def test_prepare_offline_is_one_clear_line(tmp_path, capsys, monkeypatch):
    from meru.data import evalsets as ev
    from meru.data import hierarcaps as D

    monkeypatch.setattr(D, "CSV_URL", "http://127.0.0.1:9/hierarcaps_test.csv")
    parser = argparse.ArgumentParser()
    ev.add_arguments(parser)
    rc = ev.run(parser.parse_args(["prepare", "--dataset", "hierarcaps", "--root", str(tmp_path / "hc")]))
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "cannot download" in err and "hierarcaps_test.csv" in err
    assert not (tmp_path / "hc" / "test").exists()


def test_bad_csv_row_names_file_and_line(tmp_path):
    from meru.data import hierarcaps as D

    p = tmp_path / "hierarcaps_test.csv"
    p.write_text('id,captions,image_url\n0,"a => b => c",http://x/COCO_val2014_000000000001.jpg\n')
    with pytest.raises(ValueError, match=r"line 2 .*3 caption levels"):
        D.parse_csv(p)


def test_embed_and_evaluate_end_to_end(server, tmp_path):
    from meru.data import hierarcaps as D
    from meru.evaluation import embed as E
    from meru.evaluation import run as R
    from meru.models import build_model
    from meru.records import MetricRecord
    from meru.models.checkpoints import save_model

    torch.set_num_threads(1)
    base, _ = server
    root = tmp_path / "hc"
    D.prepare_hierarcaps(root, csv_url=f"{base}/hierarcaps_test.csv", threads=2)
    torch.manual_seed(0)
    model = build_model("meru", "tiny")
    save_model(model, tmp_path / "model.pt")

    def cli(module, argv):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        return module.run(parser.parse_args(argv))

    assert (
        cli(E, ["--checkpoint", str(tmp_path / "model.pt"), "--evalset", str(root), "--out", str(tmp_path / "hc.pt")])
        == 0
    )
    c = EmbeddingCache.load(tmp_path / "hc.pt", "hierarcaps")
    assert c.texts[:4] == [s.strip() for s in CSV_ROWS[0][1].split("=>")]
    assert c.text_to_image.tolist() == [0] * 4 + [0] * 4 + [1] * 4 and c.image_emb.shape[0] == 2
    assert c.hierarchy_ids == ["0", "2", "1"] and c.root_emb.shape == (1, c.text_emb.shape[1])
    assert c.levels.tolist() == [0, 1, 2, 3] * 3 and c.space.matches(model.space())
    out = tmp_path / "m.json"
    assert (
        cli(R, ["--task", "hierarcaps", "--embeddings", str(tmp_path / "hc.pt"), "--out", str(out), "--n-boot", "20"])
        == 0
    )
    rec = MetricRecord.load(out)
    assert rec.task == "hierarcaps" and rec.details["n_hierarchies"] == 3 and rec.details["n_positives"] == 12
    assert set(rec.metrics) >= {
        "depth_tau",
        "hr_precision",
        "hr_recall",
        "order_recall",
        "entail_ap",
        "entail_auroc",
    }
