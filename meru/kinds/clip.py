"""CLIP (Radford et al. 2021): the baseline every other kind extends.

* space: :class:`~meru.spaces.EuclideanSphere`, unit vectors; score and training logit ``<x, y>`` (cosine).
* model: :class:`~meru.models.clip_meru.CLIP`, projected features L2-normalised; one learned scalar, ``logit_scale``
  (init ``log(1/0.07)``, clamped to ``<= log 100``).
* loss: :class:`~meru.losses.ClipLoss`, ``(CE(image -> text) + CE(text -> image)) / 2`` over logits
  ``exp(logit_scale) * <x_i, y_j>``.
"""

from meru.losses import ClipLoss
from meru.models.clip_meru import CLIP
from meru.spaces import EuclideanSphere

SPACE = EuclideanSphere
MODEL = CLIP
LOSS = ClipLoss
