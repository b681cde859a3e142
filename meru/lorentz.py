"""Lorentz (hyperboloid) model of hyperbolic space with curvature ``-c`` (``c > 0``).

Points are stored by their *space components* ``x ∈ R^D`` only; the time component is implied by
the hyperboloid constraint ``<x, x>_L = -1/c``::

    x_time = sqrt(1/c + ||x||^2)
    <x, y>_L = <x_space, y_space> - x_time * y_time          (Lorentzian inner product)
    d(x, y)  = acosh(-c <x, y>_L) / sqrt(c)                    (geodesic distance)

The origin (the hyperboloid's vertex) has zero space components. Names and signatures follow the
official MERU module (facebookresearch/meru, ``meru/lorentz.py``) so code written against it ports
unchanged; ``dist0``, ``time_component``, the element-wise variants and ``geodesic_to_origin`` are
additions used by the evaluations. All functions are pure and broadcast over leading dimensions
unless noted; ``x``: ``[B, D]``, ``y``: ``[B2, D]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: ``exp_map0`` clamps its ``sinh`` input here (as the official code does) so float32 never overflows.
SINH_INPUT_MAX = math.asinh(2.0**15)


def time_component(x: Tensor, curv: float | Tensor = 1.0) -> Tensor:
    """``x_time = sqrt(1/c + ||x||^2)``. Shape ``[..., D] -> [...]``."""
    return torch.sqrt(1 / curv + torch.sum(x**2, dim=-1))


def pairwise_inner(x: Tensor, y: Tensor, curv: float | Tensor = 1.0) -> Tensor:
    """All-pairs Lorentzian inner product ``<x_i, y_j>_L``. ``[B1, D], [B2, D] -> [B1, B2]``."""
    x_time = time_component(x, curv)
    y_time = time_component(y, curv)
    return x @ y.T - x_time.unsqueeze(-1) * y_time.unsqueeze(-2)


def elementwise_inner(x: Tensor, y: Tensor, curv: float | Tensor = 1.0) -> Tensor:
    """Row-wise Lorentzian inner product ``<x_i, y_i>_L``. ``[B, D], [B, D] -> [B]``."""
    return torch.sum(x * y, dim=-1) - time_component(x, curv) * time_component(y, curv)


def _acosh_dist(c_xyl: Tensor, curv: float | Tensor, eps: float) -> Tensor:
    # acosh(z) for z = -c<x,y>_L >= 1; the clamp keeps the gradient finite at z = 1 (identical points).
    return torch.acosh(torch.clamp(c_xyl, min=1 + eps)) / curv**0.5


def pairwise_dist(x: Tensor, y: Tensor, curv: float | Tensor = 1.0, eps: float = 1e-8) -> Tensor:
    """All-pairs geodesic distance ``acosh(-c <x_i, y_j>_L) / sqrt(c)``. ``[B1, D], [B2, D] -> [B1, B2]``.

    The acosh argument is clamped to ``>= 1 + eps`` (official behaviour): finite gradients at ``x == y``.
    This is the official formula (used by the contrastive loss, for parity); in float32 it cannot resolve
    distances below about ``sqrt(2 * 1.2e-7) * sqrt(c) * x_t`` (~5e-4 near the origin); use
    :func:`elementwise_dist` where small distances matter.
    """
    return _acosh_dist(-curv * pairwise_inner(x, y, curv), curv, eps)


def elementwise_dist(x: Tensor, y: Tensor, curv: float | Tensor = 1.0, eps: float = 1e-8) -> Tensor:
    """Row-wise geodesic distance ``d(x_i, y_i)``. ``[..., D], [..., D] -> [...]``.

    Same value as ``acosh(-c <x, y>_L) / sqrt(c)``, computed from polar coordinates about the origin
    so that float32 resolves small distances anywhere (the acosh form bottoms out near
    ``sqrt(2 * 1.2e-7) * sqrt(c) * x_t``). With ``a = asinh(sqrt(c)||x||)``, ``b = asinh(sqrt(c)||y||)``
    (``sqrt(c)`` times the distances from the origin) and ``theta`` the angle between ``x`` and ``y``,
    the hyperbolic law of cosines gives a sum of non-negative terms::

        sinh^2(sqrt(c) d / 2) = sinh^2((a - b) / 2) + c ||x|| ||y|| sin^2(theta / 2),
        sin(theta / 2) = ||x/||x|| - y/||y|| || / 2.

    The sum is floored at ``eps^2`` so the gradient is finite at ``x == y`` and at the origin.
    """
    rc = curv**0.5
    xn, yn = torch.linalg.vector_norm(x, dim=-1), torch.linalg.vector_norm(y, dim=-1)
    a, b = torch.asinh(rc * xn), torch.asinh(rc * yn)
    half_chord = (
        torch.linalg.vector_norm(
            torch.nn.functional.normalize(x, dim=-1, eps=eps) - torch.nn.functional.normalize(y, dim=-1, eps=eps),
            dim=-1,
        )
        / 2
    )
    s2 = torch.sinh((a - b) / 2) ** 2 + curv * xn * yn * half_chord**2
    return 2 * torch.asinh(torch.sqrt(torch.clamp(s2, min=eps**2))) / rc


def dist0(x: Tensor, curv: float | Tensor = 1.0, eps: float = 1e-8) -> Tensor:
    """Distance from the origin ``d(0, x) = asinh(sqrt(c) ||x||) / sqrt(c)``. ``[..., D] -> [...]``.

    Uses the closed form with ``asinh`` (``acosh(sqrt(1 + c||x||^2))`` is the same value) because it is
    exact for tiny norms, where ``acosh`` of a number near 1 loses all float32 precision.
    """
    rc = curv**0.5
    # vector_norm's gradient at x = 0 is 0 (a subgradient), so this is finite at the origin too
    return torch.asinh(rc * torch.linalg.vector_norm(x, dim=-1)) / rc


def exp_map0(x: Tensor, curv: float | Tensor = 1.0, eps: float = 1e-8) -> Tensor:
    """Exponential map at the origin, returning space components. ``[..., D] -> [..., D]``.

    For a tangent vector ``v`` at the origin (time component 0):
    ``exp_0(v) = sinh(sqrt(c) ||v||) * v / (sqrt(c) ||v||)``. The ``sinh`` input is clamped to
    ``asinh(2^15)``; ``||v||`` is floored at ``eps`` so ``v = 0`` maps to the origin with finite gradient.
    """
    rc_xnorm = curv**0.5 * torch.norm(x, dim=-1, keepdim=True)
    sinh_input = torch.clamp(rc_xnorm, min=eps, max=SINH_INPUT_MAX)
    return torch.sinh(sinh_input) * x / torch.clamp(rc_xnorm, min=eps)


def log_map0(x: Tensor, curv: float | Tensor = 1.0, eps: float = 1e-8) -> Tensor:
    """Logarithmic map at the origin (inverse of :func:`exp_map0`). ``[..., D] -> [..., D]``.

    ``log_0(x) = asinh(sqrt(c) ||x||) * x / (sqrt(c) ||x||)`` on space components. (The official code
    writes ``acosh(1 + c ||x||^2 ...)``-style forms; ``asinh`` is the same function of ``||x||`` and stays
    accurate in float32 for small norms.)
    """
    rc_xnorm = curv**0.5 * torch.norm(x, dim=-1, keepdim=True)
    return torch.asinh(rc_xnorm) * x / torch.clamp(rc_xnorm, min=eps)


def half_aperture(x: Tensor, curv: float | Tensor = 1.0, min_radius: float = 0.1, eps: float = 1e-8) -> Tensor:
    """Half-aperture of the entailment cone at ``x`` (Le et al. 2019; MERU Eq. 7). ``[..., D] -> [...]``.

    ``aper(x) = asin( 2K / (sqrt(c) ||x||) )`` with ``K = min_radius``; the argument is clamped to
    ``[-1 + eps, 1 - eps]`` so points within the min radius get the widest cone (pi/2) with finite grads.
    """
    asin_input = 2 * min_radius / (torch.norm(x, dim=-1) * curv**0.5 + eps)
    return torch.asin(torch.clamp(asin_input, min=-1 + eps, max=1 - eps))


def oxy_angle(x: Tensor, y: Tensor, curv: float | Tensor = 1.0, eps: float = 1e-8) -> Tensor:
    """Exterior angle at ``x`` in the hyperbolic triangle ``O x y`` (MERU Eq. 8). ``[B, D], [B, D] -> [B]``.

    It is ``pi`` minus the interior angle at ``x`` and measures how far ``y`` deviates from the geodesic
    ray leaving the origin through ``x``; ``y`` lies in ``x``'s entailment cone iff
    ``oxy_angle(x, y) <= half_aperture(x)``. From the hyperbolic law of cosines::

        angle = acos( (y_t + c <x,y>_L x_t) / (||x|| sqrt((c <x,y>_L)^2 - 1)) )
    """
    x_time = time_component(x, curv)
    y_time = time_component(y, curv)
    c_xyl = curv * (torch.sum(x * y, dim=-1) - x_time * y_time)
    acos_numer = y_time + c_xyl * x_time
    acos_denom = torch.sqrt(torch.clamp(c_xyl**2 - 1, min=eps))
    acos_input = acos_numer / (torch.norm(x, dim=-1) * acos_denom + eps)
    return torch.acos(torch.clamp(acos_input, min=-1 + eps, max=1 - eps))


def geodesic_to_origin(x: Tensor, t: float | Tensor, curv: float | Tensor = 1.0) -> Tensor:
    """Point a fraction ``t`` of the way from ``x`` (``t = 0``) to the origin (``t = 1``) on the geodesic.

    Geodesics through the origin are straight lines in the tangent space at the origin, so
    ``gamma(t) = exp_0((1 - t) log_0(x))``. ``[..., D] -> [..., D]``.
    """
    return exp_map0((1 - t) * log_map0(x, curv), curv)
