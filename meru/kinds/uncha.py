"""UNCHA (github jeeit17/UNCHA ``uncha/models.py``, ``UNCHA(MERU)``): HyCoCLIP's part-whole training with
uncertainty-weighted losses; released ViT-S/B checkpoints (``uncha_vit_{s,b}.pth``).

What differs from MERU, read from its code:

* space and lift: none. ``UNCHA`` subclasses ``MERU``: embeddings ``exp_map0(alpha * v, c)`` in
  :class:`~meru.spaces.Lorentz`, Lorentzian-inner-product zero-shot, MERU's ``curv`` / alphas.
* scalars: three more logit scales in its ``CLIPBaseline``: ``global_logit_scale`` (init ``log 1/0.07``, the one
  its image-text loss uses), ``global_local_logit_scale`` (``log 1/0.06``), ``local_logit_scale``
  (``log 1/0.05``), each clamped to ``<= log 100``; ``logit_scale`` is saved but unused by its loss.
* text head: its text encoder carries ``min_radius_head = Sequential(Linear(W, 1), Softplus())`` and a
  ``get_min_radius`` method, but no code of the repository calls them (checked at every commit): its entailment
  losses and evaluation use ``half_aperture(t, c)`` with the constant ``K = 0.1``. The head is loaded (a strict
  load drops nothing) and kept; cones here use ``K = 0.1`` as UNCHA's own code does.
* loss: global, local and global-local contrastive terms with uncertainty-scaled temperatures and piecewise
  entailment terms over box crops: evaluated from released checkpoints only.
* its file: the official MERU layout plus the keys above (``textual.min_radius_head.0.{weight,bias}``); its
  constructor shifts the pixel arguments as HyCoCLIP's does (``pixel_mean`` buffer = ImageNet std), so loading
  uses the file's pixel buffers (:func:`meru.models.checkpoints.load_released`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from meru.kinds.meru import MERU
from meru.models.clip_meru import LOGIT_SCALE_MAX
from meru.spaces import Lorentz

SPACE = Lorentz

#: UNCHA's extra logit scales and their initial temperatures
EXTRA_LOGIT_SCALES = {"global_logit_scale": 0.07, "global_local_logit_scale": 0.06, "local_logit_scale": 0.05}


class UNCHA(MERU):
    """UNCHA at evaluation: MERU plus three logit scales and the (unused) text min-radius head."""

    kind = "uncha"

    def __init__(self, size: str = "tiny", curv_init: float = 1.0, learn_curv: bool = True, learn_alpha: bool = True):
        super().__init__(size, curv_init, learn_curv, learn_alpha)
        for name, temperature in EXTRA_LOGIT_SCALES.items():
            setattr(self, name, nn.Parameter(torch.tensor(math.log(1 / temperature))))
        self.text.min_radius_head = nn.Sequential(nn.Linear(self.text.width, 1), nn.Softplus())

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        super().clamp_parameters()
        for name in EXTRA_LOGIT_SCALES:
            getattr(self, name).clamp_(max=LOGIT_SCALE_MAX)


MODEL = UNCHA
LOSS = "UNCHA's losses need grounded box crops (GRIT boxes); none of the training data here has them"
