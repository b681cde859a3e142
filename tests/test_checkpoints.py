"""Checkpoints: our format round trip, strict official-file conversion, parity with the official code.

The parity numbers in tests/data/core/official_parity.json were produced by the official MERU code
(facebookresearch/meru @ 6d44300) with tests/data/core/make_official_parity.py; this test rebuilds the
same weights from the rule stored there (no official code needed), writes them as an official-format
file and checks our model reproduces the official embeddings and losses.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from meru.losses import build_loss
from meru.models import build_model, get_tokenizer
from meru.models.checkpoints import CheckpointError, convert_official_state_dict, load_model, save_model

torch.set_num_threads(1)
PARITY = json.loads((Path(__file__).parent / "data" / "core" / "official_parity.json").read_text())


def official_state_dict(kind: str) -> dict:
    """Rebuild the parity weights (rule in make_official_parity.py) with official key names."""
    rule = PARITY["rule"]
    shapes = PARITY["official_shapes"]
    g = torch.Generator().manual_seed(rule["state_seed"])
    sd = {}
    for key in sorted(shapes):
        if key == "pixel_mean":
            sd[key] = torch.tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
        elif key == "pixel_std":
            sd[key] = torch.tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
        elif key == "textual.attn_mask":
            n = shapes[key][0]
            sd[key] = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
        elif key in rule["overrides"]:
            sd[key] = torch.tensor(rule["overrides"][key])
        else:
            t = torch.randn(shapes[key], generator=g) * rule["std"]
            if key.endswith("weight") and len(shapes[key]) == 1:
                t += rule["layernorm_gain_offset"]
            sd[key] = t
    if kind == "clip":
        sd = {k: v for k, v in sd.items() if k not in ("curv", "visual_alpha", "textual_alpha")}
    return sd


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    for kind in ("meru", "clip"):
        torch.save({"model": official_state_dict(kind)}, d / f"{kind}_vit_s.pth")
    return d


def _check(summary: dict, x: torch.Tensor, atol=1e-5, rtol=1e-5):
    probe = torch.randn(
        x.shape[1], generator=torch.Generator().manual_seed(PARITY["rule"]["probe_seed"]), dtype=torch.float64
    )
    x = x.double()
    head = PARITY["rule"]["head"]
    torch.testing.assert_close(x[:, :head], torch.tensor(summary["head"], dtype=torch.float64), atol=atol, rtol=rtol)
    torch.testing.assert_close(x.norm(dim=-1), torch.tensor(summary["norm"], dtype=torch.float64), atol=atol, rtol=rtol)
    torch.testing.assert_close(x @ probe, torch.tensor(summary["probe"], dtype=torch.float64), atol=1e-4, rtol=1e-5)


def test_tokenizer_matches_official():
    tokens = get_tokenizer(77)(PARITY["captions"])
    for row, ref in zip(tokens, PARITY["official_tokens"]):
        assert row[: len(ref)].tolist() == ref
        assert torch.all(row[len(ref) :] == 0)  # official pads with 0 too


@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_parity_with_official_code(official_files, kind):
    model = load_model(official_files / f"{kind}_vit_s.pth")
    assert (model.kind, model.size) == (kind, "vit-s16")
    ref = PARITY[kind]
    images = torch.rand(
        *PARITY["rule"]["image_shape"], generator=torch.Generator().manual_seed(PARITY["rule"]["image_seed"])
    )
    tokens = model.tokenize(PARITY["captions"])  # padded to 77; the official code pads to the longest caption
    with torch.no_grad():
        for project in (True, False):
            tag = "proj" if project else "raw"
            _check(ref[f"image_{tag}"], model.encode_image(images, project=project))
            _check(ref[f"text_{tag}"], model.encode_text(tokens, project=project))
        logs = build_loss(kind, entail_weight=0.2)(model(images, tokens[:2]))
    for name, value in ref["loss"].items():
        assert float(logs[name]) == pytest.approx(value, rel=1e-5, abs=1e-5), name


def test_official_file_errors(official_files, tmp_path):
    sd = official_state_dict("meru")
    # unexpected key
    bad = dict(sd, **{"visual.extra_token": torch.zeros(3)})
    torch.save({"model": bad}, tmp_path / "meru_vit_s.pth")
    with pytest.raises(CheckpointError, match=r"meru_vit_s\.pth.*unexpected keys.*visual\.trunk\.extra_token"):
        load_model(tmp_path / "meru_vit_s.pth")
    # missing key
    bad = {k: v for k, v in sd.items() if k != "textual.ln_final.bias"}
    torch.save({"model": bad}, tmp_path / "meru_vit_s.pth")
    with pytest.raises(CheckpointError, match=r"missing keys.*text\.ln_final\.bias"):
        load_model(tmp_path / "meru_vit_s.pth")
    # shape mismatch
    bad = dict(sd, **{"visual_proj.weight": torch.zeros(256, 384)})
    torch.save({"model": bad}, tmp_path / "meru_vit_s.pth")
    with pytest.raises(CheckpointError, match=r"meru_vit_s\.pth.*visual\.head\.proj\.weight.*\(256, 384\)"):
        load_model(tmp_path / "meru_vit_s.pth")
    # file name disagrees with the contents (a ViT-S file named as ViT-B / a CLIP file named MERU)
    torch.save({"model": sd}, tmp_path / "meru_vit_b.pth")
    with pytest.raises(CheckpointError, match=r"meru_vit_b\.pth.*vit-s16"):
        load_model(tmp_path / "meru_vit_b.pth")
    torch.save({"model": official_state_dict("clip")}, tmp_path / "meru_vit_s.pth")
    with pytest.raises(CheckpointError, match=r"meru_vit_s\.pth.*clip"):
        load_model(tmp_path / "meru_vit_s.pth")
    # not a ViT-S/B/L
    torch.save({"model": {"visual.cls_token": torch.zeros(1, 1, 100)}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd\.pth.*width 100"):
        load_model(tmp_path / "odd.pth")
    # unknown format
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt.*unknown checkpoint format"):
        load_model(tmp_path / "other.pt")


def test_official_key_conversion_covers_every_official_key():
    """The real official key set (recorded from the official classes) maps 1:1 onto our ViT-S keys."""
    for kind in ("meru", "clip"):
        shapes = {
            k: v
            for k, v in PARITY["official_shapes"].items()
            if kind == "meru" or k not in ("curv", "visual_alpha", "textual_alpha")
        }
        converted = convert_official_state_dict({k: torch.empty(v, device="meta") for k, v in shapes.items()})
        ours = build_model(kind, "vit-s16").state_dict()
        assert set(converted) == set(ours) - {"text.attn_mask"}


@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_random_official_format_file_loads_to_the_same_model(tmp_path, kind):
    """tests/official_format.py (used for the workflow's released-checkpoint fixtures) writes the official
    key set, shapes and buffers; ``load_model`` detects the format and gives back the source model's embeddings."""
    from official_format import official_state_dict as to_official
    from official_format import save_official

    torch.manual_seed(3)
    source = build_model(kind, "vit-s16").eval()
    if kind == "meru":
        with torch.no_grad():
            source.curv.fill_(math.log(0.7))  # not the default: the value must travel
    written = to_official(source)
    reference = official_state_dict(kind)  # official key names and buffers (parity rule above)
    assert {k: tuple(v.shape) for k, v in written.items()} == {k: tuple(v.shape) for k, v in reference.items()}
    for key in ("pixel_mean", "pixel_std", "textual.attn_mask"):
        assert torch.equal(written[key], reference[key]), key
    path = save_official(source, tmp_path / f"{kind}_vit_s.pth")
    loaded = load_model(path)
    assert (loaded.kind, loaded.size, loaded.checkpoint_info["step"]) == (kind, "vit-s16", None)
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    tokens = source.tokenize(["a photo of a dog", "a red car"])
    with torch.no_grad():
        for project in (True, False):
            torch.testing.assert_close(loaded.encode_image(images, project), source.encode_image(images, project))
            torch.testing.assert_close(loaded.encode_text(tokens, project), source.encode_text(tokens, project))
    if kind == "meru":
        assert float(loaded.curv.detach().exp()) == pytest.approx(0.7)


def test_checkpoint_roundtrip_and_strict_errors(tmp_path):
    model = build_model("meru", "tiny", curv_init=2.0).eval()
    with torch.no_grad():
        model.curv.fill_(math.log(3.0))
    save_model(model, tmp_path / "sub" / "m.pt", step=7, config={"a": 1}, note="x")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.pt"]  # no temp file left behind
    blob = torch.load(tmp_path / "sub" / "m.pt", weights_only=True)
    assert (
        blob["format"] == "meru-bench/checkpoint/1" and blob["model_kwargs"]["curv_init"] == 2.0 and blob["note"] == "x"
    )
    loaded = load_model(tmp_path / "sub" / "m.pt")
    assert not loaded.training and loaded.curv_init == 2.0
    assert float(loaded.curv.exp()) == pytest.approx(3.0)
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(loaded.encode_image(x), model.encode_image(x))
    assert loaded.checkpoint_info == {"step": 7, "config": {"a": 1}}
    blob["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt.*unexpected keys.*extra.weight"):
        load_model(tmp_path / "bad.pt")
    blob["state_dict"].pop("extra.weight")
    blob["size"] = "small-cpu"
    torch.save(blob, tmp_path / "wrong_arch.pt")
    with pytest.raises(CheckpointError, match="wrong_arch.pt.*(does not match|wrong architecture)"):
        load_model(tmp_path / "wrong_arch.pt")
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_model(tmp_path / "nothere.pt")


def test_padding_after_eot_does_not_change_text_features():
    # the official code pads to the batch's longest caption; we pad to the full context: same result
    model = build_model("clip", "tiny").eval()
    tokens = model.tokenize(["a small red triangle on dots"])
    n = int(tokens.argmax(-1)) + 1
    short = tokens[:, :n]
    with torch.no_grad():
        full = model.encode_text(tokens)
        torch.testing.assert_close(model.encode_text(short), full)
        garbage = tokens.clone()
        garbage[:, n:] = 5  # tokens after EOT are invisible to it (causal mask) and not pooled
        torch.testing.assert_close(model.encode_text(garbage), full)
