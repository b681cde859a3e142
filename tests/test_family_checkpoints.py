"""Released checkpoints of the MERU family (meru.models.checkpoints.load_released, docs/CHECKPOINTS.md): a random-weight file in
each family's format (tests/family_formats.py) loads as its kind and gives the embeddings the file's own
architecture defines, computed here independently from the raw tensors: a timm ViT built directly, the MERU text
transformer written out, the file's pixel buffers, and each family's lift (``exp_map0(alpha v, c)``, ``v / sqrt(D)``,
``v / ||v||``)."""

from __future__ import annotations

import math
import re
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from family_formats import HYPERBOLIC, SCALARS, random_model, save_family, save_openclip_train, tiny_openclip_config
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from meru.models.checkpoints import CheckpointError, load_model
from meru.spaces import Euclidean, EuclideanSphere, Lorentz

torch.set_num_threads(1)
CAPTIONS = ["a photo of a dog", "two red cars on a road", "a"]


def _images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _layer_norm(x, sd, prefix):
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps=1e-5)


def reference_image(sd: dict, images: torch.Tensor) -> torch.Tensor:
    """Projected image features of an official-layout state dict: ``(x - pixel_mean) / pixel_std`` (the file's
    buffers), a timm ViT (1 block, width 32, patch 8, [CLS] pooling, LayerNorm eps 1e-5), ``visual_proj``."""
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=0,
                            global_pool="token", norm_layer=partial(nn.LayerNorm, eps=1e-5))  # fmt: skip
    vit.load_state_dict({k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")})
    x = (images - sd["pixel_mean"]) / sd["pixel_std"]
    with torch.no_grad():
        return vit.eval()(x) @ sd["visual_proj.weight"].T


def reference_text(sd: dict, tokens: torch.Tensor, heads: int = 2) -> torch.Tensor:
    """Projected text features: token + position embeddings, pre-LN causal blocks (attention, GELU MLP),
    ``ln_final``, the [EOT] (largest id) position, ``textual_proj``."""
    n = tokens.shape[1]
    x = sd["textual.token_embed.weight"][tokens] + sd["textual.posit_embed"][:n]
    causal = torch.full((n, n), float("-inf")).triu(1)
    i = 0
    while f"textual.resblocks.{i}.ln_1.weight" in sd:
        p = f"textual.resblocks.{i}"
        q, k, v = F.linear(
            _layer_norm(x, sd, f"{p}.ln_1"), sd[f"{p}.attn.in_proj_weight"], sd[f"{p}.attn.in_proj_bias"]
        ).chunk(3, -1)
        split = lambda t: t.view(t.shape[0], n, heads, -1).transpose(1, 2)  # noqa: E731
        att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(q.shape[-1] / heads) + causal, -1)
        out = (att @ split(v)).transpose(1, 2).reshape(x.shape)
        x = x + F.linear(out, sd[f"{p}.attn.out_proj.weight"], sd[f"{p}.attn.out_proj.bias"])
        h = F.gelu(F.linear(_layer_norm(x, sd, f"{p}.ln_2"), sd[f"{p}.mlp.c_fc.weight"], sd[f"{p}.mlp.c_fc.bias"]))
        x = x + F.linear(h, sd[f"{p}.mlp.c_proj.weight"], sd[f"{p}.mlp.c_proj.bias"])
        i += 1
    x = _layer_norm(x, sd, "textual.ln_final")
    return x[torch.arange(x.shape[0]), tokens.argmax(-1)] @ sd["textual_proj.weight"].T


def exp_map0(v: torch.Tensor, c: float) -> torch.Tensor:
    """Space components of the hyperboloid point ``exp_0(v)``: ``sinh(sqrt(c) ||v||) v / (sqrt(c) ||v||)``."""
    r = math.sqrt(c) * v.norm(dim=-1, keepdim=True)
    return torch.sinh(r) * v / r


def _check_official_layout(model, sd: dict, lorentz: bool):
    tokens = model.tokenize(CAPTIONS)
    image, text = reference_image(sd, _images()), reference_text(sd, tokens)
    if lorentz:
        c = math.exp(float(sd["curv"]))
        image = exp_map0(image * math.exp(float(sd["visual_alpha"])), c)
        text = exp_map0(text * math.exp(float(sd["textual_alpha"])), c)
    else:
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    with torch.no_grad():
        got_image, got_text = model.encode_image(_images()), model.encode_text(tokens)
    assert torch.isfinite(got_image).all() and torch.isfinite(got_text).all()
    torch.testing.assert_close(got_image, image, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got_text, text, atol=2e-5, rtol=1e-4)


def test_hycoclip_loads_as_its_kind_with_the_files_pixel_buffers(tmp_path):
    path = save_family(random_model("hycoclip"), tmp_path / "hycoclip-tiny.pth", "hycoclip")
    sd = torch.load(path, weights_only=True)["model"]
    assert torch.equal(sd["pixel_mean"], sd["pixel_std"])  # the constructor's slot shift: mean = ImageNet std
    model = load_model(path, entry={"format": "hycoclip", "size": "tiny"})
    assert model.kind == "hycoclip" and isinstance(model.space(), Lorentz)
    assert model.space().curv == pytest.approx(0.7) and model.projection_scales()["visual_alpha"] == pytest.approx(0.09)
    _check_official_layout(model, sd, lorentz=True)
    assert model.checkpoint_info["config"]["released"]["format"] == "hycoclip"
    # the kind is not guessed from the keys: the same file read as an official one is MERU, named by its entry only
    assert load_model(path, entry={"size": "tiny"}).kind == "meru"
    named = tmp_path / "hycoclip_vit_s.pth"
    named.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match=r"hycoclip_vit_s\.pth: the file name says a hycoclip .*format: hycoclip"):
        load_model(named, entry={"size": "tiny"})


def test_uncha_loads_as_its_kind_and_an_official_read_names_the_fix(tmp_path):
    source = random_model("uncha")
    path = save_family(source, tmp_path / "uncha-tiny.pth", "uncha")
    sd = torch.load(path, weights_only=True)["model"]
    with pytest.raises(CheckpointError) as err:
        load_model(path, entry={"size": "tiny"})
    message = str(err.value)
    assert "\n" not in message and "uncha-tiny.pth" in message and "format: uncha" in message
    assert all(k in message for k in ("global_logit_scale", "local_logit_scale", "text.min_radius_head.0.weight"))
    model = load_model(path, entry={"format": "uncha", "size": "tiny"})
    assert model.kind == "uncha" and isinstance(model.space(), Lorentz) and model.space().min_radius == 0.1
    for name in ("global_logit_scale", "global_local_logit_scale", "local_logit_scale"):
        assert float(getattr(model, name).detach()) == pytest.approx(SCALARS[name])
    torch.testing.assert_close(model.text.min_radius_head[0].weight, sd["textual.min_radius_head.0.weight"])
    _check_official_layout(model, sd, lorentz=True)
    with pytest.raises(CheckpointError, match=r"kind 'meru' with format 'uncha'"):
        load_model(path, entry={"format": "uncha", "kind": "meru", "size": "tiny"})


def test_atmg_takes_its_curvature_init_and_the_clamp_range_follows(tmp_path):
    source = random_model("meru", curv_init=0.1, learn_curv=False)  # ATMG's configs: curv_init 0.1, frozen
    with torch.no_grad():
        source.curv.fill_(math.log(0.05))  # within ATMG's range, outside MERU's [0.1, 10] for curv_init 1
    path = save_family(source, tmp_path / "atmg-tiny.pth", "atmg")
    sd = torch.load(path, weights_only=True)["model"]
    model = load_model(path, entry={"format": "atmg", "size": "tiny"})
    assert (model.kind, model.curv_init, model.learn_curv) == ("meru", 0.1, False)
    assert (model.curv_min, model.curv_max) == pytest.approx((math.log(0.01), math.log(1.0)))
    assert model.model_kwargs() == {"curv_init": 0.1, "learn_curv": False, "learn_alpha": True}
    assert model.checkpoint_info["config"]["released"] == {
        "format": "atmg", "kind": "meru", "size": "tiny", "curv_init": 0.1, "learn_curv": False
    }  # fmt: skip
    _check_official_layout(model, sd, lorentz=True)
    # its entry's model name and display name reach its records (the leaderboard matches ATMG's published rows by it)
    from meru.records import EmbeddingCache

    named = load_model(path, entry={"format": "atmg", "size": "tiny", "name": "atmg", "display": "ATMG-tiny"})
    fields = EmbeddingCache.model_fields(named)
    assert (fields["kind"], fields["model_name"], fields["model_display"]) == ("meru", "atmg", "ATMG-tiny")
    assert EmbeddingCache.model_fields(model)["model_name"] is None  # no name: the record's model is its kind
    # an entry's own curv_init wins; a file read with the wrong one is refused in one line naming the fix
    assert load_model(path, entry={"format": "official", "size": "tiny", "curv_init": 0.1}).curv_init == 0.1
    with pytest.raises(
        CheckpointError, match=r"c = 0\.05 lies outside the clamp range \[0\.1, 10\].*set the curv_init"
    ):
        load_model(path, entry={"size": "tiny"})


@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_hycoclip_zoo_meru_and_clip_files_load_as_official(tmp_path, kind):
    """HyCoCLIP's model zoo MERU-S/CLIP-S: built by its MERU/CLIP classes with keyword arguments (ImageNet pixel
    buffers), saved by its CheckpointManager (optimizer, scheduler, scaler, iteration beside the model)."""
    path = save_family(random_model(kind), tmp_path / f"{kind}-zoo-tiny.pth", "zoo")
    sd = torch.load(path, weights_only=True)["model"]
    model = load_model(path, entry={"kind": kind, "data": "grit", "size": "tiny"})
    assert model.kind == kind
    _check_official_layout(model, sd, lorentz=kind == "meru")


# ------------------------------------------------------------------------------------------ open_clip branch
def _openclip_reference(state: dict, config_json, images, tokens):
    """Projected features of the branch's towers: open_clip built directly from the config, the written weights,
    OpenAI's pixel mean/std (open_clip's default preprocessing)."""
    import open_clip

    open_clip.add_model_config(config_json)
    tower = open_clip.create_model(config_json.stem, pretrained=None).eval()
    tower.load_state_dict({k: v for k, v in state.items() if k not in HYPERBOLIC})
    mean, std = (
        torch.tensor(v).view(1, 3, 1, 1) for v in (open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    )
    with torch.no_grad():
        return tower.encode_image((images - mean) / std), tower.encode_text(tokens)


@pytest.mark.parametrize("geometry,kind", [("hyperbolic", "meru"), ("euclidean-squared", "euclip"), ("clip", "clip")])
def test_openclip_training_checkpoint_loads_as_the_geometry_kind(tmp_path, geometry, kind):
    config = tiny_openclip_config(tmp_path)
    path, state = save_openclip_train(tmp_path / "epoch_3.pt", config, hyperbolic=geometry == "hyperbolic")
    entry = {"format": "openclip-train", "arch": str(config)} | ({} if kind == "meru" else {"kind": kind})
    model = load_model(path, entry=entry)
    tokens = model.tokenize(CAPTIONS)
    image, text = _openclip_reference(state, config, _images(), tokens)
    d = image.shape[-1]
    if kind == "meru":  # the branch: alpha = exp(alpha_img/txt), c = clamp(exp(curvature), 0.1, 10), exp map
        c = math.exp(HYPERBOLIC["curvature"])
        image = exp_map0(image * math.exp(HYPERBOLIC["alpha_img"]), c)
        text = exp_map0(text * math.exp(HYPERBOLIC["alpha_txt"]), c)
        space_type = Lorentz
    elif kind == "euclip":  # dim_scale = sqrt(1 / D), unnormalised
        image, text, space_type = image * d**-0.5, text * d**-0.5, Euclidean
    else:
        image, text, space_type = F.normalize(image, dim=-1), F.normalize(text, dim=-1), EuclideanSphere
    assert model.kind == kind and type(model.space()) is space_type
    if kind == "meru":
        assert model.space().curv == pytest.approx(1.7)
    with torch.no_grad():
        got_image, got_text = model.encode_image(_images()), model.encode_text(tokens)
    assert torch.isfinite(got_image).all() and torch.isfinite(got_text).all()
    torch.testing.assert_close(got_image, image, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got_text, text, atol=2e-5, rtol=1e-4)
    assert model.checkpoint_info["config"]["released"]["epoch"] == 3


def test_openclip_training_checkpoint_errors_are_one_line(tmp_path):
    config = tiny_openclip_config(tmp_path)
    flat, _ = save_openclip_train(tmp_path / "flat.pt", config, hyperbolic=False)
    hyper, _ = save_openclip_train(tmp_path / "hyper.pt", config, hyperbolic=True)
    cases = [
        (
            flat,
            {"format": "openclip-train", "arch": str(config)},
            r"flat\.pt: .*cannot tell EuCLIP from CLIP.*kind: euclip",
        ),
        (
            hyper,
            {"format": "openclip-train", "arch": str(config), "kind": "euclip"},
            r"hyper\.pt: .*hyperbolic.*'euclip'",
        ),
        (flat, {"format": "openclip-train", "kind": "clip"}, r"format 'openclip-train' needs arch"),
        (flat, {"size": "tiny"}, r"flat\.pt: an open_clip training checkpoint.*format: openclip-train"),
        (flat, {"format": "openclip-train", "arch": "ViT-B-32", "kind": "clip"}, r"flat\.pt: does not fit open_clip"),
        (flat, {"format": "nope"}, r"format 'nope' is not a checkpoint format"),
    ]
    for path, entry, pattern in cases:
        with pytest.raises(CheckpointError, match=pattern) as err:
            load_model(path, entry=entry)
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ entries and the CLI
def test_checkpoint_entries_are_checked_at_plan_time():
    """A pretrained.checkpoints entry whose kind, format and arch do not fit together is one config line."""
    import yaml

    from meru.config import ConfigError, check_workflow_config

    root = Path(__file__).parent.parent
    schema = yaml.safe_load((root / "configs" / "schema.yaml").read_text())
    config = yaml.safe_load((root / "configs" / "pretrained.yaml").read_text())
    check_workflow_config(config, schema, "pretrained.yaml")
    entries = config["pretrained"]["checkpoints"]
    for change, pattern in [
        ({"format": "uncha"}, r"pretrained\.checkpoints\[0\]: kind 'meru' with format 'uncha'"),
        ({"format": "openclip-train"}, r"pretrained\.checkpoints\[0\]: format 'openclip-train' needs arch"),
        ({"arch": "ViT-B-16"}, r"pretrained\.checkpoints\[0\]: arch is only read for format openclip-train"),
        ({"format": "nope"}, r"pretrained\.checkpoints\.0\.format = 'nope' is not one of"),
        ({"curv_init": 0}, r"pretrained\.checkpoints\.0\.curv_init"),
    ]:
        bad = {**config, "pretrained": {"checkpoints": [{**entries[0], **change}, *entries[1:]]}}
        with pytest.raises(ConfigError, match=pattern) as err:
            check_workflow_config(bad, schema, "pretrained.yaml")
        assert "\n" not in str(err.value)
    ok = {**entries[0], "kind": "uncha", "name": "uncha"}  # format from the kind
    check_workflow_config({**config, "pretrained": {"checkpoints": [ok]}}, schema, "pretrained.yaml")
    # an open_clip training checkpoint names its architecture: its size is a label, not a registered size
    b32 = {**entries[0], "kind": "euclip", "size": "vit-b32", "format": "openclip-train", "arch": "ViT-B-32"}
    check_workflow_config({**config, "pretrained": {"checkpoints": [b32]}}, schema, "pretrained.yaml")
    with pytest.raises(ConfigError, match=r"size = 'vit-b32' is not a registered size"):
        check_workflow_config({**config, "pretrained": {"checkpoints": [{**entries[0], "size": "vit-b32"}]}}, schema)


def test_meru_embed_reads_the_entry_and_refuses_a_wrong_one_in_one_line(tmp_path, capsys):
    from meru.cli import main

    path = save_family(random_model("uncha"), tmp_path / "uncha-tiny.pth", "uncha")
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"text": "a dog"}\n')
    out = tmp_path / "pool.pt"
    args = ["embed", "--checkpoint", str(path), "--text-pool", str(pool), "--out", str(out)]
    for entry, pattern in [
        ('{"size": "tiny"}', r"uncha-tiny\.pth: does not match meru/tiny.*format: uncha"),
        ('{"size": "tiny"', r"--checkpoint-entry is not JSON"),
    ]:
        assert main([*args, "--checkpoint-entry", entry]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(pattern, err), err
    assert main([*args, "--checkpoint-entry", '{"format": "uncha", "size": "tiny"}']) == 0
    from meru.records import EmbeddingCache

    cache = EmbeddingCache.load(out)
    assert cache.kind == "uncha" and cache.space.name == "lorentz"
