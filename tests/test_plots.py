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
