"""meru plots writes every PNG, valid, with and without data."""

import json

from PIL import Image

from meru.reporting import plots


def _check(out):
    for p in plots.PLOTS:
        f = out / f"{p}.png"
        assert f.stat().st_size > 0
        with Image.open(f) as im:
            im.verify()
            assert im.format == "PNG"


def test_plots_with_data(tmp_path):
    m = tmp_path / "metrics" / "meru-tiny-s0"
    m.mkdir(parents=True)
    for kind in ("meru", "clip"):
        (m.parent / f"{kind}.json").write_text(json.dumps({
            "kind": kind, "size": "tiny", "seed": 0, "dataset": "d", "task": "zeroshot",
            "metrics": {"top1": 0.5}, "intervals": {"top1": [0.4, 0.6]}}))
        (m.parent / f"{kind}-s.json").write_text(json.dumps({
            "kind": kind, "size": "tiny", "seed": 0, "dataset": "d", "task": "structure", "metrics": {},
            "per_item": {"image_root_distance": [1.0, 2.0], "text_root_distance": [0.5, 1.5],
                         "text_specificity": [1, 2]}}))
        (m.parent / f"{kind}-t.json").write_text(json.dumps({
            "kind": kind, "size": "tiny", "seed": 0, "dataset": "d", "task": "traversal", "metrics": {},
            "traversals": [{"captions": ["a red square", "a square", "an object"]}]}))
    runs = tmp_path / "runs" / "meru-tiny-s0"
    runs.mkdir(parents=True)
    (runs / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1 / (s + 1), "curv": 1.0}) + "\n"
                                            for s in range(5)))
    out = tmp_path / "plots"
    plots.write_plots(tmp_path / "metrics", tmp_path / "runs", out)
    _check(out)


def test_plots_without_data(tmp_path):
    (tmp_path / "metrics").mkdir()
    plots.write_plots(tmp_path / "metrics", tmp_path / "none", tmp_path / "plots")
    _check(tmp_path / "plots")


def test_zeroshot_bars_show_one_metric(tmp_path):
    recs = [{"kind": k, "size": "tiny", "seed": 0, "dataset": f"zeroshot_{d}", "task": "zeroshot", "_path": "x",
             "metrics": {"top1": 50.0, "top5": 90.0, "mean_per_class": 49.0}, "intervals": {}}
            for k in ("meru", "clip") for d in ("a", "b")]
    df = plots.zeroshot_frame(recs)
    assert list(df.metric) == ["top1", "top1"] and list(df.dataset) == ["zeroshot_a", "zeroshot_b"]
    assert list(plots.zeroshot_frame(recs, "top5").meru_mean) == [90.0, 90.0]
    assert list(plots.zeroshot_frame(recs, "absent").metric) == ["mean_per_class"] * 2  # first one present
