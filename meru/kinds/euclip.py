"""EuCLIP (Chou & Alam, ECCV 2024 workshop, arXiv 2409.13079; ``--geometry euclidean-squared`` of the ``euclip``
branch of EIFY/open_clip): CLIP with unnormalised Euclidean embeddings and Euclidean entailment cones.

* space: :class:`~meru.spaces.Euclidean`; training logit and score ``-||x - y||^2``; cones of half-aperture
  ``asin(K / ||x||)`` (Ganea et al. 2018).
* lift: projected features scaled by the fixed ``1/sqrt(D)`` (EuCLIP's ``dim_scale``, not learned), not normalised.
* scalars: ``logit_scale`` only, initialised at ``logit_scale_init`` (default -1, the paper's choice with the
  entailment loss; the reference's ``--init-logit-scale``), clamped to
  ``<= log 100`` like CLIP's and, after every optimiser step, to ``>= logit_scale_floor`` (default 0, the
  reference training loop's ``clamp_(0, ln 100)``).
* loss: contrastive over ``-exp(logit_scale) ||x_i - y_j||^2`` + ``entail_weight`` * the cone loss
  (:class:`~meru.losses.ConeLoss`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from meru.losses import ConeLoss
from meru.models.clip_meru import CLIP, fp32_head
from meru.spaces import Euclidean

SPACE = Euclidean


class EuCLIP(CLIP):
    """EuCLIP: CLIP with unnormalised Euclidean embeddings ``x = raw / sqrt(D)`` and squared-distance logits."""

    kind = "euclip"

    def __init__(self, size: str = "tiny", logit_scale_floor: float | None = 0.0, logit_scale_init: float = -1.0):
        super().__init__(size)
        self.embed_scale = self.embed_dim**-0.5  # fixed (EuCLIP's dim_scale), not learned
        self.logit_scale_floor = None if logit_scale_floor is None else float(logit_scale_floor)
        self.logit_scale_init = float(logit_scale_init)
        with torch.no_grad():
            self.logit_scale.fill_(self.logit_scale_init)

    def model_kwargs(self) -> dict:
        return {"logit_scale_floor": self.logit_scale_floor, "logit_scale_init": self.logit_scale_init}

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """``log s <- max(log s, floor)`` after every optimiser step, as the reference training loop does (it
        clamps log s to ``[0, ln 100]``; the upper clamp is CLIP's, at every forward). So the first step runs at
        the init ``s = e^-1`` and every later one at ``s >= 1``. Without the floor (``None``), the squared-distance
        logits start so flat that the cone loss collapses every embedding onto one ray within ~25 steps."""
        if self.logit_scale_floor is not None:
            self.logit_scale.clamp_(min=self.logit_scale_floor)

    def _scale(self, raw: Tensor) -> Tensor:
        """``raw / sqrt(D)`` through the space, in float32 with autocast and TF32 off. ``[B, D] -> [B, D]``."""
        with fp32_head(self.device.type, self.head_precision):
            return SPACE().lift(raw, self.embed_scale)

    def project_image(self, raw: Tensor) -> Tensor:
        return self._scale(raw)

    def project_text(self, raw: Tensor) -> Tensor:
        return self._scale(raw)

    def projection_scales(self) -> dict:
        return {"visual_alpha": self.embed_scale, "textual_alpha": self.embed_scale}

    def space(self):
        return SPACE()


class EuclipLoss(ConeLoss):
    """EuCLIP: negative squared Euclidean distance logits and Euclidean cones."""

    def space(self, out):
        return SPACE(self.min_radius)


MODEL = EuCLIP
LOSS = EuclipLoss
