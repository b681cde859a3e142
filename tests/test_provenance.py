"""meru provenance: commit + dirty flag, machine, package versions, config and streaming SHA-256 of inputs."""

import argparse
import hashlib
import json
import subprocess

import pytest

from meru.reporting import provenance


def _args(*argv):
    parser = argparse.ArgumentParser()
    provenance.add_arguments(parser)
    return parser.parse_args(list(argv))


def _git(cwd, *args):
    subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
            "PATH": "/usr/bin:/bin",
        },
    )


def test_record_has_hashes_versions_config_and_dirty_flag(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "data" / "synthhier" / "train").mkdir(parents=True)
    manifest = repo / "data" / "synthhier" / "train" / "manifest.json"
    manifest.write_text('{"complete": true}')
    (repo / "data" / "synthhier" / "train" / "shard-0.tar").write_bytes(b"x" * 10)  # not a manifest: not hashed
    ckpt = repo / "runs" / "meru-tiny-s0" / "model.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(bytes(range(256)) * 5000)  # > 1 block: streaming hash
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "x")
    monkeypatch.chdir(repo)
    cfg = {"name": "smoke", "seeds": [0]}
    out = repo / "results" / "PROVENANCE.md"
    (repo / "results").mkdir()
    (repo / "results" / "old.csv").write_text("x")  # an output: does not make the tree dirty
    (repo / "edited.py").write_text("x")  # uncommitted source: does
    assert (
        provenance.run(
            _args(
                "--out",
                str(out),
                "--config-json",
                json.dumps(cfg),
                "--data",
                "data/synthhier",
                "--checkpoint",
                str(ckpt),
                "--outputs",
                "results",
                "runs",
                "data",
            )
        )
        == 0
    )
    text = out.read_text()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert f"git commit: {commit}" in text
    assert "uncommitted changes: yes (1 changed or untracked paths)" in text
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() in text
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() in text and "shard-0.tar" not in text
    assert "| checkpoint | runs/meru-tiny-s0/model.pt |" in text
    assert "reference_values.csv" in text  # meru/resources by default
    for pkg in ("torch", "open_clip_torch", "numpy", "pandas", "snakemake"):
        assert f"- {pkg}: " in text and f"- {pkg}: not installed" not in text
    assert '"name": "smoke"' in text and "logical CPUs:" in text and "GPUs:" in text
    (repo / "edited.py").unlink()
    assert "uncommitted changes: no " in provenance.render(cfg, [], exclude=["results"])
    assert "uncommitted changes: yes" in provenance.render(cfg, [])


def test_missing_input_is_an_error_naming_it(tmp_path, capsys):
    out = tmp_path / "P.md"
    assert provenance.run(_args("--out", str(out), "--checkpoint", str(tmp_path / "none.pt"))) == 2
    assert "none.pt" in capsys.readouterr().err and not out.exists()
    assert provenance.run(_args("--out", str(out), "--config-json", "{bad")) == 2


def test_sha256_streams(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc" * 1000)
    assert provenance.sha256_file(p, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()
    with pytest.raises(FileNotFoundError):
        provenance.input_files(data_dirs=[tmp_path / "nope"])
