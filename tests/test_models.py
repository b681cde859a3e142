"""Models: forward/backward at size tiny, clamps, fp32 head, paper parameter counts, checkpoints."""

import json
import math
from pathlib import Path

import pytest
import torch

from meru import lorentz as L
from meru.losses import build_loss
from meru.models.towers import VIT_VARIANTS
from meru.models import MODEL_SIZES, build_model

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
    block = (
        2 * width
        + (3 * width * width + 3 * width)
        + (width * width + width)
        + 2 * width
        + (4 * width * width + 4 * width)
        + (4 * width * width + width)
    )
    return 3 * patch * patch * width + width + width + tokens * width + depth * block + 2 * width


def _text_params(width=512, layers=12, vocab=49408, ctx=77):
    block = (
        2 * width
        + (3 * width * width + 3 * width)
        + (width * width + width)
        + 2 * width
        + (4 * width * width + 4 * width)
        + (4 * width * width + width)
    )
    return vocab * width + ctx * width + layers * block + 2 * width


@pytest.mark.parametrize("size,width,depth", [("vit-s16", 384, 12), ("vit-b16", 768, 12), ("vit-l16", 1024, 24)])
def test_paper_sizes_parameter_counts(size, width, depth):
    for kind in ("clip", "meru"):
        model = build_model(kind, size)
        expected = (
            _vit_params(width, depth) + _text_params() + width * 512 + 512 * 512 + 1 + (3 if kind == "meru" else 0)
        )
        assert sum(p.numel() for p in model.parameters()) == expected
    assert model.visual.trunk.blocks[0].attn.num_heads == {"vit-s16": 12, "vit-b16": 12, "vit-l16": 16}[size]
    assert model.visual.trunk.norm.eps == 1e-5


def test_vit_s_count_equals_official_state_dict():
    """The official ViT-S MERU (built with the official classes, shapes recorded in official_parity.json)
    has exactly as many parameters as ours (official buffers pixel_mean/std and attn_mask excluded)."""
    shapes = json.loads((Path(__file__).parent / "data" / "core" / "official_parity.json").read_text())[
        "official_shapes"
    ]
    official = sum(math.prod(v) for k, v in shapes.items() if k not in ("pixel_mean", "pixel_std", "textual.attn_mask"))
    assert sum(p.numel() for p in build_model("meru", "vit-s16").parameters()) == official


def test_sizes_registry_and_info_cli(capsys):
    from meru.cli import main

    assert {"tiny", "small-cpu", "vit-s16", "vit-b16", "vit-l16"} <= set(MODEL_SIZES)
    assert main(["info", "--sizes", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "meru" in out
    assert main(["info", "--json", "--sizes", "tiny", "small-cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["size"], r["kind"]) for r in rows} == {
        (s, k) for s in ("tiny", "small-cpu") for k in ("clip", "meru", "euclip", "hycoclip", "uncha")
    }
    for r in rows:
        model = build_model(r["kind"], r["size"])
        assert r["total"] == sum(p.numel() for p in model.parameters())
        assert r["text"] == sum(p.numel() for p in model.text.parameters())  # UNCHA's min-radius head included
        assert r["visual"] + r["text"] + r["other"] == r["total"]
        # logit_scale (+ MERU, HyCoCLIP: curv, 2 alphas; + UNCHA: 3 more logit scales)
        assert r["other"] == {"meru": 4, "hycoclip": 4, "uncha": 7}.get(r["kind"], 1)


def test_small_cpu_architecture_and_forward():
    model = build_model("meru", "small-cpu")
    spec = MODEL_SIZES["small-cpu"]
    patch, width, depth, heads = VIT_VARIANTS[spec.image_tower][1:]
    assert (model.image_size, model.context_length, model.embed_dim) == (32, spec.context_length, 64)
    assert model.visual.trunk.patch_embed.patch_size == (patch, patch) and len(model.visual.trunk.blocks) == depth
    assert model.visual.trunk.embed_dim == width
    assert model.text.width == spec.text_width and len(model.text.transformer.resblocks) == spec.text_layers
    images = torch.rand(2, 3, 32, 32)
    tokens = model.tokenize(["a", "a small red triangle"])
    assert tokens.shape == (2, spec.context_length)
    feats = model.image_features(images)
    assert feats.shape == (2, model.visual.trunk.embed_dim)
    raw = model.encode_text(tokens, project=False)
    # project=True is exp_map0(alpha * raw) with the current curvature
    torch.testing.assert_close(model.encode_text(tokens), L.exp_map0(raw * model.textual_alpha.exp(), model.curv.exp()))
    torch.testing.assert_close(model.space().lift(raw, model.textual_alpha.exp()), model.encode_text(tokens))
    with pytest.raises(ValueError, match=f"context length {spec.context_length}"):
        model.encode_text(torch.ones(1, 30, dtype=torch.long))


def test_fp32_head_restores_flags():
    from meru.models import fp32_head

    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16), fp32_head("cpu"):
            assert not torch.is_autocast_enabled("cpu")
            assert torch.backends.cuda.matmul.allow_tf32 is False
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_unknown_kind_and_size():
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("blip", "tiny")
    with pytest.raises(ValueError, match="unknown model size 'huge'.*tiny"):
        build_model("meru", "huge")


def test_cpu_conv_architecture_and_forward():
    """The default CPU size: a timm ByobNet conv trunk (BatchNorm, channels-last), average pooled, projected."""
    from meru.models.towers import CONV_VARIANTS

    model = build_model("clip", "cpu-conv")
    spec = MODEL_SIZES["cpu-conv"]
    image_size, stem, stages = CONV_VARIANTS[spec.image_tower]
    trunk = model.visual.trunk
    assert image_size == model.image_size == 32
    assert [s[0].conv2_kxk.conv.out_channels for s in trunk.stages] == [c for c, _ in stages]
    assert trunk.stem.conv.out_channels == stem and trunk.num_features == stages[-1][0]
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trunk.modules())
    assert trunk.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(4, 3, 32, 32)
    assert model.image_features(images).shape == (4, stages[-1][0])
    out = model(images, model.tokenize(["a", "b", "c", "d"]))
    out["image"].sum().backward()
    assert trunk.stem.conv.weight.grad is not None and trunk.stem.conv.weight.grad.abs().sum() > 0
    # eval mode uses BatchNorm running statistics: a single image embeds the same alone or in a batch
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images[:1]), model.encode_image(images)[:1], rtol=1e-5, atol=1e-6)


def test_euclip_model_projection_space_and_checkpoint(tmp_path):
    from meru.models.checkpoints import load_model, save_model
    from meru.spaces import Euclidean

    torch.manual_seed(0)
    model = build_model("euclip", "tiny", curv_init=2.0, learn_curv=False).eval()  # MERU-only kwargs are ignored
    assert model.kind == "euclip" and isinstance(model.space(), Euclidean)
    assert model.logit_scale.item() == -1.0  # EuCLIP's init with the entailment loss
    tokens = model.tokenize(["a red square", "two blue circles"])
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        raw_t, raw_i = model.encode_text(tokens, project=False), model.encode_image(images, project=False)
        out = model(images, tokens)
    # embeddings = raw / sqrt(D), not normalised
    torch.testing.assert_close(out["text"], raw_t / math.sqrt(model.embed_dim))
    torch.testing.assert_close(out["image"], raw_i / math.sqrt(model.embed_dim))
    assert set(out) == {"image", "text", "logit_scale"}
    assert model.projection_scales() == {"visual_alpha": model.embed_dim**-0.5, "textual_alpha": model.embed_dim**-0.5}
    # same towers as CLIP: identical parameter names and shapes
    clip = build_model("clip", "tiny")
    assert {k: v.shape for k, v in clip.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.kind == "euclip"
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), out["text"])
