"""FLOP count used for MFU: the formula against torch's flop_counter on the real modules."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from meru.models import build_model, get_size
from meru.training.flops import measured_train_flops, peak_flops, train_flops_per_sample


def _measure(kind: str, size: str, device: str, batch: int = 2, text_tokens: int | None = None) -> float:
    spec = get_size(size)
    with torch.device(device):
        model = build_model(kind, size)
    images = torch.rand(batch, 3, spec.image_size, spec.image_size, device=device)
    tokens = torch.randint(1, 100, (batch, text_tokens or spec.context_length), device=device)
    with sdpa_kernel(SDPBackend.MATH):  # attention as plain matmuls, so that flop_counter counts them
        return measured_train_flops(model, images, tokens) / batch


@pytest.mark.parametrize(
    "kind,size,tokens", [("clip", "tiny", None), ("meru", "small-cpu", None), ("meru", "small-cpu", 8)]
)
def test_formula_matches_flop_counter_on_cpu_models(kind, size, tokens):
    assert _measure(kind, size, "cpu", text_tokens=tokens) == train_flops_per_sample(size, tokens)


@pytest.mark.parametrize("size,expected_g", [("vit-s16", 45.4), ("vit-b16", 123.0), ("vit-l16", 386.9)])
def test_paper_sizes_match_issue_figures_and_flop_counter(size, expected_g):
    formula = train_flops_per_sample(size)
    assert abs(formula / 1e9 - expected_g) / expected_g < 0.05
    if size == "vit-s16":  # the real module on the meta device (no memory, no compute)
        assert _measure("clip", size, "meta") == formula


def test_text_length_scales_text_tower_only():
    full, short = train_flops_per_sample("vit-b16", 77), train_flops_per_sample("vit-b16", 24)
    assert 0 < full - short < 0.2 * full  # the image tower dominates at ViT-B
    assert train_flops_per_sample("vit-b16") == full


def test_peak_is_unknown_on_cpu():
    assert peak_flops("cpu", torch.bfloat16) is None
