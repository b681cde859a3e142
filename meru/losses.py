"""Training losses, structured as open_clip's ``loss.py``: a contrastive ``ClipLoss`` that the geometry-specific
losses extend, over negatives gathered from all ranks.

Follows open_clip's ``ClipLoss`` ("local loss": each rank scores its own queries against the gathered keys,
labels offset by ``rank * B``) and reuses its ``gather_features``. Geometry comes only from
:mod:`meru.spaces`: each loss names its space (:meth:`ClipLoss.space`) and takes the logits from it.

* :class:`ClipLoss` (CLIP): logits ``s * <x_i, y_j>`` of unit vectors; each kind's loss (``LOSS`` in
  ``meru/kinds/<kind>.py``) extends it: MERU's logits ``-s * d_L(x_i, y_j)`` on the hyperboloid (learned
  curvature), EuCLIP's ``-s * ||x_i - y_j||^2``.
* ``s = exp(logit_scale) <= 100``; contrastive loss ``(CE(image -> text) + CE(text -> image)) / 2``.
* Entailment (:class:`ConeLoss`, the base of MERU and EuCLIP): ``mean_i max(0, ext(t_i, v_i) - aper(t_i))``,
  the space's exterior angle minus the half-aperture of the caption's cone (each caption's cone should contain
  its paired image). Total = contrastive + ``entail_weight`` * entailment.

Each loss returns ``{"loss", "contrastive_loss", "logit_scale", ...}``; the extra logging entries (radii, clamp
hits, cone fractions, learned scalars) come from :meth:`ClipLoss.diagnostics`, kept apart from the loss terms
and computed without gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.loss import gather_features
from torch import Tensor

from meru.models.clip_meru import fp32_head
from meru.kinds import get_kind
from meru.spaces import MIN_RADIUS, EuclideanSphere, Space


class ClipLoss:
    """CLIP's symmetric contrastive loss; subclasses change the space and add terms / diagnostics."""

    head_precision = "fp32"  # fp32_head's precision ("autocast": the official code's, precision.head)

    def __init__(self, rank: int = 0, world_size: int = 1):
        self.rank, self.world_size = rank, world_size

    def space(self, out: dict[str, Tensor]) -> Space:
        """The space of this step's embeddings (differentiable parameters taken from the model output)."""
        return EuclideanSphere()

    def _gather(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        if self.world_size == 1:
            return image, text
        # gather_grad=True: gradients flow to every rank's features (as all_gather with grad in MERU).
        return gather_features(
            image, text, local_loss=True, gather_with_grad=True, rank=self.rank, world_size=self.world_size
        )

    def get_logits(
        self, space: Space, image: Tensor, text: Tensor, all_image: Tensor, all_text: Tensor, scale: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(s * logit(image_i, text_j), s * logit(text_i, image_j))``, ``[B, W*B]`` each."""
        return scale * space.logits(image, all_text), scale * space.logits(text, all_image)

    def extra_terms(
        self, space: Space, out: dict[str, Tensor], image: Tensor, text: Tensor
    ) -> dict[str, tuple[Tensor, float]]:
        """Loss terms added to the contrastive loss: ``{name: (value, weight)}`` (CLIP: none)."""
        return {}

    def diagnostics(
        self, space: Space, out: dict[str, Tensor], image: Tensor, text: Tensor, all_text: Tensor
    ) -> dict[str, Tensor]:
        """Logging-only values (under ``no_grad``). CLIP: radius 1 (unit vectors)."""
        radius = torch.ones(1, device=image.device)
        return {"radius_mean": radius.mean(), "radius_max": radius.max()}

    def __call__(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        image, text, scale = out["image"], out["text"], out["logit_scale"]
        logs: dict[str, Tensor] = {}
        with fp32_head(image.device.type, self.head_precision):
            image, text, scale = image.float(), text.float(), scale.float()
            space = self.space(out)
            all_image, all_text = self._gather(image, text)
            labels = torch.arange(image.shape[0], device=image.device) + image.shape[0] * self.rank
            logits_i, logits_t = self.get_logits(space, image, text, all_image, all_text, scale)
            contrastive = 0.5 * (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels))
            loss = contrastive
            for name, (value, weight) in self.extra_terms(space, out, image, text).items():
                if weight > 0:
                    loss = loss + weight * value
                logs[name] = value.detach()
            with torch.no_grad():
                logs.update({k: v.detach() for k, v in self.diagnostics(space, out, image, text, all_text).items()})
        logs["loss"], logs["contrastive_loss"], logs["logit_scale"] = loss, contrastive.detach(), scale.detach()
        return logs


class ConeLoss(ClipLoss):
    """Contrastive loss + ``entail_weight`` * entailment-cone loss of the space (MERU, EuCLIP)."""

    def __init__(self, entail_weight: float = 0.2, min_radius: float = MIN_RADIUS, rank: int = 0, world_size: int = 1):
        super().__init__(rank, world_size)
        self.entail_weight, self.min_radius = float(entail_weight), float(min_radius)

    def extra_terms(self, space, out, image, text):
        return {"entailment_loss": (torch.clamp(space.cone_violation(text, image), min=0).mean(), self.entail_weight)}

    def diagnostics(self, space, out, image, text, all_text):
        radius = torch.cat([space.root_distance(image), space.root_distance(text)])
        return {
            "radius_mean": radius.mean(),
            "radius_max": radius.max(),
            "cone_inside_frac": (space.cone_violation(text, image) <= 0).float().mean(),
        }


def build_loss(
    kind: str, entail_weight: float = 0.2, rank: int = 0, world_size: int = 1, min_radius: float = MIN_RADIUS
) -> ClipLoss:
    """The loss of model ``kind`` (its ``LOSS`` in ``meru/kinds/<kind>.py``); ``entail_weight`` and ``min_radius``
    apply to the kinds with cones."""
    cls = get_kind(kind).loss_class
    if issubclass(cls, ConeLoss):
        return cls(entail_weight=entail_weight, min_radius=min_radius, rank=rank, world_size=world_size)
    return cls(rank=rank, world_size=world_size)
