"""Models from elsewhere: any open_clip architecture with local weights (or an ``hf-hub:`` name), for
``meru embed``, evaluated with CLIP geometry (cosine similarity on the unit sphere).

Checkpoint specs (``meru embed --checkpoint SPEC``)::

    openclip:ARCH:WEIGHTS        ARCH = an open_clip model name (``open_clip.list_models()``) or a model
                                 config JSON file in open_clip's format; WEIGHTS = a local state-dict file
                                 (loaded by open_clip with ``weights_only=True``)
    openclip:hf-hub:ORG/REPO     open_clip's Hugging Face Hub schema (needs network)
    openclip:local-dir:DIR       open_clip's local folder schema (open_clip_config.json + weights)

:class:`OpenClipModel` gives the interface ``meru.evaluation.embed`` uses: images ``[B, 3, S, S]`` in
``[0, 1]`` are normalised with the model's own mean/std; ``image_features`` are the pre-projection
pooled features where the tower exposes its projection (open_clip ViT ``visual.proj``), else the
projected ones; ``encode_text(tokens, project=False)`` returns unnormalised projected text features.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from meru.kinds import BASELINE
from meru.models.hub import offline_unless_reachable

PREFIX = "openclip:"


class ExternalModelError(ValueError):
    """An external model spec cannot be resolved; the message names the spec and the fix."""


def is_openclip_spec(spec: str | os.PathLike) -> bool:
    return str(spec).startswith(PREFIX)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``openclip:...`` -> (open_clip model name, local weights file or None)."""
    rest = spec[len(PREFIX) :]
    if rest.startswith(("hf-hub:", "local-dir:")):
        return rest, None
    arch, sep, weights = rest.partition(":")
    if not arch or not sep or not weights:
        raise ExternalModelError(
            f"--checkpoint {spec!r}: expected openclip:ARCH:WEIGHTS (e.g. "
            "openclip:ViT-B-32:/path/weights.pt), openclip:hf-hub:ORG/REPO or openclip:local-dir:DIR"
        )
    return arch, weights


class OpenClipModel(nn.Module):
    """An open_clip model behind the CLIP interface of :mod:`meru.models.clip_meru`: the baseline's kind, or
    (``kind``, ``space``, ``alphas``) another kind's lift ``space.lift(raw, alpha)`` of the projected features
    (EuCLIP: ``raw / sqrt(D)``; MERU: ``exp_map0(alpha * raw, c)``)."""

    def __init__(self, model: nn.Module, tokenizer, name: str, image_size: int, mean, std, kind: str = BASELINE,
                 space=None, alphas: tuple[float | None, float | None] = (None, None)):  # fmt: skip
        super().__init__()
        self.model, self._tokenizer = model, tokenizer
        self.kind, self._space, self._alphas = kind, space, alphas
        self.size, self.image_size = name, int(image_size)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.embed_dim = int(getattr(model, "embed_dim", 0) or model.text_projection.shape[-1])
        self.checkpoint_info = {"step": None, "config": {}}

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def tokenize(self, texts: list[str], trim: bool = False) -> Tensor:
        """Token ids at the model's own context length (``trim`` is ignored: an open_clip text tower may
        need its full context, e.g. for a fixed attention mask)."""
        return self._tokenizer(texts)

    def space(self):
        """The kind's space; CLIP geometry by default: the unit sphere (cosine scores)."""
        from meru.spaces import EuclideanSphere

        return EuclideanSphere() if self._space is None else self._space

    def project_image(self, raw: Tensor) -> Tensor:
        if self._space is None:
            return torch.nn.functional.normalize(raw, dim=-1)
        return self._space.lift(raw, self._alphas[0])

    def project_text(self, raw: Tensor) -> Tensor:
        if self._space is None:
            return torch.nn.functional.normalize(raw, dim=-1)
        return self._space.lift(raw, self._alphas[1])

    def projection_scales(self) -> dict:
        return {"visual_alpha": self._alphas[0], "textual_alpha": self._alphas[1]}

    def _normalise(self, images: Tensor) -> Tensor:
        return (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std

    @contextlib.contextmanager
    def _without_projection(self):
        visual = self.model.visual
        proj = getattr(visual, "proj", None)
        if isinstance(proj, nn.Parameter):
            visual.proj = None
        try:
            yield
        finally:
            if isinstance(proj, nn.Parameter):
                visual.proj = proj

    def image_features(self, images: Tensor) -> Tensor:
        """Pre-projection pooled image features ``[B, W]`` (projected ``[B, D]`` when the tower has no
        separable projection)."""
        with self._without_projection():
            return self.model.encode_image(self._normalise(images), normalize=False)

    def encode_image(self, images: Tensor, project: bool = True) -> Tensor:
        """``[B, 3, S, S]`` in [0, 1] -> ``[B, D]`` (the kind's embeddings if ``project``, e.g. unit vectors)."""
        if self._space is None:
            return self.model.encode_image(self._normalise(images), normalize=project)
        raw = self.model.encode_image(self._normalise(images), normalize=False)
        return self.project_image(raw) if project else raw

    def encode_text(self, tokens: Tensor, project: bool = True) -> Tensor:
        """``[B, L]`` tokens -> ``[B, D]`` (the kind's embeddings if ``project``; raw projected features otherwise)."""
        if self._space is None:
            return self.model.encode_text(tokens, normalize=project)
        raw = self.model.encode_text(tokens, normalize=False)
        return self.project_text(raw) if project else raw


def _first_lines(exc: BaseException, n: int = 1, limit: int = 200) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = " ".join(lines[:n]) if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_error(spec: str, name: str, weights: str | None, offline: bool, exc: BaseException) -> ExternalModelError:
    """One line for a failed ``open_clip.create_model``: the hub unreachable (names HF_HUB_OFFLINE and the
    manual path), weights that do not fit the architecture (names both), or open_clip's own first line."""
    if name.startswith("hf-hub:"):
        why = "the hub is unreachable and it is not in the Hugging Face cache" if offline else _first_lines(exc)
        return ExternalModelError(
            f"--checkpoint {spec!r}: cannot fetch {name} from the Hugging Face Hub ({why}; offline mode, "
            f"HF_HUB_OFFLINE=1, uses the cache only): download the repo once where there is network and use "
            "openclip:local-dir:DIR (open_clip_config.json + weights)"
        )
    if weights is not None and (isinstance(exc, AssertionError) or "state_dict" in str(exc)):
        # the detail: the first mismatch, the line after "Error(s) in loading state_dict for CLIP:"
        return ExternalModelError(
            f"--checkpoint {spec!r}: weights file {weights} does not fit open_clip architecture {name!r} "
            f"({_first_lines(exc, 2)}); give the architecture the weights were trained with"
        )
    return ExternalModelError(f"--checkpoint {spec!r}: open_clip cannot load it: {_first_lines(exc)}")


def load_openclip(spec: str, map_location="cpu") -> OpenClipModel:
    """Build ``openclip:...`` (see module doc); errors for bad specs, missing files or no network are one line."""
    import open_clip

    name, weights = parse_spec(spec)
    name = _register_config(name, f"--checkpoint {spec!r}")
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"--checkpoint {spec!r}: weights file {weights} not found")
        if name not in open_clip.list_models():
            raise ExternalModelError(
                f"--checkpoint {spec!r}: {name!r} is not an open_clip architecture (see "
                "open_clip.list_models(), or give a model config .json)"
            )
    offline = name.startswith("hf-hub:") and offline_unless_reachable()
    try:
        model = open_clip.create_model(name, pretrained=weights, device=map_location, weights_only=True)
        tokenizer = open_clip.get_tokenizer(name)
    except (OSError, RuntimeError, ValueError, AssertionError) as e:
        raise _load_error(spec, name, weights, offline, e) from None
    out = _wrap(model, tokenizer, name)
    out.checkpoint_info = {"step": None, "config": {"openclip": {"model": name, "weights": weights}}}
    return out.eval()


def _register_config(name: str, where: str) -> str:
    """An open_clip model name; a model config ``.json`` is registered with open_clip and its stem returned."""
    import open_clip

    if not name.endswith(".json"):
        return name
    cfg = Path(name)
    if not cfg.is_file():
        raise ExternalModelError(f"{where}: model config {cfg} not found")
    open_clip.add_model_config(cfg)
    return cfg.stem


def _wrap(model: nn.Module, tokenizer, name: str, **kind) -> OpenClipModel:
    """``model`` behind :class:`OpenClipModel`, with its own image size and pixel mean/std (``kind``: its
    ``kind`` / ``space`` / ``alphas``)."""
    import open_clip

    visual = model.visual
    size = visual.image_size if hasattr(visual, "image_size") else 224
    size = size[0] if isinstance(size, (tuple, list)) else size
    pp = getattr(visual, "preprocess_cfg", None) or {}
    mean = pp.get("mean", getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = pp.get("std", getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return OpenClipModel(model.eval(), tokenizer, f"openclip-{Path(name).name}", size, mean, std, **kind)


def build_openclip(arch: str, state: dict, where: str, kind: str = BASELINE, space=None, alphas=(None, None)):
    """The open_clip architecture ``arch`` (a name or a model config .json) with the tower weights ``state``
    (strict), behind :class:`OpenClipModel` as ``kind`` (``space``, ``alphas``: its lift); one-line
    :class:`ExternalModelError` naming ``where`` otherwise."""
    import open_clip

    name = _register_config(arch, where)
    if name not in open_clip.list_models():
        raise ExternalModelError(f"{where}: {name!r} is not an open_clip architecture (open_clip.list_models())")
    model = open_clip.create_model(name, pretrained=None, device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ExternalModelError(
            f"{where}: does not fit open_clip architecture {name!r}: {_first_lines(e, 2)}"
        ) from None
    return _wrap(model, open_clip.get_tokenizer(name), name, kind=kind, space=space, alphas=alphas).eval()
