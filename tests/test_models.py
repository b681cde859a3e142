"""Models: forward/backward at size tiny, clamps, fp32 head, paper parameter counts, checkpoints."""

import math

import pytest
import torch

from meru import lorentz as L
from meru.losses import build_loss
from meru.models import MODEL_SIZES, build_model
from meru.models.checkpoints import CheckpointError, convert_official_state_dict, load_model, save_model

torch.set_num_threads(1)


@pytest.mark.parametrize("kind", ["clip", "meru"])
def test_tiny_forward_backward(kind):
    torch.manual_seed(0)
    model = build_model(kind, "tiny")
    images = torch.rand(6, 3, model.image_size, model.image_size)
    tokens = model.tokenize(["a red triangle", "two blue squares", "a letter", "an object", "a ring", "three stars"])
    out = build_loss(kind)(model(images, tokens))
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    assert model.visual.trunk.pos_embed.grad is None  # fixed sin-cos position embedding
    # initial loss of a random model is near log(batch)
    assert abs(float(out["contrastive_loss"]) - math.log(6)) < 1.0
    if kind == "meru":
        emb = model(images, tokens)["image"]
        # embeddings are space components on the hyperboloid: <x,x>_L = -1/c
        c = float(model.curv.exp())
        torch.testing.assert_close(L.elementwise_inner(emb, emb, c), torch.full((6,), -1 / c), rtol=1e-4, atol=1e-4)
    else:
        torch.testing.assert_close(model(images, tokens)["image"].norm(dim=-1), torch.ones(6))


def test_meru_clamps_and_inits():
    model = build_model("meru", "tiny", curv_init=1.0)
    assert float(model.visual_alpha.exp()) == pytest.approx(model.embed_dim**-0.5)
    with torch.no_grad():
        model.curv.fill_(math.log(50.0))
        model.visual_alpha.fill_(1.0)
        model.logit_scale.fill_(10.0)
    images = torch.rand(2, 3, 32, 32)
    out = model(images, model.tokenize(["a", "b"]))
    assert float(out["curv"]) == pytest.approx(10.0, rel=1e-5)
    assert float(out["visual_alpha"]) == pytest.approx(1.0)
    assert float(out["logit_scale"]) == pytest.approx(100.0, rel=1e-5)


def test_meru_head_is_fp32_under_autocast():
    model = build_model("meru", "tiny")
    images = torch.rand(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images, model.tokenize(["a", "b"]))
        loss = build_loss("meru")(out)
    assert out["image"].dtype == torch.float32 and out["text"].dtype == torch.float32
    assert loss["loss"].dtype == torch.float32


# Official architectures (facebookresearch/meru, configs/train_{meru,clip}_vit_{s,b,l}.py): timm ViT
# with patch 16 at 224 px, [CLS] token, no classifier head; text L12_W512 (8 heads), vocab 49408,
# context 77; bias-free projections to 512. Closed-form parameter counts:
def _vit_params(width, depth, patch=16, tokens=197):
    block = 2 * width + (3 * width * width + 3 * width) + (width * width + width) + 2 * width + (4 * width * width + 4 * width) + (4 * width * width + width)
    return 3 * patch * patch * width + width + width + tokens * width + depth * block + 2 * width


def _text_params(width=512, layers=12, vocab=49408, ctx=77):
    block = 2 * width + (3 * width * width + 3 * width) + (width * width + width) + 2 * width + (4 * width * width + 4 * width) + (4 * width * width + width)
    return vocab * width + ctx * width + layers * block + 2 * width


@pytest.mark.parametrize("size,width,depth", [("vit-s16", 384, 12), ("vit-b16", 768, 12), ("vit-l16", 1024, 24)])
def test_paper_sizes_parameter_counts(size, width, depth):
    for kind in ("clip", "meru"):
        model = build_model(kind, size)
        expected = _vit_params(width, depth) + _text_params() + width * 512 + 512 * 512 + 1 + (3 if kind == "meru" else 0)
        assert sum(p.numel() for p in model.parameters()) == expected
    assert model.visual.trunk.blocks[0].attn.num_heads == {"vit-s16": 12, "vit-b16": 12, "vit-l16": 16}[size]
    assert model.visual.trunk.norm.eps == 1e-5


def test_checkpoint_roundtrip_and_strict_errors(tmp_path):
    model = build_model("meru", "tiny").eval()
    save_model(model, tmp_path / "m.pt", step=7)
    loaded = load_model(tmp_path / "m.pt")
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(loaded.encode_image(x), model.encode_image(x))
    assert loaded.checkpoint_info["step"] == 7
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    blob["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="unexpected keys.*extra.weight"):
        load_model(tmp_path / "bad.pt")
    blob["state_dict"].pop("extra.weight")
    blob["size"] = "small-cpu"
    torch.save(blob, tmp_path / "wrong_arch.pt")
    with pytest.raises(CheckpointError, match="wrong_arch.pt.*(does not match|wrong architecture)"):
        load_model(tmp_path / "wrong_arch.pt")


def _official_like_state_dict(model):
    """Rename our tiny model's keys to the official layout (inverse of convert_official_state_dict)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("visual.trunk."):
            out["visual." + k[len("visual.trunk."):]] = v
        elif k == "visual.head.proj.weight":
            out["visual_proj.weight"] = v
        elif k == "text.text_projection":
            out["textual_proj.weight"] = v.T
        elif k == "text.token_embedding.weight":
            out["textual.token_embed.weight"] = v
        elif k == "text.positional_embedding":
            out["textual.posit_embed"] = v
        elif k.startswith("text.transformer."):
            out["textual." + k[len("text.transformer."):]] = v
        elif k.startswith("text."):
            out["textual." + k[len("text."):]] = v
        else:
            out[k] = v
    return out


def test_official_key_conversion_is_exact_inverse():
    model = build_model("meru", "tiny")
    official = _official_like_state_dict(model)
    assert "textual.resblocks.0.attn.in_proj_weight" in official and "visual.cls_token" in official
    converted = convert_official_state_dict(official)
    assert set(converted) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(converted[k], v)


def test_padding_after_eot_does_not_change_text_features():
    # official code pads to the batch's longest caption; we pad to the full context: same result
    model = build_model("clip", "tiny").eval()
    tokens = model.tokenize(["a small red triangle on dots"])
    n = int(tokens.argmax(-1)) + 1
    short = torch.zeros_like(tokens)
    short[:, :n] = tokens[:, :n]
    garbage = short.clone()
    garbage[:, n:] = 0
    torch.testing.assert_close(model.encode_text(tokens), model.encode_text(garbage))
    garbage[:, n:] = 5  # arbitrary tokens after EOT are masked out by causality + EOT pooling
    torch.testing.assert_close(model.encode_text(tokens), model.encode_text(garbage))


def test_sizes_registry_and_info_cli(capsys):
    from meru.cli import main

    assert {"tiny", "small-cpu", "vit-s16", "vit-b16", "vit-l16"} <= set(MODEL_SIZES)
    assert main(["info", "--sizes", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "meru" in out
