"""Losses: hand-computed contrastive/entailment values, logging entries, fp32 head, two-rank gathering."""

import math
import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp

from meru import lorentz as L
from meru.losses import build_loss


def _ce(logits, target):
    return math.log(sum(math.exp(v) for v in logits)) - logits[target]


def test_clip_contrastive_hand_computed():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    out = build_loss("clip")({"image": image, "text": text, "logit_scale": torch.tensor(2.0)})
    # image logits rows [2*1, 2*0.6], [0, 2*0.8]; text logits rows [2, 0], [1.2, 1.6]
    expected = 0.5 * ((_ce([2.0, 1.2], 0) + _ce([0.0, 1.6], 1)) / 2 + (_ce([2.0, 0.0], 0) + _ce([1.2, 1.6], 1)) / 2)
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-6)
    assert float(out["contrastive_loss"]) == pytest.approx(expected, rel=1e-6)
    assert "entailment_loss" not in out
    assert float(out["logit_scale"]) == 2.0


@pytest.mark.parametrize("curv", [0.5, 2.0])
def test_meru_loss_one_dimensional_closed_form(curv):
    """1-D embeddings at signed distances r: d = |r_i - r_j|; entailment angle is 0 (same ray, beyond)
    or pi (opposite side), and the half-aperture is asin(2K / (sqrt(c) |x|))."""
    rc = math.sqrt(curv)
    r_text, r_image = [1.0, -2.0], [3.0, 0.5]
    text = torch.sinh(rc * torch.tensor(r_text))[:, None] / rc
    image = torch.sinh(rc * torch.tensor(r_image))[:, None] / rc
    s = 1.5
    out = build_loss("meru", entail_weight=0.2)(
        {
            "image": image,
            "text": text,
            "logit_scale": torch.tensor(s),
            "curv": torch.tensor(curv),
            "visual_alpha": torch.tensor(0.1),
            "textual_alpha": torch.tensor(0.2),
        }
    )
    d = [[abs(a - b) for b in r_text] for a in r_image]  # image i vs text j
    ce_i = (_ce([-s * v for v in d[0]], 0) + _ce([-s * v for v in d[1]], 1)) / 2
    ce_t = (_ce([-s * d[0][0], -s * d[1][0]], 0) + _ce([-s * d[0][1], -s * d[1][1]], 1)) / 2
    contrastive = 0.5 * (ce_i + ce_t)
    # pair 0: image at 3 beyond text at 1 on the same ray -> angle 0 -> no loss
    # pair 1: text at -2, image at 0.5 on the other side -> angle pi
    aper1 = math.asin(2 * 0.1 / (rc * abs(float(text[1]))))
    entail = (0 + (math.pi - aper1)) / 2
    assert float(out["contrastive_loss"]) == pytest.approx(contrastive, abs=2e-4)
    assert float(out["entailment_loss"]) == pytest.approx(entail, abs=2e-3)
    assert float(out["loss"]) == pytest.approx(contrastive + 0.2 * entail, abs=2e-3)
    assert float(out["curv"]) == curv and float(out["visual_alpha"]) == pytest.approx(0.1)
    assert float(out["radius_max"]) == pytest.approx(3.0, rel=1e-5)
    assert float(out["radius_mean"]) == pytest.approx((1 + 2 + 3 + 0.5) / 4, rel=1e-5)
    no_entail = build_loss("meru", entail_weight=0.0)(
        {
            "image": image,
            "text": text,
            "logit_scale": torch.tensor(s),
            "curv": torch.tensor(curv),
            "visual_alpha": torch.tensor(0.1),
            "textual_alpha": torch.tensor(0.2),
        }
    )
    assert float(no_entail["loss"]) == pytest.approx(contrastive, abs=2e-4)


def _meru_out(image, text, curv=1.0):
    return {
        "image": image,
        "text": text,
        "logit_scale": torch.tensor(10.0),
        "curv": torch.tensor(curv),
        "visual_alpha": torch.tensor(1.0),
        "textual_alpha": torch.tensor(1.0),
    }


def test_clamp_hit_counts_and_logging_entries():
    raw = torch.randn(4, 8)
    x = L.exp_map0(raw)
    huge = L.exp_map0(raw * 1e4)  # every sinh input clamped at asinh(2^15)
    out = build_loss("meru")(_meru_out(huge, x))
    assert float(out["clamp_hits_expmap"]) == 4
    # images at the origin vs texts [origin, origin, x0, x1]: -c<0, 0>_L = 1 exactly (clamped) for 4 x 2
    # pairs; -c<0, x>_L = cosh(|v|) > 1 for the others
    same = build_loss("meru")(_meru_out(torch.zeros(4, 8), torch.cat([torch.zeros(2, 8), x[:2]])))
    assert float(same["clamp_hits_acosh"]) == 8
    assert float(same["clamp_hits_expmap"]) == 0
    for key in (
        "loss",
        "contrastive_loss",
        "entailment_loss",
        "logit_scale",
        "curv",
        "visual_alpha",
        "textual_alpha",
        "radius_mean",
        "radius_max",
        "clamp_hits_expmap",
        "clamp_hits_acosh",
    ):
        assert math.isfinite(float(same[key])), key


def test_meru_loss_is_fp32_with_finite_grads_under_autocast():
    raw = torch.randn(6, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = L.exp_map0(raw.bfloat16().float())
        out = build_loss("meru")(_meru_out(emb.bfloat16(), emb[[1, 0, 3, 2, 5, 4]].bfloat16()))
    assert out["loss"].dtype == torch.float32
    out["loss"].backward()
    assert torch.isfinite(raw.grad).all()


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown model kind"):
        build_loss("siglip")


def _rank_worker(rank, world, init_file, kind, image, text, results):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        b = image.shape[0] // world
        img = image[rank * b : (rank + 1) * b].clone().requires_grad_(True)
        txt = text[rank * b : (rank + 1) * b].clone()
        out = {"image": img, "text": txt, "logit_scale": torch.tensor(5.0)}
        if kind == "meru":
            out.update(curv=torch.tensor(1.0), visual_alpha=torch.tensor(1.0), textual_alpha=torch.tensor(1.0))
        loss = build_loss(kind, rank=rank, world_size=world)(out)["loss"]
        loss.backward()
        results[rank] = (float(loss), img.grad.clone())
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["clip", "meru"])
def test_two_ranks_match_the_full_batch(kind):
    """Local loss with gathered negatives: the mean of the ranks' losses equals the single-process loss on
    the whole batch, and the summed gradients (what DDP averages x world) match the full-batch gradients."""
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    if kind == "clip":
        image, text = torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)
    else:
        image, text = L.exp_map0(image * 0.5), L.exp_map0(text * 0.5)
    full_img = image.clone().requires_grad_(True)
    out = {"image": full_img, "text": text, "logit_scale": torch.tensor(5.0)}
    if kind == "meru":
        out.update(curv=torch.tensor(1.0), visual_alpha=torch.tensor(1.0), textual_alpha=torch.tensor(1.0))
    full = build_loss(kind)(out)["loss"]
    full.backward()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.get_context("spawn")
        manager = ctx.Manager()
        results = manager.dict()
        procs = [
            ctx.Process(target=_rank_worker, args=(r, 2, os.path.join(tmp, "pg"), kind, image, text, results))
            for r in range(2)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert all(p.exitcode == 0 for p in procs)
        losses = [results[r][0] for r in range(2)]
        grads = torch.cat([results[r][1] for r in range(2)])
        manager.shutdown()
    assert sum(losses) / 2 == pytest.approx(float(full), rel=1e-5)
    # with gradient-carrying all_gather, rank r's image grad includes the negatives' terms from the other
    # rank; summed over ranks, loss_0 + loss_1 = 2 * full, so grads = 2 * full-batch grads
    torch.testing.assert_close(grads, 2 * full_img.grad, rtol=1e-4, atol=1e-6)


def test_euclip_loss_hand_computed():
    """EuCLIP: logits -s ||x - y||^2; entailment max(0, ext(t, v) - asin(K / ||t||)) with K = 0.1."""
    image = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, -0.5]])
    s = 0.5
    out = build_loss("euclip", entail_weight=0.3)({"image": image, "text": text, "logit_scale": torch.tensor(s)})
    sq = [[1.0, 4.25], [2.0, 2.25]]  # ||image_i - text_j||^2
    ce_i = (_ce([-s * v for v in sq[0]], 0) + _ce([-s * v for v in sq[1]], 1)) / 2
    ce_t = (_ce([-s * sq[0][0], -s * sq[1][0]], 0) + _ce([-s * sq[0][1], -s * sq[1][1]], 1)) / 2
    contrastive = 0.5 * (ce_i + ce_t)
    # pair 0: image (2, 0) straight on along text (1, 0)'s ray -> angle 0, inside;
    # pair 1: image (0, 1) behind text (0, -0.5) -> angle pi, aperture asin(0.1 / 0.5)
    entail = (0 + (math.pi - math.asin(0.2))) / 2
    assert float(out["contrastive_loss"]) == pytest.approx(contrastive, rel=1e-6)
    assert float(out["entailment_loss"]) == pytest.approx(entail, abs=1e-3)
    assert float(out["loss"]) == pytest.approx(contrastive + 0.3 * entail, abs=1e-3)
    assert float(out["cone_inside_frac"]) == 0.5
    assert float(out["radius_max"]) == 2.0 and float(out["radius_mean"]) == pytest.approx((2 + 1 + 1 + 0.5) / 4)
    assert "curv" not in out
    off = build_loss("euclip", entail_weight=0.0)({"image": image, "text": text, "logit_scale": torch.tensor(s)})
    assert float(off["loss"]) == pytest.approx(contrastive, rel=1e-6)


def test_euclip_loss_gradients_finite_at_the_origin():
    image = torch.zeros(3, 4, requires_grad=True)
    text = torch.zeros(3, 4, requires_grad=True)
    out = build_loss("euclip")({"image": image, "text": text, "logit_scale": torch.tensor(1.0)})
    out["loss"].backward()
    assert torch.isfinite(image.grad).all() and torch.isfinite(text.grad).all()
