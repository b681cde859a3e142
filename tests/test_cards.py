"""Cards: SynthHier's DATASET_CARD.md (written by meru synth), manifest cards, MODEL_CARD.md from metric records."""

import json
import re

import pytest

from meru.cli import main
from meru.data import synthhier
from meru.data.cards import dataset_card
from meru.data.shards import write_shards
from meru.reporting import cards

from metric_helpers import record, write


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "synthhier"
    synthhier.generate(out, train_size=8, test_size=12, image_size=16, seed=3, shard_size=8)
    return out


def test_synth_writes_its_dataset_card(synth):
    card = (synth / "DATASET_CARD.md").read_text()
    assert card == dataset_card(synth)  # the same card from `meru card --dataset`
    for section in (
        "## Generator",
        "## Taxonomy",
        "## Attributes",
        "## Caption rules",
        "## Known shortcuts",
        "## Licence",
    ):
        assert section in card
    info = json.loads((synth / "info.json").read_text())
    assert f"| seed | {info['seed']} |" in card and f"{info['test_size']:,}" in card
    for values in info["attributes"].values():  # every attribute value listed
        assert ", ".join(str(v) for v in values) in card
    names = json.loads((synth / "taxonomy_names.json").read_text())
    listed = re.findall(r"^\s*- (.+)$", card.split("## Taxonomy")[1].split("##")[0], re.M)
    assert sorted(listed) == sorted(names.values())  # the whole taxonomy, each node once
    assert "MIT" in card and "SynthHier (synthhier)" in card


def test_manifest_card_for_downloaded_shards(tmp_path):
    samples = [{"__key__": f"{i:04d}", "txt": f"caption {i}", "jpg": b"\xff\xd8 not really"} for i in range(5)]
    write_shards(iter(samples), tmp_path / "cc3m", "cc3m", 2, source="cc3m", counts={"attempted": 7, "succeeded": 5})
    card = dataset_card(tmp_path / "cc3m")
    assert "Conceptual Captions 3M" in card and "acknowledging Google LLC" in card
    assert "| attempted | 7 |" in card and "| succeeded | 5 |" in card
    manifest = json.loads((tmp_path / "cc3m" / "manifest.json").read_text())
    assert "5 in 3 shards" in card
    assert all(e["sha256"][:16] in card for e in manifest["shards"])


def _run_dir(tmp_path, label="meru-tiny-s0"):
    run = tmp_path / "runs" / label
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        "model: {kind: meru, size: tiny, entail_weight: 0.2}\n"
        "data: {train: nowhere/train, batch_size: 16}\n"
        "optim: {lr: 0.002, total_steps: 30, warmup_steps: 5}\nruntime: {seed: 0}\n"
    )
    rows = [
        {"step": s, "loss": 3.0 - s / 10, "contrastive_loss": 2.9 - s / 10, "entailment_loss": 0.5}
        for s in (10, 20, 30)
    ]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "model.pt").write_bytes(b"weights")
    return run


def test_model_card_fields_and_numbers_match_the_records(tmp_path):
    run = _run_dir(tmp_path)
    zs = record("meru", 0, "zeroshot", "synthhier-shape", metrics={"top1": 71.25, "tie": 0.8125})
    zs.intervals = {"top1": [68.5, 74.0]}
    other = record("meru", 1, "zeroshot", "synthhier-shape", metrics={"top1": 10.0})  # another seed: not this run
    for r in (zs, other):
        write(tmp_path / "metrics", r)
    rc = main(
        [
            "card",
            "--model",
            str(run),
            "--metrics",
            str(tmp_path / "metrics"),
            "--out",
            str(run / "MODEL_CARD.md"),
            "--html",
            str(tmp_path / "card.html"),
        ]
    )
    assert rc == 0
    card = (run / "MODEL_CARD.md").read_text()
    for section in ("## Recipe", "## Data", "## Training", "## Headline metrics (95% intervals)", "## Provenance"):
        assert section in card
    assert "| zeroshot | synthhier-shape | top1 | 71.25 [68.5, 74] |" in card  # value and interval from the record
    assert "| zeroshot | synthhier-shape | tie | 0.8125 |" in card  # no interval recorded: none shown
    assert "10.0" not in card.split("## Headline")[1].split("## Provenance")[0]
    assert "| optim.lr | 0.002 |" in card and "30 of 30 steps" in card and "entailment_loss 0.5" in card
    import hashlib

    assert hashlib.sha256(b"weights").hexdigest() in card
    page = (tmp_path / "card.html").read_text()
    assert "<table>" in page and "71.25 [68.5, 74]" in page


def test_model_card_bad_input_is_one_line(tmp_path, capsys):
    rc = main(["card", "--model", str(tmp_path), "--metrics", str(tmp_path), "--out", str(tmp_path / "c.md")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "config.yaml missing" in err


def test_headline_rows_skip_unevaluated_metrics(tmp_path):
    recs = [record("clip", 0, "retrieval", "synthhier-retrieval", metrics={"i2t_r1": 50.0, "t2i_r1": float("nan")})]
    rows = cards.headline_rows(recs, "clip-tiny-s0")
    assert [(r["metric"], r["value"]) for r in rows] == [("i2t_r1", 50.0)]
