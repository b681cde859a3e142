"""MERU (Desai et al., ICML 2023): CLIP in the Lorentz model of hyperbolic space, with entailment cones.

The whole method against the CLIP baseline (official ``meru/models.py``, ``MERU``):

* space: :class:`~meru.spaces.Lorentz`, the hyperboloid of curvature ``-c`` (points stored by their space
  components); training logit ``-d_L(x, y)``, evaluation score ``<x, y>_L``.
* scalars: ``curv = log c`` (init ``log c0``, clamped to ``[log(c0/10), log(10 c0)]``; learned unless
  ``learn_curv=False``), ``visual_alpha`` / ``textual_alpha = log alpha`` (init ``log(1/sqrt(D))``, clamped to
  ``<= 0``), and CLIP's ``logit_scale``.
* lift: projected features ``v`` -> ``exp_map0(alpha * v, c)`` on the hyperboloid, through the space.
* loss: contrastive over ``-exp(logit_scale) * d_L`` + ``entail_weight`` * the entailment-cone loss
  ``mean_i max(0, oxy_angle(t_i, v_i) - half_aperture(t_i))`` (MERU Eq. 7-9, :class:`~meru.losses.ConeLoss`).
* config keys (``model:``): ``curv_init`` (``c0``), ``learn_curv``; ``entail_weight`` and ``min_radius`` (K).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from meru.losses import ConeLoss
from meru.models.clip_meru import CLIP, fp32_head
from meru.spaces import Lorentz

SPACE = Lorentz


class MERU(CLIP):
    """MERU: CLIP with a Lorentz-hyperboloid embedding space (space components returned)."""

    kind = "meru"

    def __init__(self, size: str = "tiny", curv_init: float = 1.0, learn_curv: bool = True, learn_alpha: bool = True):
        super().__init__(size)
        self.curv_init, self.learn_curv, self.learn_alpha = float(curv_init), bool(learn_curv), bool(learn_alpha)
        self.curv = nn.Parameter(torch.tensor(curv_init).log(), requires_grad=learn_curv)
        self.curv_min, self.curv_max = math.log(curv_init / 10), math.log(curv_init * 10)
        # learn_alpha=False freezes both scales at their init 1/sqrt(D) (the ablation "frozen alpha")
        self.visual_alpha = nn.Parameter(torch.tensor(self.embed_dim**-0.5).log(), requires_grad=learn_alpha)
        self.textual_alpha = nn.Parameter(torch.tensor(self.embed_dim**-0.5).log(), requires_grad=learn_alpha)

    def model_kwargs(self) -> dict:
        return {"curv_init": self.curv_init, "learn_curv": self.learn_curv, "learn_alpha": self.learn_alpha}

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        super().clamp_parameters()
        self.curv.clamp_(self.curv_min, self.curv_max)
        self.visual_alpha.clamp_(max=0.0)
        self.textual_alpha.clamp_(max=0.0)

    def lift(self, raw: Tensor, log_alpha: Tensor) -> Tensor:
        """``exp_map0(alpha * v, c)`` through the space, in float32 with autocast and TF32 off. ``[B, D] -> [B, D]``."""
        with fp32_head(self.device.type, self.head_precision):
            return SPACE(self.curv.float().exp()).lift(raw, log_alpha.float().exp())

    def project_image(self, raw: Tensor) -> Tensor:
        return self.lift(raw, self.visual_alpha)

    def project_text(self, raw: Tensor) -> Tensor:
        return self.lift(raw, self.textual_alpha)

    def projection_scales(self) -> dict:
        return {
            "visual_alpha": float(self.visual_alpha.detach().exp()),
            "textual_alpha": float(self.textual_alpha.detach().exp()),
        }

    def space(self):
        return SPACE(float(self.curv.detach().exp()))

    def forward(self, images: Tensor, tokens: Tensor) -> dict[str, Tensor]:
        self.clamp_parameters()
        return {
            "image": self.encode_image(images),
            "text": self.encode_text(tokens),
            "logit_scale": self.logit_scale.exp(),
            "curv": self.curv.exp(),
            "visual_alpha": self.visual_alpha.exp(),
            "textual_alpha": self.textual_alpha.exp(),
        }


class MeruLoss(ConeLoss):
    """MERU: hyperbolic distance logits and cones with the model's learned curvature ``out["curv"]``."""

    def space(self, out):
        return SPACE(out["curv"].float(), self.min_radius)

    def diagnostics(self, space, out, image, text, all_text):
        logs = {"curv": out["curv"], "visual_alpha": out["visual_alpha"], "textual_alpha": out["textual_alpha"]}
        logs["clamp_hits_expmap"] = (space.lift_clamped(image).sum() + space.lift_clamped(text).sum()).float()
        logs["clamp_hits_acosh"] = space.acosh_clamped(image, all_text).sum().float()
        return {**logs, **super().diagnostics(space, out, image, text, all_text)}


MODEL = MERU
LOSS = MeruLoss
