"""Embedding spaces: the one door to geometry. Evaluation, embedding and the losses call only these.

Three spaces; each model kind names its own (``SPACE`` in ``meru/kinds/<kind>.py``, its name in
:data:`meru.kinds.KINDS`):

* :class:`EuclideanSphere` (CLIP): unit vectors; score = cosine, distance = angle; [ROOT] = the
  normalised mean caption of a pool (MERU paper's CLIP root); no entailment cones.
* :class:`Lorentz` (MERU): space components on the hyperboloid of curvature ``-c``; score = Lorentzian
  inner product (official zero-shot/retrieval score), training logit = ``-d_L``; [ROOT] = the origin;
  cones of half-aperture ``asin(2K / (sqrt(c) ||x||))`` (Le et al. 2019; MERU Eq. 7-8).
* :class:`Euclidean` (EuCLIP, Chou & Alam 2024, arXiv 2409.13079): unnormalised vectors; score = training
  logit = ``-||x - y||^2``; [ROOT] = the origin; Euclidean cones (Ganea et al. 2018) of half-aperture
  ``asin(K / ||x||)``, exterior angle ``acos(<y - x, x> / (||y - x|| ||x||))``.

Public interface of every space (``x``: ``[N, D]``, ``y``: ``[M, D]``, ``raw``: projected tower outputs):

* identity: ``name``, ``kind``, ``root_label``, ``root_name``, ``has_cones``, ``min_radius``, ``curv``;
  ``record()`` (saved in embedding caches), ``geometry()`` (the ``"geometry"`` field of metric JSON),
  ``matches(other)``; :func:`get_space` builds a space from a kind, :func:`meru.records.space_from_record` from a record.
* projection: ``lift(raw [N, D], alpha) -> [N, D]``, ``ensemble(raw [T, C, D], alpha) -> [C, D]`` (prompt ensemble).
* scores: ``logits(x, y) -> [N, M]`` (training logit before the learned scale; differentiable),
  ``similarity(x, y) -> [N, M]`` (evaluation score, higher = closer), ``distance(x, y) -> [N, M]``.
* root: ``root(pool [M, D]) -> [D]``, ``root_distance(x, root=None) -> [N]``, ``interpolate_to_root(x, root, t)``,
  ``path_to_root(x [D], root [D], steps) -> [S, D]`` (traversal), ``modality_gap(images, texts) -> float``.
* cones (``has_cones``; the sphere raises ``NotImplementedError``): ``half_aperture(x) -> [N]``,
  ``exterior_angle(x, y) -> [N]`` (row-wise), ``cone_violation(text, image) -> [N]`` (row-wise, ``<= 0``
  inside), ``cone_violation_matrix(text [M, D], points [N, D], chunk_elems) -> [M, N]`` (chunked),
  ``entails(text, image) -> [M, N]`` bool.

All methods compute in float32 (inputs are cast with ``.float()``); ``curv`` may be a float (evaluation) or a
0-d tensor (training, so the loss differentiates through the learned curvature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from meru import lorentz as L
from meru.kinds import get_kind, kind_of_space

#: default entailment-cone min radius ``K`` (MERU and EuCLIP both use 0.1)
MIN_RADIUS = 0.1


class Space:
    """Interface shared by the three spaces; subclasses fill in the geometry (see module doc)."""

    name: str = ""
    root_label: str = ""
    root_name: str = "origin"
    has_cones: bool = False
    curv = None

    def __init__(self, min_radius: float = MIN_RADIUS):
        self.min_radius = float(min_radius)

    @classmethod
    def build(cls, curv: float | Tensor | None = None, min_radius: float = MIN_RADIUS) -> Space:
        """The space from its record's fields (``curv`` is ignored by the spaces without a curvature)."""
        return cls(min_radius)

    @property
    def kind(self) -> str | None:
        """The model kind whose space this is (:func:`meru.kinds.kind_of_space`)."""
        return kind_of_space(self.name)

    # ---------------------------------------------------------------------------------- identity
    def record(self) -> dict:
        """Plain-dict description saved in embedding caches; :func:`meru.records.space_from_record` rebuilds the space."""
        return {
            "name": self.name,
            "kind": self.kind,
            "curv": None if self.curv is None else float(self.curv),
            "min_radius": self.min_radius,
        }

    def geometry(self) -> dict:
        """``{"space", "root_distance"}`` for metric JSON, so reporting labels axes without knowing model kinds."""
        return {"space": self.name, "root_distance": self.root_label}

    def matches(self, other: Space, rtol: float = 1e-6) -> bool:
        """Same space (name, curvature within ``rtol``): embeddings of the two can be compared."""
        if self.name != other.name:
            return False
        if self.curv is None or other.curv is None:
            return self.curv is None and other.curv is None
        a, b = float(self.curv), float(other.curv)
        return abs(a - b) <= rtol * abs(a)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.record().items() if k != 'name')})"

    # ---------------------------------------------------------------------------------- root
    def root(self, pool: Tensor) -> Tensor:
        """[ROOT] ``[D]`` for a caption pool ``[M, D]``: the origin (overridden by the sphere)."""
        return torch.zeros(pool.shape[1])

    def path_to_root(self, x: Tensor, root: Tensor | None, steps: int) -> Tensor:
        """``[S, D]`` traversal path: ``interpolate_to_root(x, root, t_k)`` for ``t_k = k / (S - 1)``."""
        ts = torch.linspace(0.0, 1.0, steps).view(-1, 1)
        return self.interpolate_to_root(x.float().view(1, -1), root, ts)

    def to_tangent(self, x: Tensor) -> Tensor:
        """Coordinates in which centroids are taken (modality gap): the embeddings themselves."""
        return x.float()

    def modality_gap(self, images: Tensor, texts: Tensor) -> float:
        """``||mean_i f(x_i) - mean_j f(t_j)||`` with ``f = to_tangent`` (Liang et al., NeurIPS 2022)."""
        images, texts = self.to_tangent(images), self.to_tangent(texts)
        return float(torch.linalg.vector_norm(images.float().mean(0) - texts.float().mean(0)))

    # ---------------------------------------------------------------------------------- cones
    def half_aperture(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"entailment cones are not defined in the {self.name} space ({self.kind})")

    def exterior_angle(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError(f"entailment cones are not defined in the {self.name} space ({self.kind})")

    def cone_violation(self, text: Tensor, image: Tensor) -> Tensor:
        """Row-wise ``exterior_angle(text_i, image_i) - half_aperture(text_i)`` (``<= 0``: inside the cone), ``[N]``."""
        text, image = text.float(), image.float()
        return self.exterior_angle(text, image) - self.half_aperture(text)

    def cone_violation_matrix(self, text: Tensor, points: Tensor, chunk_elems: int = 1 << 23) -> Tensor:
        """``[M, N]``: ``exterior_angle(text_j, points_i) - half_aperture(text_j)``, computed in row chunks of
        about ``chunk_elems`` elements so large pools fit in memory."""
        text, points = text.float(), points.float()
        m, n, d = text.shape[0], points.shape[0], text.shape[1]
        rows = max(1, chunk_elems // max(1, n * d))
        aper = self.half_aperture(text)
        out = []
        for s in range(0, m, rows):
            t = text[s : s + rows]
            ang = self.exterior_angle(t[:, None, :].expand(-1, n, -1), points[None, :, :].expand(t.shape[0], -1, -1))
            out.append(ang - aper[s : s + rows, None])
        return torch.cat(out) if out else torch.zeros(0, n)

    def entails(self, text: Tensor, image: Tensor) -> Tensor:
        """``[M, N]`` bool: image ``j`` lies inside text ``i``'s entailment cone."""
        return self.cone_violation_matrix(text, image) <= 0


class EuclideanSphere(Space):
    """CLIP: unit vectors on the sphere."""

    name = "sphere"
    root_label = "angle to the mean text direction (rad)"
    root_name = "normalised mean pool caption direction"

    def logits(self, x: Tensor, y: Tensor) -> Tensor:
        """Training logit before the scale: ``<x_i, y_j>`` of unit vectors (the model normalises), ``[N, M]``."""
        return x @ y.T

    def similarity(self, x: Tensor, y: Tensor) -> Tensor:
        """Cosine similarity ``[N, D], [M, D] -> [N, M]``."""
        return F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        """Angle ``acos(cos)`` in radians, ``[N, M]``."""
        return torch.acos(self.similarity(x, y).clamp(-1.0, 1.0))

    def root(self, pool: Tensor) -> Tensor:
        """[ROOT] = ``normalise(mean_j t_j)``, the mean caption direction of the pool (MERU paper's CLIP root)."""
        return F.normalize(pool.float().mean(0), dim=0)

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

    def interpolate_to_root(self, x: Tensor, root: Tensor, t: float | Tensor) -> Tensor:
        """Linear interpolation ``(1 - t) x + t root`` (MERU paper's CLIP traversal), re-normalised."""
        return F.normalize((1 - t) * x + t * root.reshape(1, -1), dim=-1)


class Lorentz(Space):
    """MERU: the hyperboloid of curvature ``-c``, points stored by their space components."""

    name = "lorentz"
    root_label = "geodesic distance from the origin"
    has_cones = True

    def __init__(self, curv: float | Tensor, min_radius: float = MIN_RADIUS):
        super().__init__(min_radius)
        self.curv = curv if isinstance(curv, Tensor) else float(curv)

    @classmethod
    def build(cls, curv: float | Tensor | None = None, min_radius: float = MIN_RADIUS) -> Lorentz:
        if curv is None:
            raise ValueError("the Lorentz space needs its curvature c")
        return cls(curv, min_radius)

    def logits(self, x: Tensor, y: Tensor) -> Tensor:
        """Training logit before the scale: ``-d_L(x_i, y_j)`` (official acosh form), ``[N, M]``."""
        return -L.pairwise_dist(x, y, self.curv)

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

    def interpolate_to_root(self, x: Tensor, root: Tensor | None, t: float | Tensor) -> Tensor:
        """Point a fraction ``t`` along the geodesic from ``x`` to the origin: ``exp_0((1 - t) log_0(x))``."""
        return L.geodesic_to_origin(x.float(), t, self.curv)

    def to_tangent(self, x: Tensor) -> Tensor:
        """``log_0(x)``: the centroid of hyperboloid points is not on the hyperboloid, so the modality gap is
        measured in the tangent space at the origin."""
        return L.log_map0(x.float(), self.curv)

    def half_aperture(self, x: Tensor) -> Tensor:
        """``asin(2K / (sqrt(c) ||x||))``, clamped to ``[-1 + eps, 1 - eps]`` (MERU Eq. 7). ``[N, D] -> [N]``."""
        return L.half_aperture(x, self.curv, self.min_radius)

    def exterior_angle(self, x: Tensor, y: Tensor) -> Tensor:
        """Exterior angle at ``x`` of the hyperbolic triangle ``O x y`` (MERU Eq. 8), row-wise ``[..., D] -> [...]``."""
        return L.oxy_angle(x, y, self.curv)

    # diagnostics of the training loss (numerical clamps of the official formulas)
    def lift_clamped(self, x: Tensor) -> Tensor:
        """``[N]`` bool: ``x`` sits where ``exp_map0``'s sinh input was clamped (``sqrt(c)||log_0 x|| >= asinh(2^15)``)."""
        raw_norm = torch.norm(L.log_map0(x, self.curv), dim=-1) * self.curv**0.5
        return raw_norm >= L.SINH_INPUT_MAX * 0.999

    def acosh_clamped(self, x: Tensor, y: Tensor) -> Tensor:
        """``[N, M]`` bool: pairs whose ``-c <x, y>_L`` hit the ``1 + eps`` clamp of :func:`meru.lorentz.pairwise_dist`."""
        return -self.curv * L.pairwise_inner(x, y, self.curv) <= 1 + 1e-8


class Euclidean(Space):
    """EuCLIP: unnormalised Euclidean vectors, squared-distance logits, Euclidean entailment cones."""

    name = "euclidean"
    root_label = "Euclidean norm"
    has_cones = True

    def __init__(self, min_radius: float = MIN_RADIUS, eps: float = 1e-8):
        super().__init__(min_radius)
        self.eps = float(eps)

    def logits(self, x: Tensor, y: Tensor) -> Tensor:
        """Training logit before the scale: ``-||x_i - y_j||^2 = -(||x||^2 - 2<x, y> + ||y||^2)`` (EuCLIP's
        ``euclidean_squared``; the expanded form is one matmul), floored at 0 against round-off. ``[N, M]``."""
        sq = x.square().sum(-1, keepdim=True) - 2 * x @ y.T + y.square().sum(-1, keepdim=True).T
        return -sq.clamp(min=0)

    def similarity(self, x: Tensor, y: Tensor) -> Tensor:
        """Negative squared distance ``-||x_i - y_j||^2`` (EuCLIP's zero-shot/retrieval score), ``[N, M]``."""
        return self.logits(x.float(), y.float())

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        """``||x_i - y_j||``, ``[N, M]``."""
        return torch.cdist(x.float(), y.float())

    def root_distance(self, x: Tensor, root: Tensor | None = None) -> Tensor:
        """``||x||``, the distance from [ROOT] = the origin (``root`` is ignored), ``[N]``."""
        return torch.linalg.vector_norm(x.float(), dim=-1)

    def lift(self, raw: Tensor, alpha: float | Tensor = 1.0) -> Tensor:
        """``alpha * raw`` (EuCLIP's fixed ``alpha = 1 / sqrt(D)``; no normalisation)."""
        return raw.float() * alpha

    def ensemble(self, raw: Tensor, alpha: float | Tensor = 1.0) -> Tensor:
        """Prompt ensemble ``[T, C, D] -> [C, D]``: ``alpha * mean_t raw[t]`` (EuCLIP: mean of the embeddings,
        not re-normalised)."""
        return raw.float().mean(0) * alpha

    def interpolate_to_root(self, x: Tensor, root: Tensor | None, t: float | Tensor) -> Tensor:
        """``(1 - t) x + t root`` on the straight line to [ROOT] (default the origin)."""
        x = x.float()
        return (1 - t) * x if root is None else (1 - t) * x + t * root.float().reshape(1, -1)

    def half_aperture(self, x: Tensor) -> Tensor:
        """``asin(min(K / ||x||, 1 - eps))`` (Ganea et al. 2018, Eq. 25 with ``K`` = ``min_radius``): within ``K``
        of the origin the cone is the half-space (``pi/2``); the clamp keeps gradients finite. ``[..., D] -> [...]``."""
        norm = torch.linalg.vector_norm(x, dim=-1)
        return torch.asin(torch.clamp(self.min_radius / (norm + self.eps), max=1 - self.eps))

    def exterior_angle(self, x: Tensor, y: Tensor) -> Tensor:
        """Angle at ``x`` between the ray ``O -> x`` continued and ``x -> y``:
        ``acos(<y - x, x> / (||y - x|| ||x||))`` (Ganea et al. 2018, Eq. 28), row-wise ``[..., D] -> [...]``;
        the cosine is clamped to ``[-1 + eps, 1 - eps]``."""
        diff = y - x
        cos = (diff * x).sum(-1) / (
            torch.linalg.vector_norm(diff, dim=-1) * torch.linalg.vector_norm(x, dim=-1) + self.eps
        )
        return torch.acos(torch.clamp(cos, min=-1 + self.eps, max=1 - self.eps))


#: the spaces defined here by :attr:`Space.name`; a kind whose registry entry names one of them (``Kind.space``) gets
#: it without importing ``meru/kinds/<kind>.py``, which imports its model and loss (timm, open_clip)
SPACES: dict[str, type[Space]] = {cls.name: cls for cls in (EuclideanSphere, Lorentz, Euclidean)}


def get_space(kind: str, curv: float | None = None, min_radius: float = MIN_RADIUS) -> Space:
    """The space of model ``kind`` (``SPACE`` of ``meru/kinds/<kind>.py``, read from :data:`SPACES` by the kind's
    ``space`` name when it is one of these), e.g. MERU's ``Lorentz(curv)``."""
    entry = get_kind(kind)
    return (SPACES.get(entry.space) or entry.space_class).build(curv, min_radius)


__all__ = ["MIN_RADIUS", "SPACES", "Euclidean", "EuclideanSphere", "Lorentz", "Space", "get_space"]
