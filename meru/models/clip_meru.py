"""The CLIP baseline: towers, projections and the unit-sphere space. Every model kind is ``CLIP`` or a subclass
of it whose diff is the method, in ``meru/kinds/<kind>.py`` (MERU: the Lorentz lift and its learned scalars;
EuCLIP: the fixed ``1/sqrt(D)`` scale); :func:`build_model` builds any kind by name (:data:`meru.kinds.KINDS`).

* ``CLIP``: L2-normalised embeddings on the unit sphere, cosine logits.

Every model exposes the same projection API: ``project_image(raw)`` / ``project_text(raw)`` (raw projected
features -> embeddings of its space), ``projection_scales()`` (the ``alpha`` of each tower, or None) and
``space()`` (its :mod:`meru.spaces` space).

The hyperbolic head (alpha scaling, exp map, distances, losses) runs in float32 with TF32 off, whatever
autocast is active (:func:`fp32_head`), because reduced precision destroys small Lorentz distances. Training may
leave it under the surrounding autocast instead (``precision.head: autocast``, the official code's; the model's
and the loss's ``head_precision``; docs/DEVIATIONS.md).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meru.kinds import BASELINE, get_kind, model_options
from meru.models.registry import get_size
from meru.models.towers import build_image_tower, build_text_tower, trim_tokens
from meru.spaces import EuclideanSphere

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LOGIT_SCALE_MAX = math.log(100.0)


HEAD_PRECISIONS = ("fp32", "autocast")


@contextlib.contextmanager
def fp32_head(device_type: str = "cpu", precision: str = "fp32"):
    """Disable autocast (any device) and TF32 inside the block; callers cast inputs with ``.float()``.
    ``precision="autocast"``: change nothing, so the block runs under the surrounding autocast (its matrix
    products in fp16/bf16, autocast's float32 ops such as exp, acosh, norms and cross-entropy in float32)."""
    if precision not in HEAD_PRECISIONS:
        raise ValueError(f"head precision {precision!r}: choose one of {', '.join(HEAD_PRECISIONS)}")
    if precision == "autocast":
        yield
        return
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

    kind = BASELINE
    head_precision = "fp32"  # fp32_head's precision for the lift (training may set "autocast")

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

    def after_optimizer_step(self) -> None:
        """Parameter updates due after each optimiser step (none for CLIP; EuCLIP's logit-scale floor)."""

    def space(self):
        return EuclideanSphere()

    def forward(self, images: Tensor, tokens: Tensor) -> dict[str, Tensor]:
        self.clamp_parameters()
        return {
            "image": self.encode_image(images),
            "text": self.encode_text(tokens),
            "logit_scale": self.logit_scale.exp(),
        }


def build_model(kind: str, size: str = "tiny", **kwargs) -> CLIP:
    """``build_model(kind, size, **model_kwargs)``: the ``MODEL`` of ``meru/kinds/<kind>.py``, given the keyword
    arguments that are its options (``meru.kinds.KINDS[kind].options``, e.g. MERU's ``curv_init``,
    ``learn_curv``); the other kinds' options are ignored, so one call serves every kind."""
    return get_kind(kind).model_class(size, **model_options(kind, kwargs))
