"""Test helper: random-weight checkpoints in the file formats of the MERU family's code bases, written from what
their code saves (docs/CHECKPOINTS.md; key names and shapes are facts, the code here is ours):

* HyCoCLIP (PalAvik/hycoclip) and UNCHA (jeeit17/UNCHA): the official MERU layout (tests/official_format.py) from
  their ``CheckpointManager`` (``{"model", "optimizer", "scheduler", "scaler", "iteration"}``), with the pixel
  buffers their constructors really save: ``HyCoCLIP/UNCHA.__init__`` pass ``(..., entail_weight, pixel_mean,
  pixel_std)`` positionally to ``MERU(..., entail_weight, use_boxes, pixel_mean, pixel_std)``, so ``pixel_mean``
  = ImageNet's std and ``pixel_std`` = ImageNet's std. UNCHA's file adds ``global_logit_scale``,
  ``global_local_logit_scale``, ``local_logit_scale`` and ``textual.min_radius_head.0.{weight,bias}``.
* HyCoCLIP's zoo MERU/CLIP and ATMG (samgregoost/atmg): the official layout, ImageNet pixel buffers; ATMG trains
  with ``curv_init = 0.1``, ``learn_curv = False``.
* the EuCLIP paper's open_clip branch (EIFY/open_clip@euclip): ``{"epoch", "name", "state_dict", "optimizer",
  "scaler"}``, ``state_dict`` keys ``module.``-prefixed (DDP), open_clip ``CLIP`` keys plus, for
  ``--geometry hyperbolic*``, ``alpha_img``, ``alpha_txt``, ``curvature`` (init ``log(1/sqrt(D))``, 0).

Every learned scalar is moved off its initial value, so a loader that rebuilds one from defaults is caught.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from official_format import official_state_dict

from meru.models import build_model
from meru.models.clip_meru import IMAGENET_MEAN, IMAGENET_STD

#: the scalars written (log values), off every initial value: MERU's (curv_init 1.0: log c = 0; alphas log(1/sqrt D),
#: logit_scale log(1/0.07)) and UNCHA's three extra logit scales (log 1/0.07, 1/0.06, 1/0.05)
SCALARS = {
    "logit_scale": math.log(1 / 0.05),
    "curv": math.log(0.7),
    "visual_alpha": math.log(0.09),
    "textual_alpha": math.log(0.13),
    "global_logit_scale": math.log(21.0),
    "global_local_logit_scale": math.log(13.0),
    "local_logit_scale": math.log(9.0),
}


def random_model(kind: str, size: str = "tiny", seed: int = 0, **model_kwargs):
    """``build_model(kind, size, **model_kwargs)`` with every tensor redrawn (weights ``N(0, 0.02^2)`` + 1 for
    1-D gains, biases ``N(0, 0.02^2)``) and the scalars of :data:`SCALARS` (``curv`` scaled by ``curv_init``)."""
    model = build_model(kind, size, **model_kwargs).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 0:
                continue
            p.copy_(torch.randn(p.shape, generator=g) * 0.02 + (1.0 if name.endswith("weight") and p.ndim == 1 else 0))
        for name, value in SCALARS.items():
            if hasattr(model, name):
                extra = math.log(model.curv_init) if name == "curv" else 0.0
                getattr(model, name).fill_(value + extra)
    return model


def training_run(model_state: dict, iteration: int = 7) -> dict:
    """A ``CheckpointManager.step`` file of the MERU/HyCoCLIP/UNCHA/ATMG code bases around ``model_state``."""
    moment = torch.zeros(4)
    return {
        "model": model_state,
        "optimizer": {"state": {0: {"step": torch.tensor(float(iteration)), "exp_avg": moment, "exp_avg_sq": moment}},
                      "param_groups": [{"lr": 5e-4, "betas": (0.9, 0.98), "weight_decay": 0.2, "params": [0]}]},
        "scheduler": {"last_epoch": iteration, "base_lrs": [5e-4]},
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
        "iteration": iteration,
    }  # fmt: skip


def shifted_pixel_buffers(state: dict) -> dict:
    """HyCoCLIP's / UNCHA's saved buffers: ``pixel_mean`` and ``pixel_std`` both ImageNet's std."""
    std = torch.tensor(IMAGENET_STD).view(-1, 1, 1)
    return {**state, "pixel_mean": std.clone(), "pixel_std": std.clone()}


def save_family(model, path, family: str) -> Path:
    """Write ``model`` as ``family``'s training-run file: ``hycoclip`` / ``uncha`` (shifted pixel buffers),
    ``zoo`` / ``atmg`` (ImageNet buffers)."""
    state = official_state_dict(model)
    if family in ("hycoclip", "uncha"):
        state = shifted_pixel_buffers(state)
    path = Path(path)
    torch.save(training_run(state), path)
    return path


# ------------------------------------------------------------------------------------------ open_clip branch
#: a 1-layer open_clip architecture (model config JSON, open_clip's format)
TINY_OPENCLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
#: the EuCLIP branch's hyperbolic scalars, off their initial values (``log(1/sqrt(16))``, 0)
HYPERBOLIC = {"alpha_img": math.log(0.2), "alpha_txt": math.log(0.3), "curvature": math.log(1.7)}


def tiny_openclip_config(directory) -> Path:
    """Write :data:`TINY_OPENCLIP` as ``meru-tiny-openclip.json`` in ``directory``; returns its path."""
    path = Path(directory) / "meru-tiny-openclip.json"
    path.write_text(json.dumps(TINY_OPENCLIP))
    return path


def save_openclip_train(path, config_json, hyperbolic: bool, seed: int = 0) -> tuple[Path, dict]:
    """An open_clip training checkpoint of the architecture in ``config_json`` with random towers (and, if
    ``hyperbolic``, :data:`HYPERBOLIC`); returns the path and the unprefixed state dict written."""
    import open_clip

    open_clip.add_model_config(config_json)
    model = open_clip.create_model(Path(config_json).stem, pretrained=None)
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            gain = 1.0 if name.endswith("weight") and value.ndim == 1 else 0.0
            value = torch.randn(value.shape, generator=g) * 0.05 + gain
        state[name] = value
    state["logit_scale"] = torch.tensor(math.log(1 / 0.04))
    if hyperbolic:
        state.update({k: torch.tensor(v) for k, v in HYPERBOLIC.items()})
    blob = {
        "epoch": 3,
        "name": "tiny-run",
        "state_dict": {f"module.{k}": v for k, v in state.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "params": list(range(len(state)))}]},
        "scaler": {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
    }
    path = Path(path)
    torch.save(blob, path)
    return path, state


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SCALARS", "random_model", "save_family", "save_openclip_train"]
