"""The family leaderboard: configs/leaderboard.yaml plans every checkpoint x evaluation without data; published
values are checked (disagreements said) and put beside ours with the difference and the protocol note; checkpoints
that cannot be fetched or await an adapter are listed one line each; the HTML page renders in headless Chromium
with every row and sorts by a clicked column; on fixtures the whole chain runs through the workflow (slow)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from meru.config import load_config_file
from meru.reporting import leaderboard as lb
from meru.reporting import reproduction as rp
from meru.reporting.outputs import released_run

from metric_helpers import record, write

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
HEADER = "model,size,training_data,task,dataset,metric,value,source,notes,protocol,conflict\n"


def _counts(stdout):
    table = stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_dry_run_plans_every_checkpoint_and_evaluation():
    """No data present: every checkpoint of the family is fetched, embedded and evaluated on everything, the
    compositional tests included; each names its source, training data and sha256 (null where none is published)."""
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--forceall", "--configfile", "configs/leaderboard.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    counts = _counts(r.stdout)
    cfg = load_config_file(ROOT / "configs" / "leaderboard.yaml")
    n, ev = len(cfg["pretrained"]["checkpoints"]), cfg["evaluation"]
    assert n == 19 and counts["released_checkpoint"] == n and counts["leaderboard"] == 1 and "train" not in counts
    assert counts["evaluate_zeroshot"] == counts["evaluate_prompts"] == n * len(ev["zeroshot"]) == n * 20
    assert counts["evaluate_retrieval"] == n * 2 and counts["evaluate_hierarcaps"] == n  # COCO + Flickr; HierarCaps
    assert counts["evaluate_linear_probe"] == n and ev["imagenet_hierarchy"]  # WordNet metrics in zeroshot-imagenet
    choice = ev["caption_choice"]  # SugarCrepe's seven subsets and ARO's two sets, for every checkpoint
    assert sum(s.startswith("sugar_crepe/") for s in choice) == 7 and sum(s.startswith("aro/") for s in choice) == 2
    assert counts["evaluate_caption_choice"] == n * 9
    names = {c["display"] for c in cfg["pretrained"]["checkpoints"]}
    for family in ("MERU", "CLIP", "HyCoCLIP", "UNCHA", "ATMG", "EuCLIP"):
        for size in ("S", "B") if family != "EuCLIP" else ("B",):
            assert any(name.startswith(f"{family}-{size}/16") for name in names), (family, size)
    assert {"MERU-L/16", "CLIP-L/16", "MERU-B/16 (DataComp)", "CLIP-B/16 (DataComp)"} <= names
    for c in cfg["pretrained"]["checkpoints"]:
        assert c["url"] and c["source"] and c.get("data", "redcaps") and "sha256" in c, c
    kinds = {
        c["display"].split("-")[0]: (c["kind"], c.get("format", c["kind"])) for c in cfg["pretrained"]["checkpoints"]
    }
    assert kinds["HyCoCLIP"] == ("hycoclip", "hycoclip") and kinds["UNCHA"] == ("uncha", "uncha")
    assert kinds["ATMG"] == ("meru", "atmg") and kinds["EuCLIP"] == ("euclip", "openclip-train")
    atmg = [c for c in cfg["pretrained"]["checkpoints"] if c["display"].startswith("ATMG")]
    assert all(c["name"] == "atmg" and c["curv_init"] == 0.1 and c["learn_curv"] is False for c in atmg)


def test_an_unavailable_checkpoint_leaves_the_plan(tmp_path):
    """`pretrained.unavailable: skip`: once a download recorded LABEL.unavailable, the plan has one checkpoint fewer
    (nothing of the missing one is fetched, embedded or evaluated) and still ends in the leaderboard."""
    released = tmp_path / "runs" / "released"
    released.mkdir(parents=True)
    (released / "meru-vit-l16-released.unavailable").write_text("https://example.org/x.pth: gone\n")
    cfg = tmp_path / "lb.yaml"
    cfg.write_text(f"base: {ROOT / 'configs' / 'leaderboard.yaml'}\nname: lb\nruns_dir: {tmp_path / 'runs'}\n")
    cmd = [sys.executable, "-m", "snakemake", "-n", "--forceall", "--configfile", str(cfg)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    counts = _counts(r.stdout)
    assert counts["released_checkpoint"] == 18 and counts["evaluate_zeroshot"] == 18 * 20 and counts["leaderboard"] == 1
    assert "meru-vit-l16-released" not in r.stdout


def test_published_disagreements_must_be_said(tmp_path):
    csv = tmp_path / "pub.csv"
    csv.write_text(
        HEADER + "clip,vit-s16,grit,zeroshot,caltech101,mean_per_class,73.6,zoo,n,,\n"
        "clip,vit-s16,grit,zeroshot,caltech101,mean_per_class,57.6,uncha,n,,\n"
    )
    with pytest.raises(rp.ReferenceError, match=r"row 2: clip vit-s16 caltech101 .* say so in its conflict column"):
        rp.read_published(csv)
    csv.write_text(HEADER + "clip,vit-s16,grit,zeroshot,food101,mean_per_class,1,zoo,n,,\n" * 2)
    with pytest.raises(rp.ReferenceError, match="rows 2 and 3: the same value key from the same source twice"):
        rp.read_published(csv)
    pub = rp.read_published()  # the committed file: every disagreement between sources is said
    grit = pub[(pub.model == "clip") & (pub["size"] == "vit-s16") & (pub.dataset == "caltech101")]
    assert sorted(grit.value.astype(float)) == [57.6, 73.6] and (grit.conflict != "").all()
    labelled = pub[(pub.model == "clip") & (pub["size"] == "vit-s16") & (pub.value == "79.1")]
    assert set(labelled.metric) == {"i2t_r5", "i2t_r10"} and (labelled.conflict != "").all()  # R@5 vs R@10
    assert (pub.source.str.strip() != "").all() and {"uncha", "hycoclip", "atmg"} <= set(pub.model)


def _fixture(tmp_path):
    """Records of three checkpoints (ATMG read as MERU under its own model name), one unavailable, one pending;
    published values for three of them."""
    cfg = {
        "name": "lb",
        "pretrained": {
            "checkpoints": [
                {"display": "MERU-S/16 (GRIT)", "kind": "meru", "size": "vit-s16", "data": "grit", "url": "u1"},
                {"display": "CLIP-S/16 (GRIT)", "kind": "clip", "size": "vit-s16", "data": "grit", "url": "u2"},
                {
                    "display": "MERU-B/16",
                    "kind": "meru",
                    "size": "vit-b16",
                    "url": "u3",
                    "batch": 2048,
                    "steps": 120000,
                },
                {"display": "ATMG-S/16", "name": "atmg", "kind": "meru", "size": "vit-s16", "url": "u4"},
            ]
        },
        "leaderboard": {
            "pending": [{"display": "UNCHA-S/16", "kind": "uncha", "size": "vit-s16", "data": "grit", "needs": "kind"}],
            "pending_evaluations": [{"name": "caption_choice", "sets": ["sugar_crepe/add_att"], "needs": "choice"}],
        },
    }
    m = tmp_path / "metrics"
    for kind, mpc, r5 in (("meru", 40.0, 70.0), ("clip", 38.5, 72.0)):
        label = released_run(cfg["pretrained"]["checkpoints"][kind == "clip"])["label"]
        common = dict(size="vit-s16-grit", label=label)
        write(m, record(kind, dataset="imagenet", metrics={"mean_per_class": mpc, "tie": 3.5}, **common))
        write(m, record(kind, dataset="food101", metrics={"mean_per_class": mpc - 10}, **common))
        write(m, record(kind, task="retrieval", dataset="coco", metrics={"i2t_r5": r5, "t2i_r5": r5 - 5}, **common))
        write(m, record(kind, task="prompts", dataset="imagenet", metrics={"top1_spread": 2.0}, **common))
        for subset, acc in (("add_att", 80.0), ("swap_obj", 60.0)):
            write(
                m, record(kind, task="caption-choice", dataset=f"sugar_crepe_{subset}", metrics={"acc": acc}, **common)
            )
    atmg = dict(model_name="atmg", size="vit-s16", label="atmg-vit-s16-released")
    write(m, record("meru", dataset="imagenet", metrics={"mean_per_class": 33.0}, **atmg))
    released = tmp_path / "released"
    released.mkdir()
    (released / "meru-vit-b16-released.unavailable").write_text("u3: download failed after 3 attempt(s) (timeout)\n")
    pub = tmp_path / "pub.csv"
    pub.write_text(
        HEADER + "meru,vit-s16,grit,zeroshot,imagenet,mean_per_class,35.4,zoo,n1,top-1 reported,\n"
        "clip,vit-s16,grit,zeroshot,caltech101,mean_per_class,73.6,zoo,n,,uncha gives 57.6\n"
        "clip,vit-s16,grit,zeroshot,caltech101,mean_per_class,57.6,uncha,n,,zoo gives 73.6\n"
        "clip,vit-s16,grit,retrieval,coco,i2t_r5,79.1,uncha,n,R@5 per UNCHA,zoo labels it R@10\n"
        "uncha,vit-s16,grit,zeroshot,imagenet,mean_per_class,43.9,uncha,n,,\n"
        "atmg,vit-s16,grit,zeroshot,imagenet,mean_per_class,34.1,uncha,n,,\n"
        "atmg,vit-s16,redcaps,zeroshot,imagenet,mean_per_class,34.0,atmg,n,,\n"
    )
    return cfg, m, released, pub


def test_leaderboard_puts_ours_beside_every_source(tmp_path):
    cfg, m, released, pub = _fixture(tmp_path)
    table, line = lb.write_leaderboard(m, pub, released, cfg, tmp_path / "out")
    comp = pd.read_csv(tmp_path / "out" / "leaderboard_comparison.csv", keep_default_na=False)
    row = comp[(comp.label == "meru-vit-s16-grit-released") & (comp.metric == "mean_per_class")].iloc[0]
    assert float(row.ours) == 40.0 and float(row.published) == 35.4 and float(row["diff"]) == pytest.approx(4.6)
    assert row.protocol == "top-1 reported" and not row.sources_disagree
    cal = comp[comp.dataset == "caltech101"]
    assert len(cal) == 2 and cal.sources_disagree.all() and (cal.ours == "").all()  # not evaluated
    r5 = comp[comp.metric == "i2t_r5"].iloc[0]
    assert float(r5["diff"]) == pytest.approx(72.0 - 79.1) and r5.sources_disagree  # conflict note
    status = dict(zip(table.label, table.status))
    assert status == {
        "meru-vit-s16-grit-released": "evaluated",
        "clip-vit-s16-grit-released": "evaluated",
        "meru-vit-b16-released": "unavailable",
        "atmg-vit-s16-released": "evaluated",
        "uncha-vit-s16-grit-released": "pending",
        "atmg-vit-s16-grit": "published only",
    }
    meru = table.set_index("label").loc["meru-vit-s16-grit-released"]
    assert meru["ImageNet"] == 40.0 and meru["mean over datasets"] == pytest.approx(35.0) and meru["TIE"] == 3.5
    assert meru["COCO i→t R@5"] == 70.0 and meru["top-1 spread"] == 2.0 and pd.isna(meru["Flickr i→t R@5"])
    assert meru["SugarCrepe (mean of 7)"] == 70.0 and pd.isna(meru["ARO VG-Relation"])  # the subsets it has
    # ATMG's published value goes to the ATMG checkpoint (model name atmg), not to MERU-S/16 of the same kind and size
    atmg = comp[comp.label == "atmg-vit-s16-released"]
    assert len(atmg) == 1 and float(atmg.ours.iloc[0]) == 33.0 and float(atmg.published.iloc[0]) == 34.0
    assert set(comp[comp.source == "atmg"].label) == {"atmg-vit-s16-released"}
    assert table.set_index("label").loc["clip-vit-s16-grit-released", "disagree"] == [
        "mean over datasets",  # Caltech-101's sources disagree
        "COCO i→t R@5",
    ]
    assert line == (
        "3 of 6 checkpoints evaluated; 1 unavailable; 1 pending; 1 published only; "
        "2 checkpoint metrics whose published sources disagree (marked ≠)"
    )
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert f"Summary: {line}" in md
    assert "- MERU-B/16 (meru-vit-b16-released): unavailable: u3: download failed after 3 attempt(s) (timeout)" in md
    assert "- UNCHA-S/16 (uncha-vit-s16-grit-released): pending: kind" in md
    assert "- caption_choice (sugar_crepe/add_att): pending evaluation: choice" in md
    assert "- MERU-B/16: u3 (sha256 not published; source not given)" in md
    assert "| MERU-B/16 | meru-vit-b16-released | redcaps | 2048 | 120000 | unavailable |" in md
    assert (
        "| CLIP-S/16 (GRIT) | retrieval | coco | i2t_r5 | 72 | 79.1 ≠ | -7.1 | uncha | R@5 per UNCHA | zoo labels" in md
    )
    wide = pd.read_csv(tmp_path / "out" / "leaderboard.csv").set_index("label")  # numbers, for papers
    assert list(wide.checkpoint)[:3] == ["MERU-S/16 (GRIT)", "CLIP-S/16 (GRIT)", "MERU-B/16"]
    assert wide.loc["clip-vit-s16-grit-released", "COCO i→t R@5"] == 72.0 and wide["steps"].iloc[2] == 120000
    assert wide.loc["clip-vit-s16-grit-released", "disagree"] == "mean over datasets;COCO i→t R@5"


def test_cli_one_line_for_a_bad_published_file(tmp_path):
    cfg, m, released, pub = _fixture(tmp_path)
    pub.write_text(HEADER + "meru,vit-s16,grit,zeroshot,imagenet,mean_per_class,nan,zoo,n,,\n")
    argv = ["leaderboard", "--metrics", str(m), "--published", str(pub), "--released", str(released)]
    p = subprocess.run(
        [sys.executable, "-m", "meru", *argv, "--config-json", json.dumps(cfg), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "pub.csv, row 2: value 'nan' is not a finite number" in p.stderr and not (tmp_path / "o").exists()


def _dom(page: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom"]
    done = subprocess.run(cmd + [page.as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    return done.stdout


def _rows(dom: str) -> list[str]:
    body = dom.split("<tbody>")[1].split("</tbody>")[0]
    return re.findall(r'<tr data-label="([^"]+)"', body)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium; CI installs it)")
def test_page_renders_every_row_and_sorts_in_chromium(tmp_path):
    cfg, m, released, pub = _fixture(tmp_path)
    table, _ = lb.write_leaderboard(m, pub, released, cfg, tmp_path / "out")
    page = tmp_path / "out" / "leaderboard.html"
    dom = _dom(page)
    assert 'id="leaderboard"' in dom and _rows(dom) == list(table.label)  # every checkpoint, config order
    for group in ("Zero-shot", "Retrieval", "WordNet", "HierarCaps", "Prompt sensitivity", "Compositional"):
        assert f">{group}</th>" in dom
    assert "unavailable: u3: download failed" in dom and 'class="disagree"' in dom
    # a real click on the ImageNet header (column 5 after checkpoint, data, batch, steps, status), twice
    col = 5
    click = f"<script>document.querySelectorAll('#leaderboard thead tr.columns th')[{col}].click();</script>"
    ascending = ["atmg-vit-s16-released", "clip-vit-s16-grit-released", "meru-vit-s16-grit-released"]  # 33 < 38.5 < 40
    for times, expected, sort in ((1, ascending, "ascending"), (2, ascending[::-1], "descending")):
        clicked = tmp_path / f"clicked{times}.html"
        clicked.write_text(page.read_text().replace("</body>", click * times + "</body>"))
        dom = _dom(clicked)
        rows = _rows(dom)
        assert sorted(rows) == sorted(table.label) and rows[:3] == expected  # cells without a value sort last
        assert f'aria-sort="{sort}"' in dom


@pytest.mark.slow
def test_leaderboard_runs_end_to_end_on_fixtures(tmp_path):
    """configs/leaderboard.yaml with fixture checkpoints behind file:// URLs (a random ViT-S/16 in the official
    format as HyCoCLIP's GRIT MERU-S, our CLIP at the test size, and one URL that does not exist) and small
    datasets: the first run fetches, embeds and evaluates what it can (--keep-going) and records the missing
    checkpoint; the second plans without it and writes the tables and the leaderboard, which says it is missing."""
    from official_format import save_official
    from test_caption_choice import SUGAR, write_sugar_crepe
    from test_workflow_datasets import env, write_mnist_raw, write_wds_retrieval

    from meru.models import build_model
    from meru.models.checkpoints import save_model

    import torch

    cfg = load_config_file(ROOT / "configs" / "leaderboard.yaml")
    torch.manual_seed(0)
    save_official(build_model("meru", "vit-s16"), tmp_path / "meru_vit_s.pth")
    save_model(build_model("clip", "tiny"), tmp_path / "clip.pt")
    evalsets = tmp_path / "evalsets"
    write_mnist_raw(evalsets / "mnist")
    write_wds_retrieval(evalsets / "coco")
    write_sugar_crepe(tmp_path / "sugar_crepe", "add_att", SUGAR)  # as released; the workflow prepares it
    cfg.update(results_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"), data_dir=str(tmp_path / "data"))
    cfg["pretrained"]["checkpoints"] = [
        {"display": "MERU-S/16 (GRIT)", "kind": "meru", "size": "vit-s16", "data": "grit", "batch": 768,
         "steps": 500000, "url": (tmp_path / "meru_vit_s.pth").as_uri(), "sha256": None, "source": "fixture"},
        {"display": "CLIP-tiny", "kind": "clip", "size": "tiny", "url": (tmp_path / "clip.pt").as_uri(), "sha256": None},
        {"display": "CLIP-B/16 (GRIT)", "kind": "clip", "size": "vit-b16", "data": "grit",
         "url": (tmp_path / "gone.pth").as_uri(), "sha256": None},
    ]  # fmt: skip
    cfg["evaluation"].update(
        evalsets_root=str(evalsets), zeroshot=["mnist"], retrieval=["coco"], linear_probe=[], imagenet_hierarchy=False
    )
    cfg["evaluation"].update(hierarcaps=False, batch_size=8, num_workers=0, caption_choice=["sugar_crepe/add_att"])
    cfg["evaluation"]["caption_choice_sources"] = {"sugar_crepe": str(tmp_path / "sugar_crepe")}
    cfg["resources"]["embed"].update(threads=1, gpu=0, mem_mb=2000)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    res = tmp_path / "results"
    tables = [res / "tables" / f for f in ("leaderboard.html", "leaderboard.md", "zeroshot.csv", "retrieval.csv")]

    def snakemake(*extra):
        cmd = [sys.executable, "-m", "snakemake", *map(str, tables), "--cores", "2", "--nolock", *extra]
        cmd += ["--configfile", str(tmp_path / "cfg.yaml")]
        return subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True, text=True, env=env(), timeout=600)

    first = snakemake("--keep-going")
    marker = tmp_path / "runs" / "released" / "clip-vit-b16-grit-released.unavailable"
    assert first.returncode != 0 and marker.is_file(), first.stdout[-3000:] + first.stderr[-3000:]
    assert (res / "metrics" / "meru-vit-s16-grit-released" / "retrieval-coco.json").is_file()  # the rest went on
    assert not tables[0].exists()  # no leaderboard that passes a partial run off as complete
    second = snakemake()
    logs = "\n".join(f"{p}:\n{p.read_text()[-1500:]}" for p in (res / "logs").rglob("*.log"))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:] + logs[-6000:]
    md = tables[1].read_text()
    assert f"- CLIP-B/16 (GRIT) (clip-vit-b16-grit-released): unavailable: {(tmp_path / 'gone.pth').as_uri()}" in md
    assert re.search(r"Summary: 2 of \d+ checkpoints evaluated;( \d+ published only;)? 1 unavailable;", md), md[:600]
    board = pd.read_csv(res / "tables" / "leaderboard.csv").set_index("label")
    choice = json.loads(
        (res / "metrics" / "meru-vit-s16-grit-released" / "caption-choice-sugar_crepe_add_att.json").read_text()
    )
    assert board.loc["meru-vit-s16-grit-released", "SugarCrepe (mean of 7)"] == pytest.approx(choice["metrics"]["acc"])
    comp = pd.read_csv(res / "tables" / "leaderboard_comparison.csv", keep_default_na=False)
    coco = comp[(comp.label == "meru-vit-s16-grit-released") & (comp.metric == "i2t_r10") & (comp.dataset == "coco")]
    ours = json.loads((res / "metrics" / "meru-vit-s16-grit-released" / "retrieval-coco.json").read_text())
    assert len(coco) and (coco.ours.astype(float) == ours["metrics"]["i2t_r10"]).all()  # ours beside published
    assert "clip-vit-b16-grit-released" not in (res / "tables" / "zeroshot.csv").read_text()
