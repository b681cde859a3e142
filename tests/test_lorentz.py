"""Lorentz geometry: closed forms, geoopt agreement (k = 1/c), stability and gradients."""

import math

import geoopt
import pytest
import torch

from meru import lorentz as L

CURVS = [0.1, 1.0, 10.0]


def full_point(x, curv):
    """(time, space) coordinates on geoopt's hyperboloid <x,x> = -k with k = 1/c, rescaled:
    our hyperboloid has radius 1/sqrt(c); geoopt's Lorentz(k) has -x0^2 + |x|^2 = -k, the same set for k = 1/c."""
    return torch.cat([L.time_component(x, curv)[..., None], x], dim=-1)


@pytest.mark.parametrize("curv", CURVS)
@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_geoopt(curv, seed):
    g = torch.Generator().manual_seed(seed)
    man = geoopt.manifolds.Lorentz(k=1.0 / curv)
    v = torch.randn(16, 5, generator=g, dtype=torch.float64) * 0.7
    x = L.exp_map0(v, curv)
    # geoopt's expmap0 takes a tangent vector with a zero time component
    gx = man.expmap0(torch.cat([torch.zeros(16, 1, dtype=torch.float64), v], dim=-1))
    torch.testing.assert_close(full_point(x, curv), gx, rtol=1e-7, atol=1e-7)
    y = L.exp_map0(torch.randn(16, 5, generator=g, dtype=torch.float64), curv)
    torch.testing.assert_close(
        L.elementwise_dist(x, y, curv), man.dist(full_point(x, curv), full_point(y, curv)), rtol=1e-7, atol=1e-7
    )
    torch.testing.assert_close(L.dist0(x, curv), man.dist0(full_point(x, curv)), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(L.log_map0(x, curv), man.logmap0(full_point(x, curv))[..., 1:], rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("curv", CURVS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_dimensional_closed_forms(curv, dtype):
    r = torch.tensor([[0.3], [1.2], [-0.5]], dtype=dtype)
    x = L.exp_map0(r, curv)
    # In 1-D the geodesic through the origin is the whole space: exp_0(r) = sinh(sqrt(c) r)/sqrt(c).
    torch.testing.assert_close(x, torch.sinh(math.sqrt(curv) * r) / math.sqrt(curv))
    # Distances along a line are differences of signed arc lengths.
    d = L.pairwise_dist(x, x, curv)
    expected = (r - r.T).abs()
    tol = 1e-3 if dtype == torch.float32 else 1e-7
    torch.testing.assert_close(d.fill_diagonal_(0), expected.fill_diagonal_(0), atol=tol, rtol=tol)
    torch.testing.assert_close(L.dist0(x, curv), r.abs()[:, 0], atol=tol, rtol=tol)


@pytest.mark.parametrize("curv", CURVS)
def test_log_exp_roundtrip_float32_wide_range(curv):
    # space-norm range 1e-6 .. near the clamp
    norms = torch.logspace(-6, math.log10(L.SINH_INPUT_MAX / math.sqrt(curv) * 0.99), 40)
    v = torch.nn.functional.normalize(torch.randn(40, 8), dim=-1) * norms[:, None]
    back = L.log_map0(L.exp_map0(v, curv), curv)
    torch.testing.assert_close(back, v, rtol=2e-5, atol=1e-9)


def test_inner_product_constraint_and_origin():
    x = L.exp_map0(torch.randn(10, 4, dtype=torch.float64), 2.0)
    torch.testing.assert_close(L.elementwise_inner(x, x, 2.0), torch.full((10,), -0.5, dtype=torch.float64))
    assert torch.all(L.dist0(torch.zeros(3, 4)) == 0)


def test_half_aperture_and_oxy_angle_closed_forms():
    curv = 1.0
    x = torch.tensor([[2.0, 0.0]])
    # aper = asin(2K / (sqrt(c) ||x||)) = asin(0.1)
    torch.testing.assert_close(
        L.half_aperture(x, curv, min_radius=0.1), torch.tensor([math.asin(0.1)]), rtol=1e-6, atol=1e-6
    )
    # inside the min radius the cone is (almost) a half-space: pi/2
    assert abs(float(L.half_aperture(torch.tensor([[0.05, 0.0]]), curv)) - math.pi / 2) < 1e-3
    # y beyond x on the same ray from the origin: exterior angle 0; y back toward the origin: pi
    far, near = torch.tensor([[5.0, 0.0]]), torch.tensor([[0.5, 0.0]])
    assert float(L.oxy_angle(x, far, curv)) < 1e-3
    assert float(L.oxy_angle(x, near, curv)) > math.pi - 1e-2
    # a Euclidean-perpendicular step: the geodesic x->y bends toward the origin, so the exterior
    # angle is strictly between pi/2 and pi (exactly pi/2 would hold in flat space)
    side = torch.tensor([[2.0, 1.0]])
    a = float(L.oxy_angle(x, side, curv))
    assert math.pi / 2 < a < math.pi


@pytest.mark.parametrize("curv", CURVS)
def test_gradients_finite_at_identical_points_and_origin(curv):
    x = torch.zeros(3, 4, requires_grad=True)
    y = L.exp_map0(x, curv)
    loss = L.pairwise_dist(y, y, curv).sum() + L.dist0(y, curv).sum() + L.log_map0(y, curv).sum()
    loss = loss + L.half_aperture(y, curv).sum() + L.oxy_angle(y, y, curv).sum()
    loss.backward()
    assert torch.isfinite(x.grad).all()
    z = torch.randn(5, 4, requires_grad=True)
    p = L.exp_map0(z, curv)
    (L.pairwise_dist(p, p, curv).sum() + L.oxy_angle(p, p, curv).sum()).backward()
    assert torch.isfinite(z.grad).all()


def test_small_distances_survive_float32():
    # two points 1e-3 apart, far from the origin: float32 still resolves their distance
    base = torch.tensor([[3.0, 0.0, 0.0]])
    other = base + torch.tensor([[0.0, 1e-2, 0.0]])
    d = float(L.pairwise_dist(base, other, 1.0))
    exact = float(L.pairwise_dist(base.double(), other.double(), 1.0))
    assert d == pytest.approx(exact, rel=0.05)


def test_geodesic_to_origin_endpoints_and_monotone():
    x = L.exp_map0(torch.randn(4, 3), 1.0)
    torch.testing.assert_close(L.geodesic_to_origin(x, 0.0), x, rtol=1e-5, atol=1e-6)
    assert torch.allclose(L.geodesic_to_origin(x, 1.0), torch.zeros_like(x), atol=1e-6)
    d = [L.dist0(L.geodesic_to_origin(x, t)) for t in (0.0, 0.25, 0.5, 0.75)]
    for a, b in zip(d, d[1:]):
        assert torch.all(b < a)
    # distance from the origin falls linearly in t along a geodesic through the origin
    torch.testing.assert_close(d[2], d[0] * 0.5, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("curv", CURVS)
def test_geoopt_float32_pairwise(curv):
    g = torch.Generator().manual_seed(3)
    man = geoopt.manifolds.Lorentz(k=1.0 / curv)
    x = L.exp_map0(torch.randn(6, 4, generator=g), curv)
    y = L.exp_map0(torch.randn(7, 4, generator=g), curv)
    ref = man.dist(full_point(x.double(), curv)[:, None], full_point(y.double(), curv)[None])
    torch.testing.assert_close(L.pairwise_dist(x, y, curv).double(), ref, rtol=1e-4, atol=1e-3)
    # -<x, y>_L relates to the distance by cosh(sqrt(c) d) = -c <x, y>_L
    torch.testing.assert_close(
        -curv * L.pairwise_inner(x, y, curv).double(), torch.cosh(math.sqrt(curv) * ref), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("curv", CURVS)
def test_elementwise_dist_accurate_for_nearby_points_float32(curv):
    # along one line the distance is |r1 - r2| exactly; the float32 result must resolve 1e-6 .. 10
    for r1, r2 in [(1e-6, 2e-6), (0.5, 0.5 + 1e-4), (3.0, 3.0 + 1e-3), (0.0, 1e-5), (2.0, -1.0)]:
        x = L.exp_map0(torch.tensor([[r1, 0.0, 0.0]]), curv)
        y = L.exp_map0(torch.tensor([[r2, 0.0, 0.0]]), curv)
        got = float(L.elementwise_dist(x, y, curv))
        assert got == pytest.approx(abs(r1 - r2), rel=2e-3), (r1, r2)
    # off the line: agrees with the float64 acosh form
    g = torch.Generator().manual_seed(4)
    a = L.exp_map0(torch.randn(32, 6, generator=g, dtype=torch.float64), curv)
    b = L.exp_map0(torch.randn(32, 6, generator=g, dtype=torch.float64), curv)
    ref = torch.acosh(-curv * L.elementwise_inner(a, b, curv)) / math.sqrt(curv)
    torch.testing.assert_close(L.elementwise_dist(a.float(), b.float(), curv).double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("curv", CURVS)
def test_dist0_and_small_norms(curv):
    v = torch.tensor([[1e-6, 0.0], [0.0, 3e-6], [1e-3, 1e-3]])
    x = L.exp_map0(v, curv)
    torch.testing.assert_close(L.dist0(x, curv), v.norm(dim=-1), rtol=1e-5, atol=0)
    torch.testing.assert_close(L.log_map0(x, curv), v, rtol=1e-5, atol=0)
    # the time component of a tiny point is 1/sqrt(c) to float32 precision
    torch.testing.assert_close(L.time_component(x, curv), torch.full((3,), 1 / math.sqrt(curv)))


def test_exp_map_clamp_and_gradients_everywhere():
    curv = 1.0
    v = torch.tensor([[1e3, 0.0], [0.0, 0.0], [1e-7, 0.0]], requires_grad=True)
    x = L.exp_map0(v, curv)
    assert torch.isfinite(x).all()
    assert float(x[0, 0]) == pytest.approx(2.0**15, rel=1e-5)  # sinh(asinh(2^15))
    loss = (
        L.elementwise_dist(x, x.flip(0), curv).sum()
        + L.elementwise_dist(x, x, curv).sum()
        + L.dist0(x, curv).sum()
        + L.geodesic_to_origin(x, 0.3, curv).sum()
    )
    loss.backward()
    assert torch.isfinite(v.grad).all()
