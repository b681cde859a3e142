"""The space interface reproduces the formulas evaluation and the loss used before it (bit for bit).

Each reference below is the pre-interface code (kind branches calling meru.lorentz directly), kept here
as the specification; the new code must give identical tensors for MERU and CLIP.
"""

import pytest
import torch
import torch.nn.functional as F

from meru import lorentz as L
from meru.evaluation.encode import encode_images
from meru.records import EmbeddingCache
from meru.evaluation.traversal import nearest_captions
from meru.losses import build_loss
from meru.spaces import get_space

CURV = 1.3
NEG = -1e12


def _points(kind, n, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, d, generator=g)
    return L.exp_map0(0.7 * r, CURV) if kind == "meru" else F.normalize(r, dim=-1)


# --- the old formulas -------------------------------------------------------------------------------
def old_root_of(kind, pool):
    return torch.zeros(pool.shape[1]) if kind == "meru" else F.normalize(pool.float().mean(0), dim=0)


def old_modality_gap(kind, images, texts):
    if kind == "meru":
        images, texts = L.log_map0(images.float(), CURV), L.log_map0(texts.float(), CURV)
    return float(torch.linalg.vector_norm(images.float().mean(0) - texts.float().mean(0)))


def old_cone_violation_matrix(text, points, chunk_elems=1 << 23):
    m, n, d = text.shape[0], points.shape[0], text.shape[1]
    rows = max(1, chunk_elems // max(1, n * d))
    aper = L.half_aperture(text, CURV)
    out = []
    for s in range(0, m, rows):
        t = text[s : s + rows]
        ang = L.oxy_angle(t[:, None, :].expand(-1, n, -1), points[None, :, :].expand(t.shape[0], -1, -1), CURV)
        out.append(ang - aper[s : s + rows, None])
    return torch.cat(out)


def old_path_points(kind, x, root, steps):
    ts = torch.linspace(0.0, 1.0, steps).view(-1, 1)
    if kind == "meru":
        return L.exp_map0((1 - ts) * L.log_map0(x.float().view(1, -1), CURV), CURV)
    return F.normalize((1 - ts) * x.float().view(1, -1) + ts * root.view(1, -1), dim=-1)


def old_nearest_captions(kind, points, pool):
    space, root = get_space(kind, CURV if kind == "meru" else None), old_root_of(kind, pool)
    if kind == "meru":
        scores = space.similarity(points, pool).masked_fill(old_cone_violation_matrix(pool, points).T > 0, NEG)
        root_score = space.similarity(points, root.view(1, -1))
    else:
        scores, root_score = points @ pool.float().T, points @ root.view(-1, 1)
    return torch.cat([scores, root_score], 1).argmax(1)


def old_meru_loss(image, text, scale, curv, min_radius=0.1, entail_weight=0.2):
    logits_i = -scale * L.pairwise_dist(image, text, curv)
    logits_t = -scale * L.pairwise_dist(text, image, curv)
    labels = torch.arange(image.shape[0])
    contrastive = 0.5 * (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels))
    angle, aperture = L.oxy_angle(text, image, curv), L.half_aperture(text, curv, min_radius)
    entailment = torch.clamp(angle - aperture, min=0).mean()
    radius = torch.cat([L.dist0(image, curv), L.dist0(text, curv)])
    raw_i = torch.norm(L.log_map0(image, curv), dim=-1) * curv.sqrt()
    raw_t = torch.norm(L.log_map0(text, curv), dim=-1) * curv.sqrt()
    return {
        "loss": contrastive + entail_weight * entailment,
        "contrastive_loss": contrastive,
        "entailment_loss": entailment,
        "radius_mean": radius.mean(),
        "radius_max": radius.max(),
        "clamp_hits_expmap": (
            (raw_i >= L.SINH_INPUT_MAX * 0.999).sum() + (raw_t >= L.SINH_INPUT_MAX * 0.999).sum()
        ).float(),
        "clamp_hits_acosh": (-curv * L.pairwise_inner(image, text, curv) <= 1 + 1e-8).sum().float(),
        "cone_inside_frac": (angle <= aperture).float().mean(),
    }


# --- identical results -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_root_gap_and_paths_identical(kind):
    space = get_space(kind, CURV if kind == "meru" else None)
    pool, images = _points(kind, 30), _points(kind, 20, seed=1)
    root = space.root(pool)
    assert torch.equal(root, old_root_of(kind, pool))
    assert space.modality_gap(images, pool) == old_modality_gap(kind, images, pool)
    for i in range(3):
        path = space.path_to_root(images[i], root, 17)
        assert torch.equal(path, old_path_points(kind, images[i], root, 17))
        assert torch.equal(nearest_captions(space, path, pool, root), old_nearest_captions(kind, path, pool))


def test_cone_violation_matrix_identical():
    space = get_space("meru", CURV)
    pool, images = _points("meru", 30), _points("meru", 20, seed=1)
    for chunk in (1 << 23, 100):
        assert torch.equal(
            space.cone_violation_matrix(pool, images, chunk), old_cone_violation_matrix(pool, images, chunk)
        )


def test_meru_loss_identical():
    image, text = _points("meru", 6), _points("meru", 6, seed=2)
    curv, scale = torch.tensor(CURV), torch.tensor(7.0)
    out = build_loss("meru", entail_weight=0.2)(
        {
            "image": image,
            "text": text,
            "logit_scale": scale,
            "curv": curv,
            "visual_alpha": torch.tensor(0.3),
            "textual_alpha": torch.tensor(0.4),
        }
    )
    for key, value in old_meru_loss(image, text, scale, curv).items():
        assert torch.equal(out[key], value), key


@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_model_projection_and_cache_header_identical(kind):
    from meru.models import build_model

    torch.manual_seed(0)
    model = build_model(kind, "tiny").eval()
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        raw = model.visual.head(model.image_features(images)).float()
        old = model.lift(raw, model.visual_alpha) if kind == "meru" else F.normalize(raw, dim=-1)
    assert torch.equal(encode_images(model, images)[1], old)
    info = EmbeddingCache.from_dict({**EmbeddingCache.model_fields(model), "task": "text-pool"})
    assert info.kind == kind and info.space.matches(model.space())
    if kind == "meru":
        assert info.space.curv == float(model.curv.detach().exp())
        assert info.textual_alpha == float(model.textual_alpha.detach().exp())
    else:
        assert info.space.curv is None and info.textual_alpha is None and info.visual_alpha is None
