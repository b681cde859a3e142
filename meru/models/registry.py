"""Named model sizes (one registry for tests, the CPU default and the paper towers) and ``meru info``."""

from __future__ import annotations

import argparse
import dataclasses
import json


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """Architecture of one named size. ``vit`` names a ViT variant in :mod:`meru.models.towers`."""

    vit: str
    image_size: int
    text_layers: int
    text_width: int
    text_heads: int
    context_length: int
    embed_dim: int
    vocab_size: int = 49408
    description: str = ""


MODEL_SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize("meru_vit_tiny_p8_32", 32, 1, 32, 2, 16, 32, description="unit tests: 1-layer towers"),
    # small-cpu: ViT patch 8 (16 tokens + [CLS]), width 64, depth 2, 2 heads; text 2 layers, width 64, 2 heads,
    # context 16. Chosen for the 20-minute default run: a MERU training step (fwd + bwd + fused AdamW) at batch
    # 128 on one thread measured ~0.1 s on this 2-core host (patch 4 / width 96 / depth 3 measured ~0.3 s).
    "small-cpu": ModelSize("meru_vit_smallcpu_p8_32", 32, 2, 64, 2, 16, 64,
                           description="default workflow on 2 CPU cores (SynthHier, 32 px)"),
    "vit-s16": ModelSize("vit_small_mocov3_patch16_224", 224, 12, 512, 8, 77, 512,
                         description="paper: MoCo-v3 ViT-S/16 (12 heads) + 12-layer 512-wide text"),
    "vit-b16": ModelSize("meru_vit_base_patch16_224", 224, 12, 512, 8, 77, 512, description="paper: ViT-B/16"),
    "vit-l16": ModelSize("meru_vit_large_patch16_224", 224, 12, 512, 8, 77, 512, description="paper: ViT-L/16"),
}


def get_size(name: str) -> ModelSize:
    try:
        return MODEL_SIZES[name]
    except KeyError:
        raise ValueError(f"unknown model size {name!r}; choose one of: {', '.join(MODEL_SIZES)}") from None


def parameter_counts(kind: str, size: str) -> dict[str, int]:
    """Parameter counts of ``build_model(kind, size)``: total, visual (incl. projection), text (incl. projection)."""
    from meru.models.clip_meru import build_model

    model = build_model(kind, size)
    visual = sum(p.numel() for p in model.visual.parameters())
    text = sum(p.numel() for p in model.text.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "visual": visual, "text": text, "other": total - visual - text}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--sizes", nargs="*", default=None, help="only these sizes (default: all)")


def run(args: argparse.Namespace) -> int:
    sizes = args.sizes or list(MODEL_SIZES)
    rows = []
    for name in sizes:
        spec = get_size(name)
        for kind in ("clip", "meru", "euclip"):
            rows.append({"size": name, "kind": kind, **parameter_counts(kind, name), "image_size": spec.image_size,
                         "embed_dim": spec.embed_dim, "description": spec.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'size':<10} {'kind':<6} {'total':>12} {'visual':>12} {'text':>12}  description")
    for r in rows:
        print(f"{r['size']:<10} {r['kind']:<6} {r['total']:>12,} {r['visual']:>12,} {r['text']:>12,}  {r['description']}")
    return 0
