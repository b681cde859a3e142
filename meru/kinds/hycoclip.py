"""HyCoCLIP (Pal et al., ICLR 2025; github PalAvik/hycoclip ``hycoclip/models.py``, ``HyCoCLIP(MERU)``): MERU's
model trained with grounded box crops of GRIT; released ViT-S/B checkpoints (``hycoclip_vit_{s,b}.pth``).

What differs from MERU, read from its code:

* space, lift and scalars: none. ``HyCoCLIP`` subclasses ``MERU`` and overrides only the training forward: the
  same towers, ``curv`` / ``visual_alpha`` / ``textual_alpha`` / ``logit_scale``, embeddings
  ``exp_map0(alpha * v, c)`` in :class:`~meru.spaces.Lorentz`, zero-shot by the Lorentzian inner product of a
  tangent-space prompt ensemble, cones of ``half_aperture(t, c)`` with ``K = 0.1``.
* loss: contrastive over (image, text) and (box image, box text) against the full captions (``0.25`` each), and
  four entailment terms (text -> image and box text -> box image with the aperture scaled by 0.7; box image ->
  image and box text -> text scaled by 1.2). It needs box crops, which no data here has, so the kind is
  evaluated from released checkpoints only.
* its file: the official MERU layout (``{"model": state_dict}``), but its constructor passes ``pixel_mean`` into
  MERU's ``use_boxes`` slot and ``pixel_std`` into ``pixel_mean``, so the saved ``pixel_mean`` buffer holds
  ImageNet's *std*, and the model normalises pixels with it. Loading uses the file's pixel buffers
  (:func:`meru.models.checkpoints.load_released`). The file cannot be told from a MERU file by its keys: the checkpoint entry
  names ``format: hycoclip``.

A kind of its own so that records, tables and plots name it; its space is MERU's.
"""

from __future__ import annotations

from meru.kinds.meru import MERU
from meru.spaces import Lorentz

SPACE = Lorentz


class HyCoCLIP(MERU):
    """HyCoCLIP at evaluation: MERU's towers, scalars and Lorentz lift under its own kind name."""

    kind = "hycoclip"


MODEL = HyCoCLIP
LOSS = "HyCoCLIP's loss needs grounded box crops (GRIT boxes); none of the training data here has them"
