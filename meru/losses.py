"""Training losses: CLIP/MERU contrastive loss over negatives gathered from all ranks, MERU entailment.

Follows open_clip's ``ClipLoss`` structure ("local loss": each rank scores its own queries against the
gathered keys, labels offset by ``rank * B``) and reuses its ``gather_features``.

* CLIP logits: ``s * cos(x_i, y_j)``; MERU logits: ``-s * d_L(x_i, y_j)``; ``s = exp(logit_scale) <= 100``.
* Contrastive loss: ``(CE(image -> text) + CE(text -> image)) / 2``.
* Entailment (MERU): ``mean_i max(0, oxy_angle(t_i, v_i) - half_aperture(t_i))`` — each caption's cone
  should contain its paired image. Total = contrastive + ``entail_weight`` * entailment.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.loss import gather_features
from torch import Tensor

from meru import lorentz as L
from meru.models.clip_meru import fp32_head


class ContrastiveLoss:
    def __init__(self, kind: str, entail_weight: float = 0.2, min_radius: float = 0.1, rank: int = 0, world_size: int = 1):
        if kind not in ("clip", "meru"):
            raise ValueError(f"unknown model kind {kind!r}")
        self.kind, self.entail_weight, self.min_radius = kind, float(entail_weight), float(min_radius)
        self.rank, self.world_size = rank, world_size

    def _gather(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        if self.world_size == 1:
            return image, text
        # gather_grad=True: gradients flow to every rank's features (as all_gather with grad in MERU).
        return gather_features(image, text, local_loss=True, gather_with_grad=True, rank=self.rank, world_size=self.world_size)

    def __call__(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        image, text, scale = out["image"], out["text"], out["logit_scale"]
        logs: dict[str, Tensor] = {}
        with fp32_head(image.device.type):
            image, text, scale = image.float(), text.float(), scale.float()
            all_image, all_text = self._gather(image, text)
            labels = torch.arange(image.shape[0], device=image.device) + image.shape[0] * self.rank
            if self.kind == "clip":
                logits_i, logits_t = scale * image @ all_text.T, scale * text @ all_image.T
            else:
                curv = out["curv"].float()
                logits_i = -scale * L.pairwise_dist(image, all_text, curv)
                logits_t = -scale * L.pairwise_dist(text, all_image, curv)
            contrastive = 0.5 * (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels))
            loss = contrastive
            if self.kind == "meru":
                angle = L.oxy_angle(text, image, curv)
                aperture = L.half_aperture(text, curv, self.min_radius)
                entailment = torch.clamp(angle - aperture, min=0).mean()
                if self.entail_weight > 0:
                    loss = loss + self.entail_weight * entailment
                logs["entailment_loss"] = entailment.detach()
                logs["curv"] = curv.detach()
                logs["visual_alpha"] = out["visual_alpha"].detach()
                logs["textual_alpha"] = out["textual_alpha"].detach()
                with torch.no_grad():
                    radius = torch.cat([L.dist0(image, curv), L.dist0(text, curv)])
                    raw_norm_i = torch.norm(L.log_map0(image, curv), dim=-1) * curv.sqrt()
                    raw_norm_t = torch.norm(L.log_map0(text, curv), dim=-1) * curv.sqrt()
                    logs["clamp_hits_expmap"] = ((raw_norm_i >= L.SINH_INPUT_MAX * 0.999).sum() + (raw_norm_t >= L.SINH_INPUT_MAX * 0.999).sum()).float()
                    c_xyl = -curv * L.pairwise_inner(image, all_text, curv)
                    logs["clamp_hits_acosh"] = (c_xyl <= 1 + 1e-8).sum().float()
                    logs["cone_inside_frac"] = (angle <= aperture).float().mean()
            else:
                with torch.no_grad():
                    radius = torch.ones(1, device=image.device)
            logs["radius_mean"], logs["radius_max"] = radius.mean().detach(), radius.max().detach()
        logs["loss"], logs["contrastive_loss"], logs["logit_scale"] = loss, contrastive.detach(), scale.detach()
        return logs


def build_loss(kind: str, entail_weight: float = 0.2, rank: int = 0, world_size: int = 1, min_radius: float = 0.1) -> ContrastiveLoss:
    return ContrastiveLoss(kind, entail_weight=entail_weight, min_radius=min_radius, rank=rank, world_size=world_size)
