"""`meru` command line: --version, help on every option, one-line user errors (exit 2, no traceback),
a fast `meru info` that builds no model, and model sizes added from a YAML file."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meru.cli import COMMANDS, command_parser, main

ROOT = Path(__file__).resolve().parent.parent


def meru(*args, env=None, cwd=None):
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "meru", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        env=e,
        cwd=cwd,
        timeout=300,
    )


def test_version(capsys):
    from meru import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"meru-bench {__version__}"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_has_help(name):
    parser = command_parser(name)
    missing = [
        a.option_strings or a.dest for a in parser._actions if not isinstance(a, argparse._HelpAction) and not a.help
    ]
    assert not missing, f"meru {name}: options without help: {missing}"


def test_user_errors_are_one_line(tmp_path):
    (tmp_path / "bad.pt").write_text("not a torch file\n")
    (tmp_path / "pool.jsonl").write_text('{"text": "a cat"}\n')
    cases = [
        (["info", "--sizes", "nope"], "unknown model size 'nope'"),
        (
            [
                "embed",
                "--checkpoint",
                tmp_path / "bad.pt",
                "--text-pool",
                tmp_path / "pool.jsonl",
                "--out",
                tmp_path / "o.pt",
            ],
            "it is not a plain tensor file",
        ),
        (
            ["evaluate", "--task", "zeroshot", "--embeddings", tmp_path / "bad.pt", "--out", tmp_path / "o.json"],
            "it is not a plain tensor file",
        ),
        (["synth", "--out", tmp_path / "bad.pt" / "sub", "--train-size", "2", "--test-size", "2"], "bad.pt"),
        (
            [
                "embed",
                "--checkpoint",
                "openclip:ViT-B-32:/nonexistent.pt",
                "--text-pool",
                tmp_path / "pool.jsonl",
                "--out",
                tmp_path / "o.pt",
            ],
            "weights file /nonexistent.pt not found",
        ),
    ]
    for argv, message in cases:
        r = meru(*argv)
        assert r.returncode == 2, (argv, r.stderr)
        assert "Traceback" not in r.stderr and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (
            argv,
            r.stderr,
        )
    r = meru("info", "--sizes", "nope", env={"MERU_DEBUG": "1"})
    assert "Traceback" in r.stderr


def test_info_builds_no_model_and_imports_no_torch():
    code = (
        "import sys; from meru.cli import main; main(['info', '--json']); "
        "assert not {'torch', 'open_clip', 'timm'} & set(sys.modules), sorted(sys.modules)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert '"size": "vit-l16"' in r.stdout


def test_sizes_file_adds_a_size_without_editing_the_package(tmp_path, monkeypatch):
    import json

    import torch

    from meru.models import registry

    (tmp_path / "sizes.yaml").write_text(
        "vit_variants:\n  test_vit_p8_16: {image_size: 16, patch: 8, width: 16, depth: 1, heads: 2}\n"
        "sizes:\n  test-mini: {image_tower: test_vit_p8_16, image_size: 16, text_layers: 1, text_width: 16, text_heads: 2,\n"
        "              context_length: 8, embed_dim: 8, description: from a sizes file}\n"
    )
    r = meru("info", "--json", "--sizes", "test-mini", env={"MERU_SIZES_FILE": str(tmp_path / "sizes.yaml")})
    assert r.returncode == 0, r.stderr
    rows = {row["kind"]: row for row in json.loads(r.stdout)}
    monkeypatch.setenv("MERU_SIZES_FILE", str(tmp_path / "sizes.yaml"))
    monkeypatch.setattr(registry, "MODEL_SIZES", dict(registry.MODEL_SIZES))
    monkeypatch.setattr(registry, "VIT_VARIANTS", dict(registry.VIT_VARIANTS))
    monkeypatch.setattr(registry, "_loaded_files", set())
    from meru.models import towers
    from meru.models.clip_meru import build_model

    monkeypatch.setattr(towers, "VIT_VARIANTS", registry.VIT_VARIANTS)
    torch.manual_seed(0)
    for kind in ("clip", "meru"):
        model = build_model(kind, "test-mini")
        assert rows[kind]["total"] == sum(p.numel() for p in model.parameters())
        out = model(torch.rand(2, 3, 16, 16), model.tokenize(["a", "b"]))
        assert out["image"].shape[-1] == 8
    (tmp_path / "bad.yaml").write_text("sizes:\n  x: {image_tower: nope, image_size: 16}\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        registry.register_sizes_file(tmp_path / "bad.yaml")


def test_one_error_style_everywhere(tmp_path):
    """Errors printed by a command itself and by the dispatcher share `meru <cmd>: error: ...`."""
    cases = [
        ["evaluate", "--task", "zeroshot", "--embeddings", tmp_path / "missing.pt", "--out", tmp_path / "o.json"],
        ["tables", "--metrics", tmp_path / "no-metrics", "--out", tmp_path / "t"],
        ["tables", "--metrics", tmp_path, "--out", tmp_path / "t", "--n-boot", "0"],
    ]
    for argv in cases:
        r = meru(*argv)
        err = r.stderr.strip()
        assert r.returncode == 2 and len(err.splitlines()) == 1, (argv, err)
        assert err.startswith(f"meru {argv[0]}: error: "), (argv, err)
