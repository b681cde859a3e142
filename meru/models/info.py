"""`meru info`: the registered model sizes and their parameter counts, in closed form (no model is built,
torch is not imported), so it answers at once.

Counts (``W`` ViT width, ``p`` patch, ``n`` = (image/p)^2 patches, ``L`` depth, ``w`` text width, ``l``
text layers, ``V`` vocabulary, ``T`` context, ``D`` embedding size); one pre-LN transformer block of width
``x`` has ``12 x^2 + 13 x`` parameters (LN 2x, QKV 3x^2 + 3x, out x^2 + x, LN 2x, MLP 8x^2 + 5x)::

    visual = 3 p^2 W + W (patch conv) + W ([CLS]) + (1 + n) W (position) + L (12 W^2 + 13 W) + 2 W (LN) + W D
    text   = V w + T w + l (12 w^2 + 13 w) + 2 w (final LN) + w D
    other  = the kind's learned scalars (meru.kinds.Kind.scalars): 1 (logit scale) [+ 3 for MERU: curvature,
             visual and textual alpha; EuCLIP: the logit scale only]

Conv trunks (stem ``s``; stages ``c_i`` from ``c_{i-1}``, ``c_0 = s``; BatchNorm has 2 parameters per channel;
the shortcut is a 1x1 conv + BN when a stage is strided or changes width)::

    visual = 27 s + 2 s + sum_i (9 c_{i-1} c_i + 2 c_i + 9 c_i^2 + 2 c_i [+ c_{i-1} c_i + 2 c_i]) + c_last D

``tests/test_models.py`` checks these against the built models.
"""

from __future__ import annotations

import argparse
import json

from meru.kinds import KINDS, get_kind
from meru.models.registry import CONV_VARIANTS, MODEL_SIZES, VIT_VARIANTS, get_size
from meru.arguments import add_info_arguments as add_arguments  # noqa: F401  (light: fast --help)


def _block(width: int) -> int:
    return 12 * width * width + 13 * width


def parameter_counts(kind: str, size: str) -> dict[str, int]:
    """Parameter counts of ``build_model(kind, size)``: total, visual and text (each incl. projection), other, and
    ``non_embedding`` = total - ``V w`` (the token embedding; Kaplan et al. 2020's count, the sizes study's axis)."""
    spec = get_size(size)
    if spec.image_tower in CONV_VARIANTS:
        _, stem, stages = CONV_VARIANTS[spec.image_tower]
        visual, c_in = 27 * stem + 2 * stem, stem
        for c, stride in stages:
            visual += 9 * c_in * c + 2 * c + 9 * c * c + 2 * c
            if stride > 1 or c_in != c:
                visual += c_in * c + 2 * c
            c_in = c
        visual += c_in * spec.embed_dim
    else:
        image, patch, width, depth, _ = VIT_VARIANTS[spec.image_tower]
        tokens = 1 + (image // patch) ** 2
        visual = 3 * patch * patch * width + width + width + tokens * width + depth * _block(width) + 2 * width
        visual += width * spec.embed_dim
    w = spec.text_width
    text = spec.vocab_size * w + spec.context_length * w + spec.text_layers * _block(w) + 2 * w + w * spec.embed_dim
    text += get_kind(kind).text_heads * (w + 1)
    other = get_kind(kind).scalars
    total = visual + text + other
    return {
        "total": total,
        "visual": visual,
        "text": text,
        "other": other,
        "non_embedding": total - spec.vocab_size * w,
    }


def run(args: argparse.Namespace) -> int:
    get_size("tiny")  # loads $MERU_SIZES_FILE, if set
    sizes = args.sizes or list(MODEL_SIZES)
    rows = []
    for name in sizes:
        spec = get_size(name)
        for kind in KINDS:
            rows.append(
                {
                    "size": name,
                    "kind": kind,
                    **parameter_counts(kind, name),
                    "image_size": spec.image_size,
                    "embed_dim": spec.embed_dim,
                    "description": spec.description,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'size':<10} {'kind':<8} {'total':>12} {'visual':>12} {'text':>12}  description")
    for r in rows:
        print(
            f"{r['size']:<10} {r['kind']:<8} {r['total']:>12,} {r['visual']:>12,} {r['text']:>12,}  {r['description']}"
        )
    return 0
