"""`meru embed` with an open_clip architecture and a local weights file (random weights written here),
evaluated with CLIP geometry; clear one-line errors for bad specs and an unreachable `hf-hub:` name."""

import io
from pathlib import Path
import json
import tarfile

import pytest
import torch

from meru.data.evalsets import image_transform
from meru.evaluation import embed as E
from meru.evaluation import run as R
from meru.io import read_json
from meru.records import EmbeddingCache

from cli_helpers import cli, mk

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_openclip(tmp_path_factory):
    import open_clip

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("openclip")
    cfg = d / "meru-test-tiny-vit.json"
    cfg.write_text(json.dumps(TINY))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model("meru-test-tiny-vit")
    torch.save(model.state_dict(), d / "weights.pt")
    return d, cfg, model.eval()


def test_embed_with_open_clip_architecture_and_local_weights(tiny_openclip, capsys):
    import open_clip

    d, cfg, model = tiny_openclip
    (d / "sets").mkdir()
    paths = mk.write_sets(d / "sets")
    spec = f"openclip:{cfg}:{d / 'weights.pt'}"
    assert (
        cli(
            E,
            ["--checkpoint", spec, "--evalset", str(paths["zeroshot"]), "--out", str(d / "zs.pt"), "--batch-size", "4"],
        )
        == 0
    ), capsys.readouterr().err
    c = EmbeddingCache.load(d / "zs.pt", "classification")
    assert c.kind == "clip" and c.space.curv is None and c.size == "openclip-meru-test-tiny-vit"
    assert c.image_emb.shape == (6, 16) and torch.allclose(c.image_emb.norm(dim=-1), torch.ones(6), atol=1e-5)
    assert c.image_feats.shape == (6, 32)  # pre-projection ViT width
    # image 0 by hand: decode, our eval transform, open_clip's mean/std, open_clip's own encode_image
    with tarfile.open(paths["zeroshot"] / "test" / "0.tar") as tar:
        png = tar.extractfile("img0000.png").read()
    from PIL import Image

    x = image_transform(32, "classification")(Image.open(io.BytesIO(png)).convert("RGB")).unsqueeze(0)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model.encode_image((x - mean) / std, normalize=True)[0]
        text = model.encode_text(open_clip.get_tokenizer("meru-test-tiny-vit")(["a photo of a cat."]))[0]
    assert torch.allclose(c.image_emb[0], ref, atol=1e-5)
    assert torch.allclose(c.class_text_raw[0, 0], text, atol=1e-5)  # template 0, class "cat", unnormalised
    out = d / "m" / "zs.json"
    assert cli(R, ["--task", "zeroshot", "--embeddings", str(d / "zs.pt"), "--out", str(out), "--n-boot", "10"]) == 0
    rec = read_json(out)
    assert rec["kind"] == "clip" and rec["n"] == 6 and 0 <= rec["metrics"]["top1"] <= 100
    assert rec["label"] == "clip-openclip-meru-test-tiny-vit"  # no made-up training seed ("-s0")
    cb = read_json(out.with_name("zs.clip_benchmark.json"))
    assert (cb["model"], cb["pretrained"]) == ("clip-openclip-meru-test-tiny-vit", "weights.pt")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("openclip:ViT-B-32", "expected openclip:ARCH:WEIGHTS"),
        ("openclip:ViT-B-32:/nonexistent/w.pt", "weights file /nonexistent/w.pt not found"),
        ("openclip:No-Such-Arch:{weights}", "'No-Such-Arch' is not an open_clip architecture"),
        ("openclip:hf-hub:nobody/no-such-model", "cannot fetch hf-hub:nobody/no-such-model from the Hugging Face Hub"),
    ],
)
def test_bad_open_clip_specs_are_one_line_errors(tiny_openclip, spec, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d, _, _ = tiny_openclip
    spec = spec.format(weights=d / "weights.pt")
    (tmp_path / "pool.jsonl").write_text('{"text": "a cat"}\n')
    assert (
        cli(E, ["--checkpoint", spec, "--text-pool", str(tmp_path / "pool.jsonl"), "--out", str(tmp_path / "x.pt")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.pt").exists()


def _meru(*args, env_extra=None):
    """The real `meru` command in the environment a user has (no HF_HUB_OFFLINE)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parent.parent), **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "meru", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


def test_architecture_that_does_not_fit_the_weights_is_one_line_naming_both(tiny_openclip, tmp_path):
    d, _, _ = tiny_openclip
    (tmp_path / "pool.jsonl").write_text('{"text": "a cat"}\n')
    wider = dict(TINY, vision_cfg=dict(TINY["vision_cfg"], width=64, head_width=32))
    (tmp_path / "tiny-wide.json").write_text(json.dumps(wider))
    for arch in ("ViT-B-32", str(tmp_path / "tiny-wide.json")):  # open_clip: AssertionError, RuntimeError
        spec = f"openclip:{arch}:{d / 'weights.pt'}"
        r = _meru("embed", "--checkpoint", spec, "--text-pool", tmp_path / "pool.jsonl", "--out", tmp_path / "x.pt")
        err = r.stderr.strip()
        assert r.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert err.startswith("meru embed: error: ") and f"weights file {d / 'weights.pt'} does not fit" in err
        assert f"architecture {Path(arch).stem!r}" in err


def test_unreachable_hub_is_fast_quiet_and_one_line(tmp_path, monkeypatch):
    """No HF_HUB_OFFLINE, hub endpoint unreachable (a closed loopback port): one line naming HF_HUB_OFFLINE and
    openclip:local-dir, no retry warnings, and the hub part takes well under 5 s (it took ~23 s of back-off)."""
    import time

    import huggingface_hub.constants as C

    from meru.models.openclip import ExternalModelError, load_openclip

    (tmp_path / "pool.jsonl").write_text('{"text": "a cat"}\n')
    closed = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    r = _meru("embed", "--checkpoint", "openclip:hf-hub:nobody/no-such-model", "--text-pool", tmp_path / "pool.jsonl",
              "--out", tmp_path / "x.pt", env_extra=closed)  # fmt: skip
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and "Retrying" not in err, err
    assert "HF_HUB_OFFLINE" in err and "openclip:local-dir:DIR" in err and "hf-hub:nobody/no-such-model" in err
    monkeypatch.setattr(C, "ENDPOINT", closed["HF_ENDPOINT"])
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)  # restored after the test (the probe switches it on)
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "hf"))
    t0 = time.perf_counter()
    with pytest.raises(ExternalModelError, match="HF_HUB_OFFLINE"):
        load_openclip("openclip:hf-hub:nobody/no-such-model")
    assert time.perf_counter() - t0 < 5
