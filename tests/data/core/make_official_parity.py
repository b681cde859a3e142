"""Generate tests/data/core/official_parity.json: golden numbers from the OFFICIAL MERU code.

Usage (the official package is also called ``meru``, so this script never imports ours)::

    git -C /work/.mirror/facebookresearch+meru/repo archive HEAD | tar -x -C /tmp/meru_official
    .venv/bin/python tests/data/core/make_official_parity.py /tmp/meru_official \
        --out tests/data/core/official_parity.json

It builds the official ``MERU`` and ``CLIPBaseline`` at ViT-S (``vit_small_mocov3_patch16_224`` image
encoder + ``L12_W512`` text encoder, vocab 49408, context 77, embed 512, as configs/train_*_vit_s.py),
fills them with a deterministic state dict (rule below, reproduced by tests/test_checkpoints.py without
the official code), and records image/text embeddings (project=True/False) of 2 fixed images and
3 captions plus the training loss on a batch of 2. Only numbers are written; no official code or
weights are stored.

State-dict rule (``deterministic_state_dict``): keys in sorted order; buffers ``pixel_mean``,
``pixel_std``, ``textual.attn_mask`` keep their official values; ``OVERRIDES`` scalars are set
directly; every other tensor is ``randn(shape, generator) * 0.02`` from one ``torch.Generator`` seeded
0 (plus 1 for 1-D ``*.weight`` tensors, i.e. LayerNorm gains). Overrides and buffers draw nothing, so
the CLIP state dict equals the MERU one minus ``curv``/``*_alpha``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import types
from pathlib import Path

OVERRIDES = {
    "logit_scale": math.log(1 / 0.07),
    "curv": math.log(0.5),
    "visual_alpha": math.log(0.1),
    "textual_alpha": math.log(0.15),
}
BUFFERS = ("pixel_mean", "pixel_std", "textual.attn_mask")
CAPTIONS = [
    "a photo of a dog",
    "an avocado toast served on a white plate, with a fork &amp; knife!",
    "New York City skyline at night",
]
IMAGE_SEED, STATE_SEED, PROBE_SEED, HEAD = 1, 0, 2, 32


def _import_official(checkout: Path):
    """Import the official ``meru`` from ``checkout`` (a namespace package: no __init__.py), never ours."""
    # Drop the editable-install finder of our own package and any path that would resolve ours.
    sys.meta_path[:] = [
        f
        for f in sys.meta_path
        if "editable" not in getattr(f, "__module__", "").lower()
        and "editable" not in getattr(f, "__name__", "").lower()
    ]
    sys.path[:] = [p for p in sys.path if not (Path(p or ".").resolve() / "meru" / "__init__.py").exists()]
    sys.path.insert(0, str(checkout))
    try:
        import loguru  # noqa: F401
    except ImportError:  # only meru.utils.distributed imports it, for logging
        stub = types.ModuleType("loguru")
        stub.logger = logging.getLogger("loguru-stub")
        sys.modules["loguru"] = stub
    import meru

    where = [str(Path(p).resolve()) for p in meru.__path__]
    if where != [str((checkout / "meru").resolve())]:
        raise SystemExit(f"imported the wrong 'meru' package from {where}; expected {checkout / 'meru'}")
    from meru.encoders.image_encoders import build_timm_vit
    from meru.encoders.text_encoders import TransformerTextEncoder
    from meru.models import MERU, CLIPBaseline
    from meru.tokenizer import Tokenizer

    return build_timm_vit, TransformerTextEncoder, MERU, CLIPBaseline, Tokenizer


def deterministic_state_dict(shapes: dict, buffers: dict):
    import torch

    g = torch.Generator().manual_seed(STATE_SEED)
    out = {}
    for key in sorted(shapes):
        if key in BUFFERS:
            out[key] = buffers[key]
        elif key in OVERRIDES:
            out[key] = torch.tensor(OVERRIDES[key])
        else:
            t = torch.randn(shapes[key], generator=g) * 0.02
            if key.endswith("weight") and len(shapes[key]) == 1:
                t += 1
            out[key] = t
    return out


def _summary(x, probe) -> dict:
    """First HEAD coordinates, the L2 norm and the dot product with a fixed random vector, per row."""
    x = x.double()
    return {"head": x[:, :HEAD].tolist(), "norm": x.norm(dim=-1).tolist(), "probe": (x @ probe).tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkout", type=Path, help="directory of a checkout of facebookresearch/meru (commit 6d44300)")
    ap.add_argument("--commit", default="6d44300", help="commit of the checkout, recorded if it has no .git")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("official_parity.json"))
    args = ap.parse_args()
    checkout = args.checkout.resolve()
    build_timm_vit, TransformerTextEncoder, MERU, CLIPBaseline, Tokenizer = _import_official(checkout)
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    torch.backends.cuda.matmul.allow_tf32 = False
    # The official forward gathers features with torch.distributed (as under its launcher): one-process group.
    import tempfile

    import torch.distributed as dist

    with tempfile.TemporaryDirectory() as tmpdir:
        dist.init_process_group("gloo", init_method=f"file://{tmpdir}/pg", rank=0, world_size=1)
        try:
            result = _generate(
                checkout, args.commit, build_timm_vit, TransformerTextEncoder, MERU, CLIPBaseline, Tokenizer
            )
        finally:
            dist.destroy_process_group()
    tmp = args.out.with_name(f".{args.out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


def _generate(checkout, commit, build_timm_vit, TransformerTextEncoder, MERU, CLIPBaseline, Tokenizer) -> dict:
    import torch

    def make(cls, **kw):
        visual = build_timm_vit("vit_small_mocov3_patch16_224", global_pool="token", use_sincos2d_pos=True)
        textual = TransformerTextEncoder("L12_W512", vocab_size=49408, context_length=77)
        return cls(visual=visual, textual=textual, embed_dim=512, **kw).eval()

    meru_model = make(MERU, curv_init=1.0, learn_curv=True, entail_weight=0.2)
    sd_official = meru_model.state_dict()
    shapes = {k: list(v.shape) for k, v in sd_official.items()}
    sd = deterministic_state_dict(shapes, {k: sd_official[k] for k in BUFFERS})
    meru_model.load_state_dict(sd, strict=True)

    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(IMAGE_SEED))
    tokens = Tokenizer()(CAPTIONS)
    probe = torch.randn(512, generator=torch.Generator().manual_seed(PROBE_SEED), dtype=torch.float64)

    result = {
        "provenance": {
            "official_repo": "facebookresearch/meru",
            "official_commit": (
                subprocess.run(
                    ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
                ).stdout.strip()
                if (checkout / ".git").exists()
                else ""
            )
            or commit,
            "command": "python tests/data/core/make_official_parity.py /tmp/meru_official "
            "--out tests/data/core/official_parity.json",
            "torch": torch.__version__,
            "timm": __import__("timm").__version__,
            "note": "numbers computed by the official MERU/CLIPBaseline classes in float32 on CPU; "
            "weights follow the rule in make_official_parity.py (no weights are stored)",
        },
        "rule": {
            "state_seed": STATE_SEED,
            "std": 0.02,
            "layernorm_gain_offset": 1.0,
            "overrides": OVERRIDES,
            "buffers_kept": list(BUFFERS),
            "image_seed": IMAGE_SEED,
            "image_shape": [2, 3, 224, 224],
            "probe_seed": PROBE_SEED,
            "head": HEAD,
        },
        "official_shapes": shapes,
        "captions": CAPTIONS,
        "official_tokens": [t.tolist() for t in tokens],
    }
    for name, model in (("meru", meru_model), ("clip", None)):
        if model is None:
            model = make(CLIPBaseline)
            model.load_state_dict({k: v for k, v in sd.items() if k in model.state_dict()}, strict=True)
        entry = {}
        with torch.no_grad():
            for project in (True, False):
                tag = "proj" if project else "raw"
                entry[f"image_{tag}"] = _summary(model.encode_image(images, project=project), probe)
                entry[f"text_{tag}"] = _summary(model.encode_text([t.clone() for t in tokens], project=project), probe)
            out = model(images, [t.clone() for t in tokens[:2]])
        entry["loss"] = {k: float(v) for k, v in out["logging"].items()} | {"loss": float(out["loss"])}
        result[name] = entry
    return result


if __name__ == "__main__":
    main()
