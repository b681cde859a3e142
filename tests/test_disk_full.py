"""A full disk (here: the file size limit, RLIMIT_FSIZE, as `ulimit -f` sets it) during a checkpoint, an embedding
cache and a table write, through the real `meru` command: one line naming the file and the free space, no
temporary file left, the previous good file byte-equal, and a rerun without the limit works."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meru.cli import main
from meru.io import DiskFullError, atomic_path, write_text

from cli_helpers import tiny_sets_and_model
from metric_helpers import record, write

ROOT = Path(__file__).resolve().parent.parent


def _meru_limited(argv: list[str], limit: int) -> subprocess.CompletedProcess:
    """``python -m meru ARGV`` with every file it writes limited to ``limit`` bytes; SIGXFSZ ignored so that the
    write fails with EFBIG instead of killing the process."""

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "meru", *argv],
        preexec_fn=limit_file_size,
        restore_signals=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_one_line(proc: subprocess.CompletedProcess, path: Path) -> str:
    progress = re.compile(r": \d+/\d+ \w+ \(.*ETA")  # the progress line of meru train / embed
    lines = [x for x in proc.stderr.splitlines() if x.strip() and not progress.search(x)]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert str(path) in line and "file size limit" in line and "free on its disk" in line, line
    return line


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


def test_atomic_path_turns_enospc_into_one_line_and_keeps_the_old_file(tmp_path):
    target = write_text(tmp_path / "t.txt", "good\n")
    with pytest.raises(DiskFullError, match=r"t.txt: not written, the disk is full .*free on its disk") as err:
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert target.read_text() == "good\n" and os.listdir(tmp_path) == ["t.txt"]
    with pytest.raises(ValueError, match="other"):  # other errors pass through unchanged
        with atomic_path(target):
            raise ValueError("other")


def test_checkpoint_write_past_the_limit(tmp_path):
    data = tmp_path / "data"
    sys.path.insert(0, str(Path(__file__).parent))
    from test_reliability import _samples  # the reliability tests' tiny PNG samples

    from meru.data.shards import write_shards

    write_shards(_samples(32), data, "t", shard_size=32, source="test")
    run = tmp_path / "run"

    def config(steps):
        cfg = tmp_path / f"c{steps}.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "data": {"train": str(data), "batch_size": 8, "num_workers": 0},
                    "optim": {"total_steps": steps, "warmup_steps": 1},
                    "runtime": {"tensorboard": False, "device": "cpu", "threads": 1, "checkpoint_every": 2},
                }
            )
        )
        return ["train", "--config", str(cfg), "--model", "meru", "--size", "tiny", "--seed", "0", "--out", str(run)]

    assert main(config(2)) == 0
    last = run / "ckpt" / "last.pt"
    good = last.read_bytes()
    proc = _meru_limited([*config(4), "--apply-config-changes"], limit=len(good) // 2)
    _assert_one_line(proc, last)
    assert last.read_bytes() == good and not _temporaries(run)
    assert main([*config(4), "--apply-config-changes"]) == 0  # space freed: the run resumes and finishes
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1]).get("step", 4) == 4
    assert (run / "model.pt").is_file() and not _temporaries(run)


def test_embedding_cache_write_past_the_limit(tmp_path):
    (tmp_path / "sets").mkdir()
    sets, ckpt = tiny_sets_and_model(tmp_path / "sets")
    out = tmp_path / "emb" / "pool.pt"
    argv = ["embed", "--checkpoint", ckpt, "--text-pool", str(tmp_path / "sets" / "captions.jsonl"), "--out", str(out)]
    assert main(argv) == 0
    before = _snapshot(tmp_path / "emb")
    proc = _meru_limited(argv, limit=out.stat().st_size // 2)
    _assert_one_line(proc, out)
    assert _snapshot(tmp_path / "emb") == before and not _temporaries(tmp_path)
    out.unlink()
    assert main(argv) == 0 and out.is_file()


def test_table_write_past_the_limit(tmp_path):
    metrics = tmp_path / "metrics"
    for kind in ("meru", "clip"):
        for seed in (0, 1):
            write(metrics, record(kind, seed, metrics={"top1": 50.0 + seed}, intervals={"top1": [49.0, 52.0]}))
    argv = ["tables", "--metrics", str(metrics), "--out", str(tmp_path / "tables"), "--n-boot", "20"]
    assert main(argv) == 0
    before = _snapshot(tmp_path / "tables")
    proc = _meru_limited(argv, limit=200)
    line = _assert_one_line(proc, tmp_path / "tables")
    assert line.startswith("meru tables: ")
    assert _snapshot(tmp_path / "tables") == before and not _temporaries(tmp_path)
    assert main(argv) == 0
