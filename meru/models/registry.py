"""Named model sizes (one registry for tests, the CPU default and the paper towers), extendable from a
YAML file without editing the package (:func:`register_sizes_file`, ``$MERU_SIZES_FILE``)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """Architecture of one named size. ``image_tower`` names a ViT or conv variant in :mod:`meru.models.towers`."""

    image_tower: str
    image_size: int
    text_layers: int
    text_width: int
    text_heads: int
    context_length: int
    embed_dim: int
    vocab_size: int = 49408
    description: str = ""


# ViT variants (timm names registered by meru.models.towers): name -> (image size, patch, width, depth, heads)
VIT_VARIANTS: dict[str, tuple[int, int, int, int, int]] = {
    "meru_vit_tiny_p8_32": (32, 8, 32, 1, 2),
    "meru_vit_smallcpu_p8_32": (32, 8, 64, 2, 2),
    "vit_small_mocov3_patch16_224": (224, 16, 384, 12, 12),  # MoCo-v3 ViT-S: 12 heads instead of timm's 6
    "meru_vit_base_patch16_224": (224, 16, 768, 12, 12),
    "meru_vit_large_patch16_224": (224, 16, 1024, 24, 16),
}

# Conv variants (timm ByobNet names registered by meru.models.towers): name -> (image size, stem channels,
# ((channels, stride) per stage)); a 3x3 stride-2 stem conv, then one basic block (two 3x3 convs with BatchNorm,
# residual; a strided stage downsamples the shortcut by average pooling + 1x1 conv) per stage, global average pool.
CONV_VARIANTS: dict[str, tuple[int, int, tuple[tuple[int, int], ...]]] = {
    "meru_convnet_tiny_32": (32, 8, ((8, 2), (16, 2))),
    "meru_convnet_cpu_32": (32, 32, ((32, 2), (64, 2), (128, 2))),
    # the sizes study (configs/sizes.yaml): the cpu-conv trunk at 1/4, 1/2 and 2x its channel widths
    "meru_convnet_cpuxxs_32": (32, 8, ((8, 2), (16, 2), (32, 2))),
    "meru_convnet_cpuxs_32": (32, 16, ((16, 2), (32, 2), (64, 2))),
    "meru_convnet_cpul_32": (32, 64, ((64, 2), (128, 2), (256, 2))),
}

MODEL_SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize("meru_vit_tiny_p8_32", 32, 1, 32, 2, 16, 32, description="unit tests: 1-layer towers"),
    # small-cpu: ViT patch 8 (16 tokens + [CLS]), width 64, depth 2, 2 heads; text 2 layers, width 64, 2 heads,
    # context 16. Chosen for the 20-minute default run: a MERU training step (fwd + bwd + fused AdamW) at batch
    # 128 on one thread measured ~0.1 s on this 2-core host (patch 4 / width 96 / depth 3 measured ~0.3 s).
    "small-cpu": ModelSize(
        "meru_vit_smallcpu_p8_32",
        32,
        2,
        64,
        2,
        16,
        64,
        description="ViT on 32 px (the first CPU default; for ViT-specific checks)",
    ),
    # cpu-conv (the default): a 3-stage ResNet-style conv net (32-64-128 channels, BatchNorm, 308k parameters)
    # and the same text tower as small-cpu. A ViT trained from scratch on 32 px learns SynthHier slowly (leaf
    # zero-shot 26-41% after 3000 steps); this tower reaches the floors of the default run in the same budget
    # (measured: README, "Default run: measured").
    "cpu-conv": ModelSize(
        "meru_convnet_cpu_32",
        32,
        2,
        64,
        2,
        16,
        64,
        description="default workflow on 2 CPU cores (SynthHier, 32 px): conv image tower",
    ),
    # the sizes study (configs/sizes.yaml): cpu-conv with both towers scaled together (image trunk channels and
    # text width 1/4, 1/2 and 2x; embedding width scaled alike)
    "cpu-conv-xxs": ModelSize(
        "meru_convnet_cpuxxs_32", 32, 2, 16, 2, 16, 16, description="sizes study: cpu-conv at quarter width"
    ),
    "cpu-conv-xs": ModelSize(
        "meru_convnet_cpuxs_32", 32, 2, 32, 2, 16, 32, description="sizes study: cpu-conv at half width"
    ),
    "cpu-conv-l": ModelSize(
        "meru_convnet_cpul_32", 32, 2, 128, 4, 16, 128, description="sizes study: cpu-conv at twice the width"
    ),
    "tiny-conv": ModelSize("meru_convnet_tiny_32", 32, 1, 32, 2, 16, 32, description="unit tests: conv image tower"),
    "vit-s16": ModelSize(
        "vit_small_mocov3_patch16_224",
        224,
        12,
        512,
        8,
        77,
        512,
        description="paper: MoCo-v3 ViT-S/16 (12 heads) + 12-layer 512-wide text",
    ),
    "vit-b16": ModelSize("meru_vit_base_patch16_224", 224, 12, 512, 8, 77, 512, description="paper: ViT-B/16"),
    "vit-l16": ModelSize("meru_vit_large_patch16_224", 224, 12, 512, 8, 77, 512, description="paper: ViT-L/16"),
}


SIZES_FILE_ENV = "MERU_SIZES_FILE"
_loaded_files: set[str] = set()


VIT_FIELDS = ("image_size", "patch", "width", "depth", "heads")


def register_sizes_file(path: str | os.PathLike) -> list[str]:
    """Add the sizes of a YAML file to :data:`MODEL_SIZES` (no package edit needed)::

        vit_variants:            # optional: new ViT trunks
          my_vit_p16_64: {image_size: 64, patch: 16, width: 192, depth: 6, heads: 3}
        sizes:
          my-size: {image_tower: my_vit_p16_64, image_size: 64, text_layers: 4, text_width: 256, text_heads: 4,
                    context_length: 32, embed_dim: 256}     # + optional vocab_size, description

    ``image_tower`` names a variant of :data:`VIT_VARIANTS` (or of the file's ``vit_variants``) or of
    :data:`CONV_VARIANTS`. Returns the size
    names added; a name already registered with a different architecture is an error."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sizes file {path} not found (set by {SIZES_FILE_ENV} or the config's sizes_file)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or type(e).__name__})") from None
    if not isinstance(data, dict) or set(data) - {"sizes", "vit_variants"}:
        raise ValueError(f"{path}: expected the keys 'sizes' (and optionally 'vit_variants')")
    for name, v in (data.get("vit_variants") or {}).items():
        if not isinstance(v, dict) or set(v) != set(VIT_FIELDS):
            raise ValueError(f"{path}: vit_variants.{name} needs exactly the fields {list(VIT_FIELDS)}")
        if not all(isinstance(v[f], int) and not isinstance(v[f], bool) and v[f] > 0 for f in VIT_FIELDS):
            raise ValueError(f"{path}: vit_variants.{name}: {list(VIT_FIELDS)} must be integers > 0")
        spec = tuple(v[f] for f in VIT_FIELDS)
        if VIT_VARIANTS.get(name, spec) != spec:
            raise ValueError(f"{path}: ViT variant {name!r} is already registered with a different shape")
        VIT_VARIANTS[str(name)] = spec
    fields = {f.name for f in dataclasses.fields(ModelSize)}
    added = []
    for name, entry in (data.get("sizes") or {}).items():
        if not isinstance(entry, dict) or set(entry) - fields:
            bad = sorted(set(entry) - fields) if isinstance(entry, dict) else entry
            raise ValueError(f"{path}: size {name!r}: unknown fields {bad}; allowed: {sorted(fields)}")
        try:
            spec = ModelSize(**entry)
        except TypeError as e:
            raise ValueError(f"{path}: size {name!r}: {e}") from None
        bad = [
            f.name
            for f in dataclasses.fields(ModelSize)
            if f.type == "int" and not (isinstance(getattr(spec, f.name), int) and getattr(spec, f.name) > 0)
        ]
        if bad or not isinstance(spec.image_tower, str):
            what = f"{', '.join(bad)} must be integers > 0" if bad else "image_tower must be a name"
            raise ValueError(f"{path}: size {name!r}: {what}")
        if spec.image_tower not in VIT_VARIANTS and spec.image_tower not in CONV_VARIANTS:
            raise ValueError(
                f"{path}: size {name!r}: unknown image_tower {spec.image_tower!r}; "
                f"known: {sorted(VIT_VARIANTS) + sorted(CONV_VARIANTS)}"
            )
        if name in MODEL_SIZES and MODEL_SIZES[name] != spec:
            raise ValueError(f"{path}: size {name!r} is already registered with a different architecture")
        MODEL_SIZES[str(name)] = spec
        added.append(str(name))
    _loaded_files.add(str(path.resolve()))
    return added


def _load_env_sizes() -> None:
    path = os.environ.get(SIZES_FILE_ENV)
    if path and str(Path(path).resolve()) not in _loaded_files:
        register_sizes_file(path)


def get_size(name: str) -> ModelSize:
    """The registered size ``name`` (built-in, or from the YAML file named by ``$MERU_SIZES_FILE``)."""
    _load_env_sizes()
    try:
        return MODEL_SIZES[name]
    except KeyError:
        raise ValueError(
            f"unknown model size {name!r}; choose one of: {', '.join(MODEL_SIZES)} "
            f"(or add it in a YAML file named by ${SIZES_FILE_ENV})"
        ) from None
