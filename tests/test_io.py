"""The one atomic writer (meru.io): whole files or none, strict JSON, stale temporaries."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from meru.io import (
    atomic_path,
    fresh_temp_dir,
    read_json,
    remove_stale_temps,
    replace_dir,
    save_figure,
    write_json,
    write_text,
)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_new_file_appears_only_when_finished(tmp_path):
    target = tmp_path / "sub" / "m.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
        assert not target.exists() and tmp.parent == target.parent and tmp.name.startswith(".m.json.tmp-")
    assert target.read_text() == "{}"


def test_keep_suffix_lets_writers_pick_the_format(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    save_figure(fig, tmp_path / "f.pdf")
    save_figure(fig, tmp_path / "f.png")
    plt.close(fig)
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]


def test_strict_json_refuses_nan_or_writes_null(tmp_path):
    with pytest.raises(ValueError, match=r"\$\.metrics\.top1"):
        write_json(tmp_path / "a.json", {"metrics": {"top1": float("nan")}})
    assert not (tmp_path / "a.json").exists()
    obj = {"x": np.float32(0.5), "t": torch.tensor([1.0, math.inf]), "p": tmp_path}
    write_json(tmp_path / "b.json", obj, nonfinite="null")
    assert read_json(tmp_path / "b.json") == {"x": 0.5, "t": [1.0, None], "p": str(tmp_path)}
    (tmp_path / "c.json").write_text('{"x": NaN}')
    with pytest.raises(ValueError, match="c.json: contains NaN"):
        read_json(tmp_path / "c.json")
    assert json.loads((tmp_path / "b.json").read_text())["x"] == 0.5


def test_save_torch_loads_with_weights_only(tmp_path):
    from meru.models.checkpoints import save_torch

    save_torch(tmp_path / "x.pt", {"a": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "x.pt", weights_only=True)["a"], torch.arange(3))


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".x.pt.tmp-{pid}"
    stale.write_text("junk")
    mine = tmp_path / f".x.pt.tmp-{os.getpid()}"
    mine.write_text("in use")
    assert remove_stale_temps(tmp_path / "x.pt") == [stale]
    assert mine.exists() and not stale.exists()


def test_replace_dir_swaps_whole_directories(tmp_path):
    final = tmp_path / "data"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp = fresh_temp_dir(final)
    (tmp / "new.txt").write_text("new")
    replace_dir(tmp, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
