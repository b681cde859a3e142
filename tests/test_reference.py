"""`meru reference refresh` writes only what it is asked to write; `meru reference compare` says "equal" only
when every record and value matches one to one (issue 22)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meru.cli import main
from meru.reporting import reference as ref
from meru.reporting.reproduction import ReferenceError

from metric_helpers import record, write

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference" / "default"


def _finished_run(tmp_path) -> Path:
    run = tmp_path / "results"
    for kind in ("meru", "clip"):
        write(run / "metrics", record(kind, 0, metrics={"top1": 60.0}, intervals={"top1": [59.0, 61.0]}))
    cfg = {"name": "t", "models": ["meru", "clip"], "sizes": ["tiny"], "seeds": [0]}
    (run / "PROVENANCE.md").write_text(f"# Provenance\n\n## Config\n\n```json\n{json.dumps(cfg, indent=1)}\n```\n")
    (run / "tables").mkdir()
    for t in ("zeroshot.csv", "zeroshot.md", "claims.csv", "reproduction.csv", "reproduction.md"):
        (run / "tables" / t).write_text("x\n")
    (run / "plots").mkdir()
    (run / "plots" / "a.png").write_bytes(b"png")
    (run / "benchmarks" / "train").mkdir(parents=True)
    (run / "benchmarks" / "train" / "meru-tiny-s0.tsv").write_text("s\n1\n")
    (run / "embeddings" / "meru-tiny-s0").mkdir(parents=True)
    (run / "embeddings" / "meru-tiny-s0" / "x.pt").write_bytes(b"big")
    return run


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_refresh_copies_exactly_the_reference_and_refuses_incomplete_runs(tmp_path):
    run = _finished_run(tmp_path)
    dest = tmp_path / "reference" / "default"
    ref.refresh(run, dest)  # a new directory
    assert ref.is_reference(dest)
    (dest / "stale.txt").write_text("old")
    copied = ref.refresh(run, dest)  # a reference: replaced whole
    assert set(copied) == {"PROVENANCE.md", "metrics", "tables", "plots", "benchmarks/train"}
    assert not (dest / "stale.txt").exists() and not (dest / "embeddings").exists()
    assert (dest / "tables" / "zeroshot.csv").exists() and not (dest / "tables" / "reproduction.md").exists()
    assert (dest / "metrics" / "meru-tiny-s0" / "zeroshot-synthhier-shape.json").exists()
    # an incomplete run: a configured seed without metrics
    shutil.rmtree(run / "metrics" / "clip-tiny-s0")
    (run / "tables" / "claims.csv").unlink()
    with pytest.raises(ReferenceError, match="clip-tiny-s0.*\n.*claims.csv"):
        ref.refresh(run, dest)
    assert (dest / "tables" / "zeroshot.csv").exists()  # the old reference stays


def test_committed_reference_is_marked_as_one():
    assert ref.is_reference(REFERENCE)


@pytest.mark.parametrize("where", ["same", "parent", "grandparent", "inside_metrics", "unrelated", "reference_parent"])
def test_refresh_deletes_nothing_it_was_not_asked_to_write(tmp_path, capsys, where):
    """--to equal to --from, a folder containing it, a folder inside what it copies, an unrelated non-empty
    folder, the folder holding the reference and a note beside it: refused in one line, every file byte-equal."""
    run = _finished_run(tmp_path / "work")
    ref.refresh(run, tmp_path / "work" / "reference" / "default")
    (tmp_path / "work" / "reference" / "notes.md").write_text("keep me\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("\\section{keep}\n")
    dest = {
        "same": run,
        "parent": run.parent,
        "grandparent": tmp_path,
        "inside_metrics": run / "metrics" / "meru-tiny-s0",
        "unrelated": tmp_path / "mine",
        "reference_parent": tmp_path / "work" / "reference",
    }[where]
    before = _snapshot(tmp_path)
    assert main(["reference", "refresh", "--from", str(run), "--to", str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("meru reference refresh: --to ") and str(dest) in err
    assert _snapshot(tmp_path) == before
    if where in ("unrelated", "reference_parent"):
        assert "--force" in err


def test_refresh_force_replaces_a_non_reference_directory(tmp_path):
    run = _finished_run(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "old.txt").write_text("x")
    assert main(["reference", "refresh", "--from", str(run), "--to", str(tmp_path / "mine"), "--force"]) == 0
    assert ref.is_reference(tmp_path / "mine") and not (tmp_path / "mine" / "old.txt").exists()
    assert (tmp_path / "mine" / "metrics" / "meru-tiny-s0" / "zeroshot-synthhier-shape.json").is_file()


def test_refresh_cleans_the_temporaries_of_killed_refreshes(tmp_path):
    run = _finished_run(tmp_path)
    dest = tmp_path / "reference" / "default"
    ref.refresh(run, dest)
    pid = _dead_pid()
    for leftover in (f"default.tmp-{pid}", f"default.old-{pid}", f".default.new-{pid}"):
        shutil.copytree(dest, dest.parent / leftover)
    ref.refresh(run, dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["default"]
    # killed between the two renames: the reference was set aside and the new one not yet moved in
    marker_text = (dest / "tables" / "zeroshot.csv").read_text()
    os.replace(dest, dest.parent / f"default.old-{pid}")
    ref.recover_interrupted(dest)
    assert ref.is_reference(dest) and (dest / "tables" / "zeroshot.csv").read_text() == marker_text
    assert sorted(p.name for p in dest.parent.iterdir()) == ["default"]


# --------------------------------------------------------------------------- compare


def _compare(run, reference, capsys, *extra) -> tuple[int, str]:
    code = main(["reference", "compare", "--from", str(run), "--to", str(reference), *extra])
    out = capsys.readouterr()
    return code, (out.out + out.err).strip()


@pytest.fixture
def run_copy(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(REFERENCE / "metrics", run / "metrics")
    return run


REC = Path("meru-cpu-conv-s1") / "zeroshot-synthhier-shape.json"


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_compare_reference_equals_itself_and_finds_moved_numbers(run_copy, tmp_path, capsys):
    code, line = _compare(run_copy, REFERENCE, capsys, "--out", str(tmp_path / "same.md"))
    assert code == 0 and line.startswith("meru reference compare: all equal") and len(line.splitlines()) == 1
    assert "**all equal**" in (tmp_path / "same.md").read_text()

    def move(d):
        d["metrics"]["top1"] += 1e-9
        d["per_item"]["correct"][7] = 1 - d["per_item"]["correct"][7]

    _edit(run_copy / "metrics" / REC, move)
    (run_copy / "metrics" / "clip-cpu-conv-s2" / "retrieval-synthhier.json").unlink()
    code, line = _compare(run_copy, REFERENCE, capsys, "--out", str(tmp_path / "diff.md"))
    assert code == 1 and "NOT EQUAL: 2 values differ; 1 record(s)/file(s) only in" in line
    text = (tmp_path / "diff.md").read_text()
    assert "per_item.correct[7]" in text and "| metrics.top1 |" in text
    assert "Only in" in text and "clip-cpu-conv-s2/retrieval/synthhier-retrieval" in text
    result = ref.compare_runs(run_copy, REFERENCE, rel_tol=1e-6)  # the 1e-9 move is inside a 1e-6 tolerance
    assert [d[1] for d in result["differ"]] == ["per_item.correct[7]"]


def test_compare_missing_record_is_a_clear_difference(run_copy, capsys):
    (run_copy / "metrics" / REC).unlink()
    code, line = _compare(run_copy, REFERENCE, capsys)
    assert code == 1 and "0 values differ" not in line
    assert f"1 record(s)/file(s) only in {REFERENCE}: meru-cpu-conv-s1/zeroshot/synthhier-shape" in line


def test_compare_second_record_with_other_numbers_differs(run_copy, capsys):
    twin = run_copy / "metrics" / REC.with_name("zeroshot-synthhier-shape-copy.json")
    shutil.copy(run_copy / "metrics" / REC, twin)
    _edit(twin, lambda d: d["metrics"].update(top1=d["metrics"]["top1"] + 5))
    code, line = _compare(run_copy, REFERENCE, capsys)
    assert code == 1 and "only in" in line and "zeroshot-synthhier-shape-copy.json" in line
    (run_copy / "metrics" / REC).unlink()  # the other one alone: its numbers differ
    code, line = _compare(run_copy, REFERENCE, capsys)
    assert code == 1 and "1 values differ" in line
    twin.unlink()
    shutil.copy(REFERENCE / "metrics" / REC, run_copy / "metrics" / REC)
    assert _compare(run_copy, REFERENCE, capsys)[0] == 0


@pytest.mark.parametrize("part", ["intervals", "per_item", "details"])
def test_compare_values_the_reference_lacks_differ(run_copy, capsys, part):
    _edit(run_copy / "metrics" / REC, lambda d: d[part].update(extra=[1.0, 2.0]))
    code, line = _compare(run_copy, REFERENCE, capsys)
    assert code == 1 and "1 values differ" in line
    assert ref.compare_runs(run_copy, REFERENCE)["differ"][0][1:] == (f"{part}.extra", "[1.0, 2.0]", ref.ABSENT)


def test_compare_checks_the_clip_benchmark_side_files(run_copy, capsys):
    side = run_copy / "metrics" / "meru-cpu-conv-s1" / "retrieval-synthhier.clip_benchmark.json"
    _edit(side, lambda d: d["metrics"].update({"image_retrieval_recall@1": 0.5}))
    code, line = _compare(run_copy, REFERENCE, capsys)
    assert code == 1 and "1 values differ" in line
    assert ref.compare_runs(run_copy, REFERENCE)["differ"][0][:2] == (
        "meru-cpu-conv-s1/retrieval-synthhier.clip_benchmark.json",
        "metrics.image_retrieval_recall@1",
    )
    side.unlink()
    code, line = _compare(run_copy, REFERENCE, capsys)
    assert code == 1 and "retrieval-synthhier.clip_benchmark.json" in line


def test_compare_two_empty_runs_is_not_equal(tmp_path, capsys):
    for d in ("a", "b"):
        (tmp_path / d / "metrics").mkdir(parents=True)
    code, line = _compare(tmp_path / "a", tmp_path / "b", capsys)
    assert code == 1 and "NOT EQUAL: nothing compared" in line
