"""CLIP, MERU and EuCLIP: the same towers and projections, differing only in the embedding space.

* ``CLIP``: L2-normalised embeddings on the unit sphere, cosine logits.
* ``MERU`` (Desai et al., ICML 2023): projected features ``v`` are scaled by a learned ``alpha`` and
  lifted onto the Lorentz hyperboloid of curvature ``-c`` with ``exp_map0``; learned ``c``
  (log-parametrised, init ``c0``, clamped to ``[c0/10, 10 c0]``), ``alpha`` (init ``1/sqrt(D)``, ``<= 1``).
* ``EuCLIP`` (Hong et al., ECCV 2024 workshop, arXiv 2409.13079; ``--geometry euclidean-squared`` of the
  ``euclip`` branch of EIFY/open_clip): projected features scaled by the fixed ``1/sqrt(D)``, not normalised;
  logits ``-s ||x - y||^2``; Euclidean entailment cones; ``log s`` initialised at -1 (the paper's choice for
  models trained with the entailment loss), clamped to ``<= log 100`` like CLIP's.

Every model exposes the same projection API: ``project_image(raw)`` / ``project_text(raw)`` (raw projected
features -> embeddings of its space), ``projection_scales()`` (the ``alpha`` of each tower, or None) and
``space()`` (its :mod:`meru.spaces` space).

The hyperbolic head (alpha scaling, exp map, distances, losses) always runs in float32 with TF32 off,
whatever autocast is active (:func:`fp32_head`), because reduced precision destroys small Lorentz distances.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meru import lorentz as L
from meru.models.registry import get_size
from meru.models.towers import build_image_tower, build_text_tower, trim_tokens
from meru.spaces import Euclidean, EuclideanSphere, Lorentz

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LOGIT_SCALE_MAX = math.log(100.0)


@contextlib.contextmanager
def fp32_head(device_type: str = "cpu"):
    """Disable autocast (any device) and TF32 inside the block; callers cast inputs with ``.float()``."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def get_tokenizer(context_length: int = 77):
    """open_clip's CLIP BPE tokenizer (vocab 49408, bundled): ``list[str] -> LongTensor[B, context_length]``."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


class CLIP(nn.Module):
    """CLIP baseline. ``images``: ``[B, 3, H, W]`` in ``[0, 1]``; ``tokens``: ``[B, L]`` token ids."""

    kind = "clip"

    def __init__(self, size: str = "tiny"):
        super().__init__()
        spec = get_size(size)
        self.size, self.image_size, self.context_length, self.embed_dim = (
            size,
            spec.image_size,
            spec.context_length,
            spec.embed_dim,
        )
        self.visual = build_image_tower(spec.image_tower, spec.image_size, spec.embed_dim)
        self.text = build_text_tower(
            spec.text_layers, spec.text_width, spec.text_heads, spec.context_length, spec.vocab_size, spec.embed_dim
        )
        self.logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(-1, 1, 1), persistent=False)
        self._tokenizer = None

    # ---- model kwargs saved in checkpoints (rebuild with build_model(kind, size, **model_kwargs)) ----
    def model_kwargs(self) -> dict:
        return {}

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def tokenize(self, texts: list[str], trim: bool = False) -> Tensor:
        """``[B, context_length]`` token ids; ``trim=True``: ``[B, L]`` trimmed to the longest text (``trim_tokens``)."""
        if self._tokenizer is None:
            self._tokenizer = get_tokenizer(self.context_length)
        tokens = self._tokenizer(list(texts))
        return trim_tokens(tokens) if trim else tokens

    def normalize_pixels(self, images: Tensor) -> Tensor:
        """``(x - mean) / std`` per channel; uint8 images (0..255) are first scaled by 1/255 on their device,
        so a loader can ship 4x fewer bytes (identical values to ``ToTensor``'s float path)."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        return (images - self.pixel_mean) / self.pixel_std

    def image_features(self, images: Tensor) -> Tensor:
        """Pre-projection image features (ViT [CLS] or conv global average), ``[B, W_vis]`` (linear probe input).
        ``images``: ``[B, 3, H, W]`` float in [0, 1] or uint8 in 0..255."""
        x = self.normalize_pixels(images)
        if getattr(self.visual, "channels_last", False):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.visual.trunk(x)

    def _image_raw(self, images: Tensor) -> Tensor:
        return self.visual.head(self.image_features(images))

    def _text_raw(self, tokens: Tensor) -> Tensor:
        """Tokens ``[B, L]`` with ``L <= context_length``, run at length ``L`` (the result does not depend on
        trailing padding: causal attention + [EOT]/argmax pooling; see :func:`~meru.models.towers.trim_tokens`)."""
        tokens = tokens.to(self.device, non_blocking=True)
        if tokens.shape[-1] > self.context_length:
            raise ValueError(
                f"tokens have length {tokens.shape[-1]} > context length {self.context_length} of "
                f"{self.kind}/{self.size}; tokenize with model.tokenize()"
            )
        return self.text(tokens)

    def project_image(self, raw: Tensor) -> Tensor:
        """Raw projected image features ``[B, D]`` -> embeddings of this model's space (CLIP: L2-normalise)."""
        return F.normalize(raw, dim=-1)

    def project_text(self, raw: Tensor) -> Tensor:
        """Raw projected text features ``[B, D]`` -> embeddings of this model's space (CLIP: L2-normalise)."""
        return F.normalize(raw, dim=-1)

    def projection_scales(self) -> dict:
        """``{"visual_alpha", "textual_alpha"}``: the scale each tower's raw features get before the space's
        lift (``None``: no scale), as floats; recorded in embedding caches for prompt ensembling."""
        return {"visual_alpha": None, "textual_alpha": None}

    def encode_image(self, images: Tensor, project: bool = True) -> Tensor:
        """``[B, 3, H, W] -> [B, D]``; ``project=True`` applies :meth:`project_image`."""
        x = self._image_raw(images)
        return self.project_image(x) if project else x

    def encode_text(self, tokens: Tensor, project: bool = True) -> Tensor:
        """``[B, L] -> [B, D]``; ``project=True`` applies :meth:`project_text`."""
        x = self._text_raw(tokens)
        return self.project_text(x) if project else x

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        """Apply the parameter clamps (called at every forward, as the official code does)."""
        self.logit_scale.clamp_(max=LOGIT_SCALE_MAX)

    def space(self):
        return EuclideanSphere()

    def forward(self, images: Tensor, tokens: Tensor) -> dict[str, Tensor]:
        self.clamp_parameters()
        return {
            "image": self.encode_image(images),
            "text": self.encode_text(tokens),
            "logit_scale": self.logit_scale.exp(),
        }


class MERU(CLIP):
    """MERU: CLIP with a Lorentz-hyperboloid embedding space (space components returned)."""

    kind = "meru"

    def __init__(self, size: str = "tiny", curv_init: float = 1.0, learn_curv: bool = True):
        super().__init__(size)
        self.curv_init, self.learn_curv = float(curv_init), bool(learn_curv)
        self.curv = nn.Parameter(torch.tensor(curv_init).log(), requires_grad=learn_curv)
        self.curv_min, self.curv_max = math.log(curv_init / 10), math.log(curv_init * 10)
        self.visual_alpha = nn.Parameter(torch.tensor(self.embed_dim**-0.5).log())
        self.textual_alpha = nn.Parameter(torch.tensor(self.embed_dim**-0.5).log())

    def model_kwargs(self) -> dict:
        return {"curv_init": self.curv_init, "learn_curv": self.learn_curv}

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        super().clamp_parameters()
        self.curv.clamp_(self.curv_min, self.curv_max)
        self.visual_alpha.clamp_(max=0.0)
        self.textual_alpha.clamp_(max=0.0)

    def lift(self, raw: Tensor, log_alpha: Tensor) -> Tensor:
        """``exp_map0(alpha * v, c)`` in float32 with autocast and TF32 off. ``[B, D] -> [B, D]``."""
        with fp32_head(self.device.type):
            return L.exp_map0(raw.float() * log_alpha.float().exp(), self.curv.float().exp())

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
        return Lorentz(float(self.curv.detach().exp()))

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


class EuCLIP(CLIP):
    """EuCLIP: CLIP with unnormalised Euclidean embeddings ``x = raw / sqrt(D)`` and squared-distance logits."""

    kind = "euclip"
    LOGIT_SCALE_INIT = -1.0

    def __init__(self, size: str = "tiny"):
        super().__init__(size)
        self.embed_scale = self.embed_dim**-0.5  # fixed (EuCLIP's dim_scale), not learned
        with torch.no_grad():
            self.logit_scale.fill_(self.LOGIT_SCALE_INIT)

    def _scale(self, raw: Tensor) -> Tensor:
        with fp32_head(self.device.type):
            return raw.float() * self.embed_scale

    def project_image(self, raw: Tensor) -> Tensor:
        return self._scale(raw)

    def project_text(self, raw: Tensor) -> Tensor:
        return self._scale(raw)

    def projection_scales(self) -> dict:
        return {"visual_alpha": self.embed_scale, "textual_alpha": self.embed_scale}

    def space(self):
        return Euclidean()


MODEL_CLASSES = {"clip": CLIP, "meru": MERU, "euclip": EuCLIP}
#: keyword arguments each kind's constructor takes (others passed to build_model are ignored)
MODEL_KWARGS = {"clip": (), "meru": ("curv_init", "learn_curv"), "euclip": ()}


def build_model(kind: str, size: str = "tiny", **kwargs) -> CLIP:
    """``build_model("meru"|"clip"|"euclip", size, **model_kwargs)``; MERU takes ``curv_init``, ``learn_curv``
    (the other kinds ignore them, so one call serves every kind)."""
    if kind not in MODEL_CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(repr(k) for k in MODEL_CLASSES)}")
    kwargs = {k: v for k, v in kwargs.items() if k in MODEL_KWARGS[kind]}
    return MODEL_CLASSES[kind](size, **kwargs)
