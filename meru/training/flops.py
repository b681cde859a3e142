"""Training FLOPs of the CLIP/MERU towers and the accelerator peaks, for truthful MFU.

Counted as matmul FLOPs (2 per multiply-add), the convention of ``torch.utils.flop_counter`` and of
MFU (Chowdhery et al. 2022, app. B). A pre-LN transformer layer of width ``d`` on ``n`` tokens costs
``24 n d^2`` (QKV ``6 n d^2``, output ``2 n d^2``, 4x MLP ``16 n d^2``) plus ``4 n^2 d`` for the two
attention matmuls (counted in full, also for the causal text tower, as attention kernels and
``flop_counter`` do). Per sample, forward::

    image: 2 P C p^2 d_v (patch embedding, P patches of C p^2 values) + depth_v (24 N d_v^2 + 4 N^2 d_v)
           + 2 d_v D (projection),  N = P + 1 ([CLS])
    text:  layers_t (24 L d_t^2 + 4 L^2 d_t) + 2 d_t D,  L = tokens per caption as run (<= context)

Training = 3 x forward (backward = 2 x forward: gradients of inputs and of weights), except the patch
embedding, whose pixel input needs no gradient (2 x forward). Embedding look-ups, norms, softmax, GELU
and the contrastive head are left out (< 1%). At 77 tokens this gives ViT-S/16 45.4 G, ViT-B/16
123.0 G and ViT-L/16 386.9 G per sample (``tests/test_flops.py`` checks the formula against
``flop_counter`` on the real modules, attention through the math SDPA kernel so that it is counted).
"""

from __future__ import annotations

import torch

# Dense (no sparsity) peak FLOP/s per device, from the vendors' data sheets. Matched by substring of
# torch.cuda.get_device_name, first match wins (so "H100 PCIe" comes before "H100").
PEAK_FLOPS = {
    "bf16": {
        "H100 PCIe": 756e12,
        "H100": 989e12,
        "H200": 989e12,
        "GH200": 989e12,
        "B200": 2250e12,
        "A100": 312e12,
        "L40S": 362e12,
        "A10": 125e12,
        "V100": 125e12,
    },
    # fp32 without TF32 (training disables TF32): CUDA-core peaks
    "fp32": {
        "H100 PCIe": 51e12,
        "H100": 67e12,
        "H200": 67e12,
        "GH200": 67e12,
        "B200": 80e12,
        "A100": 19.5e12,
        "L40S": 91.6e12,
        "A10": 31.2e12,
        "V100": 15.7e12,
    },
}


def _layer(n: int, d: int) -> int:
    """Forward FLOPs of one transformer layer (4x MLP) of width ``d`` on ``n`` tokens."""
    return 24 * n * d * d + 4 * n * n * d


def _conv_layers(size: str) -> list[tuple[int, int, int, int]]:
    """``(output side, kernel, in channels, out channels)`` of every convolution of a conv trunk, in order
    (stem, then per stage: 3x3 strided, 3x3, and the 1x1 shortcut when the stage is strided or widens)."""
    from meru.models.registry import CONV_VARIANTS, get_size

    img, stem, stages = CONV_VARIANTS[get_size(size).image_tower]
    side = img // 2
    out = [(side, 3, 3, stem)]
    c_in = stem
    for c, stride in stages:
        side //= stride
        out += [(side, 3, c_in, c), (side, 3, c, c)]
        if stride > 1 or c_in != c:
            out.append((side, 1, c_in, c))
        c_in = c
    return out


def patch_embed_flops(size: str) -> int:
    """Forward FLOPs per image of the layer that reads the pixels: the ViT patch embedding (a ``p x p``
    stride-``p`` convolution) or a conv trunk's stem convolution."""
    from meru.models.registry import CONV_VARIANTS, VIT_VARIANTS, get_size

    tower = get_size(size).image_tower
    if tower in CONV_VARIANTS:
        side, k, c_in, c_out = _conv_layers(size)[0]
        return 2 * side * side * k * k * c_in * c_out
    img, patch, width, _depth, _heads = VIT_VARIANTS[tower]
    return 2 * (img // patch) ** 2 * 3 * patch * patch * width


def image_forward_flops(size: str) -> int:
    """Forward FLOPs per image of the image tower (incl. patch embedding / stem and projection) of ``size``;
    for a conv trunk ``sum 2 side^2 k^2 c_in c_out`` over its convolutions (BatchNorm, ReLU, pooling left out;
    training FLOPs within 5% of ``flop_counter`` for cpu-conv and tiny-conv)."""
    from meru.models.registry import CONV_VARIANTS, VIT_VARIANTS, get_size

    spec = get_size(size)
    if spec.image_tower in CONV_VARIANTS:
        layers = _conv_layers(size)
        return sum(2 * side * side * k * k * ci * co for side, k, ci, co in layers) + 2 * layers[-1][3] * spec.embed_dim
    img, patch, width, depth, _heads = VIT_VARIANTS[spec.image_tower]
    patches = (img // patch) ** 2
    return patch_embed_flops(size) + depth * _layer(patches + 1, width) + 2 * width * spec.embed_dim


def text_forward_flops(size: str, tokens: int | None = None) -> int:
    """Forward FLOPs per caption of the text tower of ``size`` run at ``tokens`` tokens (default: context)."""
    from meru.models.registry import get_size

    spec = get_size(size)
    n = spec.context_length if tokens is None else int(tokens)
    return spec.text_layers * _layer(n, spec.text_width) + 2 * spec.text_width * spec.embed_dim


def train_flops_per_sample(size: str, text_tokens: int | None = None) -> int:
    """Training FLOPs per image-caption pair: 3 x forward, except the patch embedding, whose input (the
    pixels) needs no gradient (2 x forward)."""
    return 3 * (image_forward_flops(size) + text_forward_flops(size, text_tokens)) - patch_embed_flops(size)


def measured_train_flops(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> int:
    """FLOPs of one forward + backward of ``model(images, tokens)`` (sum of its embeddings as loss),
    counted by ``torch.utils.flop_counter`` (works on the meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = model(images, tokens)
        loss = out["image"].float().sum() + out["text"].float().sum()
        loss.backward()
    return int(counter.get_total_flops())


def model_train_flops(size: str, text_tokens: int | None = None) -> int:
    """Training FLOPs per image-caption pair of the towers of ``size``: one forward + backward of two samples
    through the baseline kind's model built on the meta device (no memory, no compute;
    :func:`measured_train_flops`), halved. The towers are the same for every kind; the kinds' heads and losses
    are left out (< 1%), as in :func:`train_flops_per_sample`. Text at ``text_tokens`` (default: the context
    length, an upper bound on a run's tokens); attention through the math SDPA kernel, so that it is counted."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from meru.kinds import BASELINE
    from meru.models import build_model, get_size

    spec = get_size(size)
    with torch.device("meta"):
        model = build_model(BASELINE, size)
        images = torch.empty(2, 3, spec.image_size, spec.image_size)
        tokens = torch.ones(2, text_tokens or spec.context_length, dtype=torch.long)
    with sdpa_kernel(SDPBackend.MATH):
        return measured_train_flops(model, images, tokens) // 2


def peak_flops(device: torch.device | str, amp_dtype: torch.dtype | None) -> float | None:
    """Peak FLOP/s of ``device`` at the training precision, or None when unknown (CPU, unlisted GPU)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    table = PEAK_FLOPS["bf16" if amp_dtype in (torch.bfloat16, torch.float16) else "fp32"]
    return next((v for k, v in table.items() if k in name), None)
