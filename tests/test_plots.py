"""meru plots writes every figure as PDF + 200-dpi PNG, from metric JSON only, with and without data."""

import ast
import json
from pathlib import Path

import pytest

from PIL import Image

from meru.records import load_metric_records
from meru.reporting import plots

from metric_helpers import record, write

ROOT = Path(__file__).resolve().parent.parent


def _check(out, names):
    for p in names:
        assert (out / f"{p}.pdf").read_bytes()[:5] == b"%PDF-"
        with Image.open(out / f"{p}.png") as im:
            im.verify()
            assert im.format == "PNG"
        with Image.open(out / f"{p}.png") as im:
            assert round(im.info["dpi"][0]) == plots.DPI


def _records(d, kinds=("meru", "clip", "euclip"), sizes=("tiny",), seeds=(0, 1)):
    for kind in kinds:
        for size in sizes:
            for seed in seeds:
                geometry = {"space": "euclid", "root_distance": "distance (a.u.)"} if kind == "euclip" else {}
                zs = record(kind, seed, "zeroshot", size=size, metrics={"top1": 50.0 + seed}, details={"n_classes": 9})
                zs.intervals = {"top1": [45.0, 55.0]}
                write(d, zs)
                plot = {
                    "histogram": {"edges": [0.0, 1.0, 2.0], "image_counts": [3, 4], "text_counts": [5, 1]},
                    "text_root_by_specificity": {
                        "level": [0, 1, 2],
                        "n": [3, 3, 3],
                        "mean": [0.2, 0.5, 0.9],
                        "sd": [0.1, 0.1, 0.1],
                    },
                }
                write(d, record(kind, seed, "structure", size=size, plot=plot, **geometry and {"geometry": geometry}))
                paths = [{"key": "0", "steps": [{"text": "a red square"}, {"text": "[ROOT]"}]}]
                write(d, record(kind, seed, "traversal", size=size, plot={"paths": paths}))


def _run(runs, name, kind, size, seed):
    """A training run directory as `meru train` leaves it: log.jsonl and config.yaml."""
    d = runs / name
    d.mkdir(parents=True)
    (d / "log.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1 / (s + 1), "curv": 1.0}) + "\n" for s in range(5))
    )
    (d / "config.yaml").write_text(f"model: {{kind: {kind}, size: {size}}}\nruntime: {{seed: {seed}}}\n")


def test_plots_with_data_one_size_has_no_scaling(tmp_path):
    _records(tmp_path / "metrics")
    _run(tmp_path / "runs", "meru-tiny-s0", "meru", "tiny", 0)
    _run(tmp_path / "runs", "renamed by hand", "clip", "tiny", 3)  # identity from config.yaml, not the name
    out = tmp_path / "plots"
    (out).mkdir()
    (out / "scaling.png").write_bytes(b"stale")
    written = plots.write_plots(tmp_path / "metrics", tmp_path / "runs", out)
    names = plots.plot_names(1)
    assert "scaling" not in names and not (out / "scaling.png").exists()
    assert sorted(p.name for p in written) == sorted(f"{n}.{f}" for n in names for f in ("pdf", "png"))
    _check(out, names)


def test_scaling_with_two_sizes(tmp_path):
    _records(tmp_path / "metrics", kinds=("meru", "clip"), sizes=("tiny", "small-cpu"), seeds=(0,))
    out = tmp_path / "plots"
    plots.write_plots(tmp_path / "metrics", tmp_path / "none", out)
    _check(out, plots.PLOTS)


def test_plots_without_data(tmp_path):
    (tmp_path / "metrics").mkdir()
    plots.write_plots(tmp_path / "metrics", tmp_path / "none", tmp_path / "plots")
    _check(tmp_path / "plots", plots.plot_names(0))


def test_one_panel_per_geometry(tmp_path, monkeypatch):
    _records(tmp_path / "metrics")
    recs = load_metric_records(tmp_path / "metrics")
    groups = plots._by_geometry(plots._structure(recs))
    # each record's geometry names its axis: three kinds, three axes, three units
    assert sorted(groups) == sorted(
        ["distance (a.u.)", "angle to the mean text direction (rad)", "geodesic distance from the origin"]
    )


def test_reporting_reads_no_embeddings_and_no_geometry():
    for path in sorted((ROOT / "meru" / "reporting").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        bad = {m for m in imported if m.startswith(("meru.evaluation", "meru.lorentz", "meru.spaces", "torch"))}
        assert not bad, f"{path.name} imports {bad}"
    src = (ROOT / "meru" / "reporting" / "plots.py").read_text()
    assert '== "meru"' not in src and "torch.load" not in src


def test_zeroshot_frame_picks_top1(tmp_path):
    recs = [
        record(k, 0, "zeroshot", f"synthhier-{d}", metrics={"top1": 50.0, "top5": 90.0, "mean_per_class": 49.0})
        for k in ("meru", "clip")
        for d in ("a", "b")
    ]
    for r in recs:
        r.details["n_classes"] = 10
    df = plots.zeroshot_frame(recs)
    assert list(df.block) == ["Top-1"] * 4 and list(df.column) == ["a", "a", "b", "b"]


def test_training_run_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "runs" / "meru-tiny-s0").mkdir(parents=True)
    (tmp_path / "runs" / "meru-tiny-s0" / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    with pytest.raises(ValueError, match="config.yaml missing"):
        plots.training_curves(tmp_path / "runs", tmp_path / "out" / "training_curves")


# --------------------------------------------------------------------------- figure content


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plot functions draw, kept open (``_save`` still writes the files)."""
    kept = []
    save = plots._save

    def keep(fig, path):
        kept.append(fig)
        fig.canvas.draw()  # layout done, so the artists' extents are final
        out = [path.with_suffix(".png")]
        fig.savefig(out[0], dpi=50)
        return out

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    monkeypatch.setattr(plots, "_save", save)


def _zeroshot(levels: dict[str, tuple[float, float, int]]):
    """Zero-shot records, two kinds x two seeds: {level: (meru top-1, clip top-1, n_classes)}."""
    recs = []
    for level, (m, c, n) in levels.items():
        for kind, v in (("meru", m), ("clip", c)):
            for seed in (0, 1):
                r = record(kind, seed, "zeroshot", f"synthhier-{level}", metrics={"top1": v + seed})
                r.details["n_classes"] = n
                r.intervals = {"top1": [v + seed - 1.0, v + seed + 1.0]}
                recs.append(r)
    return recs


def test_zeroshot_bars_chance_lines_legend_outside_and_zoomed_axes(tmp_path, figures):
    recs = _zeroshot({"category": (92.0, 95.0, 2), "shape": (15.0, 18.0, 12)})
    plots.zeroshot_bars(recs, tmp_path / "zeroshot_bars")
    fig = figures[0]
    axes = fig.axes
    assert len(axes) == 2  # one panel per dataset column, each with its own axis
    # small gaps: zoomed axes, not 0-100
    lo, hi = axes[0].get_ylim()
    assert 85 < lo < 91 and 97 < hi < 100
    # chance 100/12 = 8.3% is near the shape values (14-20%): a line on that axis; 50% is far below 91-97%: a note
    chance = {ax.get_title().split()[0]: [a for a in ax.get_children() if a.get_gid() == "chance"] for ax in axes}
    assert chance["category"] and chance["shape"]
    assert any(getattr(a, "get_ydata", None) and a.get_ydata()[0] == pytest.approx(100 / 12) for a in chance["shape"])
    assert "below axis" in chance["category"][0].get_text()  # chance 50% is far below a 90-99% axis
    # one figure legend, outside every panel
    assert not any(ax.get_legend() for ax in axes) and len(fig.legends) == 1
    legend_box = fig.legends[0].get_window_extent()
    assert all(not legend_box.overlaps(ax.get_window_extent()) for ax in axes)
    # no constant tick labels: the single size is not under every tick
    ticks = [t.get_text() for ax in axes for t in ax.get_xticklabels()]
    assert ticks == ["CLIP", "MERU"] * 2 and "tiny" in fig._suptitle.get_text()


def test_zoomed_limits():
    assert plots.zoomed_limits(10.0, 90.0, 50.0) == (0.0, 100.0)  # wide spread: the whole axis
    lo, hi = plots.zoomed_limits(70.0, 80.0, 8.0)
    assert 60 < lo < 70 and 80 < hi < 90  # chance far below: not worth the space
    lo, hi = plots.zoomed_limits(30.0, 40.0, 25.0)
    assert lo < 25.0 < hi  # chance near: shown


def test_training_curves_components_on_their_own_axes(tmp_path, figures):
    runs = tmp_path / "runs"
    for kind, entail in (("meru", True), ("clip", False)):
        d = runs / f"{kind}-tiny-s0"
        d.mkdir(parents=True)
        rows = [
            {"step": s, "contrastive_loss": 3.0 / s, "loss": 3.0 / s + (0.1 if entail else 0.0)}
            | ({"entailment_loss": 0.5} if entail else {})
            for s in range(1, 41)
        ]
        (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "config.yaml").write_text(f"model: {{kind: {kind}, size: tiny}}\nruntime: {{seed: 0}}\n")
    plots.training_curves(runs, tmp_path / "training_curves")
    fig = figures[0]
    titles = {ax.get_title(): ax for ax in fig.axes}
    contrastive, entail = titles["contrastive loss"], titles["entailment loss (unweighted)"]
    assert contrastive is not entail
    assert len(contrastive.get_lines()) == 4 and len(entail.get_lines()) == 2  # raw + smoothed per run
    w, h = fig.get_size_inches()
    assert w / h < 2  # not a strip
    assert len(fig.legends) == 1 and all(t.get_fontsize() >= 8 for t in fig.legends[0].get_texts())


def test_smooth_is_a_debiased_ema():
    assert plots.smooth([2.0] * 50) == pytest.approx([2.0] * 50)  # a constant stays constant from the first step
    v = [0.0, 10.0, 0.0, 10.0]
    assert list(plots.smooth(v, 0.0)) == v
    s = plots.smooth(v, 0.5)
    assert s[1] == pytest.approx((0.5 * 0 * 0.5 + 0.5 * 10) / (1 - 0.25))


def test_traversal_shows_thumbnails_and_captions(tmp_path, figures):
    import numpy as np
    import webdataset as wds

    from meru.data.wds_eval import images_by_key

    folder = tmp_path / "eval" / "test"
    folder.mkdir(parents=True)
    (folder / "nshards.txt").write_text("1\n")
    with wds.TarWriter(str(folder / "0.tar")) as w:
        for i in range(3):
            buf = __import__("io").BytesIO()
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(buf, "PNG")
            w.write({"__key__": f"k{i}", "png": buf.getvalue(), "cls": str(i)})
    images = images_by_key(tmp_path / "eval", ["k1", "k2", "missing"])
    assert sorted(images) == ["k1", "k2"] and images["k2"].getpixel((0, 0)) == (80, 80, 80)
    recs = []
    for kind in ("meru", "clip"):
        paths = [
            {
                "key": k,
                "steps": [{"text": f"caption of {k}", "correct": k != "k2"}, {"text": "[ROOT]", "correct": None}],
            }
            for k in ("k1", "k2")
        ]
        recs.append(record(kind, 0, "traversal", plot={"paths": paths}))
    plots.traversal(recs, tmp_path / "traversal", images)
    fig = figures[0]
    shown = [a for ax in fig.axes for a in ax.get_images()]
    assert len(shown) == 2  # one thumbnail per image row
    texts = [t for ax in fig.axes for t in ax.texts]
    assert sum("caption of k1" in t.get_text() for t in texts) == 2  # once per kind
    assert all(t.get_color() == "tab:red" for t in texts if "caption of k2" in t.get_text())
    plots.traversal(recs, tmp_path / "traversal", {})  # without images: placeholders naming the key
    assert any("k1" in t.get_text() and "not" in t.get_text() for ax in figures[1].axes for t in ax.texts)
