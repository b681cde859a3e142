"""The two embedding spaces behind one interface, so evaluation code is geometry-agnostic.

* :class:`EuclideanSphere` (CLIP): unit vectors; similarity = cosine, distance = angle.
* :class:`Lorentz` (MERU): space components on the hyperboloid of curvature ``-c``;
  similarity = Lorentzian inner product (the official zero-shot/retrieval score), distance = geodesic.

``raw`` features are the projected tower outputs before normalisation / alpha / exp map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from meru import lorentz as L


class EuclideanSphere:
    kind = "clip"
    curv = None

    def similarity(self, x: Tensor, y: Tensor) -> Tensor:
        """Cosine similarity ``[N, D], [M, D] -> [N, M]``."""
        return F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        """Angle ``acos(cos)`` in radians, ``[N, M]``."""
        return torch.acos(self.similarity(x, y).clamp(-1.0, 1.0))

    def root_distance(self, x: Tensor, root: Tensor | None = None) -> Tensor:
        """Euclidean analogue of distance from the origin: the angle to ``root`` (a direction ``[D]``;
        MERU paper's CLIP [ROOT] is the mean text embedding of the pool). Default ``root``: the mean
        direction of ``x`` itself. ``[N, D] -> [N]``."""
        if root is None:
            root = F.normalize(x.float(), dim=-1).mean(0)
        return self.distance(x, root.reshape(1, -1))[:, 0]

    def lift(self, raw: Tensor, alpha: float | Tensor = 1.0) -> Tensor:
        """Raw projected features ``[N, D]`` -> unit vectors (``alpha`` is ignored)."""
        return F.normalize(raw.float(), dim=-1)

    def ensemble(self, raw: Tensor, alpha: float | Tensor = 1.0) -> Tensor:
        """Prompt ensemble ``[T, C, D] -> [C, D]``: normalise, mean over templates, normalise (CLIP)."""
        return F.normalize(F.normalize(raw.float(), dim=-1).mean(0), dim=-1)

    def interpolate_to_root(self, x: Tensor, root: Tensor, t: float) -> Tensor:
        """Linear interpolation ``(1 - t) x + t root`` (MERU paper's CLIP traversal), re-normalised."""
        return F.normalize((1 - t) * x + t * root.reshape(1, -1), dim=-1)

    def entails(self, text: Tensor, image: Tensor) -> Tensor:
        raise NotImplementedError("entailment cones are not defined for CLIP's spherical embeddings")


class Lorentz:
    kind = "meru"

    def __init__(self, curv: float):
        self.curv = float(curv)

    def similarity(self, x: Tensor, y: Tensor) -> Tensor:
        """Lorentzian inner product ``<x, y>_L``, ``[N, M]`` (higher = closer)."""
        return L.pairwise_inner(x.float(), y.float(), self.curv)

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        return L.pairwise_dist(x.float(), y.float(), self.curv)

    def root_distance(self, x: Tensor, root: Tensor | None = None) -> Tensor:
        """Geodesic distance from the origin, ``[N]`` (``root`` is ignored: the origin is the root)."""
        return L.dist0(x.float(), self.curv)

    def lift(self, raw: Tensor, alpha: float | Tensor = 1.0) -> Tensor:
        """Raw projected features ``[N, D]`` -> ``exp_map0(alpha * raw)`` (``alpha`` = exp of the model's
        log-parameter, e.g. ``model.textual_alpha.exp()``)."""
        return L.exp_map0(raw.float() * alpha, self.curv)

    def ensemble(self, raw: Tensor, alpha: float | Tensor = 1.0) -> Tensor:
        """Prompt ensemble ``[T, C, D] -> [C, D]``: mean of raw features in the tangent space at the
        origin, then ``alpha`` and ``exp_map0`` (as the official MERU zero-shot evaluation)."""
        return L.exp_map0(raw.float().mean(0) * alpha, self.curv)

    def interpolate_to_root(self, x: Tensor, root: Tensor | None, t: float) -> Tensor:
        """Point a fraction ``t`` along the geodesic from ``x`` to the origin."""
        return L.geodesic_to_origin(x.float(), t, self.curv)

    def entails(self, text: Tensor, image: Tensor) -> Tensor:
        """``[N, M]`` bool: image ``j`` lies inside text ``i``'s entailment cone."""
        t, i = text.float(), image.float()
        n, m = t.shape[0], i.shape[0]
        angle = L.oxy_angle(t[:, None].expand(n, m, -1).reshape(n * m, -1), i[None].expand(n, m, -1).reshape(n * m, -1), self.curv)
        return (angle.view(n, m) <= L.half_aperture(t, self.curv)[:, None])

    def cone_violation(self, text: Tensor, image: Tensor) -> Tensor:
        """Row-wise ``oxy_angle(text_i, image_i) - half_aperture(text_i)`` (<= 0 inside the cone), ``[N]``."""
        return L.oxy_angle(text.float(), image.float(), self.curv) - L.half_aperture(text.float(), self.curv)


def get_space(kind: str, curv: float | None = None):
    """``"clip" -> EuclideanSphere()``; ``"meru" -> Lorentz(curv)``."""
    if kind == "clip":
        return EuclideanSphere()
    if kind == "meru":
        if curv is None:
            raise ValueError("the MERU space needs its curvature c")
        return Lorentz(curv)
    raise ValueError(f"unknown embedding space {kind!r}; choose 'meru' or 'clip'")
