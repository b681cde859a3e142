"""Embedding spaces: hand-computed cases for CLIP's sphere and MERU's hyperboloid."""

import math

import pytest
import torch

from meru import lorentz as L
from meru.spaces import EuclideanSphere, Lorentz, get_space


def test_get_space():
    assert isinstance(get_space("clip"), EuclideanSphere)
    space = get_space("meru", 0.5)
    assert isinstance(space, Lorentz) and space.curv == 0.5
    with pytest.raises(ValueError, match="curvature"):
        get_space("meru")
    with pytest.raises(ValueError, match="unknown embedding space"):
        get_space("poincare")


def test_sphere_similarity_distance_root():
    s = EuclideanSphere()
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(s.similarity(x, y), torch.full((2, 1), 1 / math.sqrt(2)))
    torch.testing.assert_close(s.distance(x, x), torch.tensor([[0.0, math.pi / 2], [math.pi / 2, 0.0]]), atol=1e-3, rtol=0)
    torch.testing.assert_close(s.root_distance(x, torch.tensor([1.0, 0.0])), torch.tensor([0.0, math.pi / 2]), atol=1e-3, rtol=0)
    # default root: the mean direction of the inputs, here the diagonal -> both at 45 degrees
    torch.testing.assert_close(s.root_distance(x), torch.full((2,), math.pi / 4))
    with pytest.raises(NotImplementedError):
        s.entails(x, x)


def test_sphere_lift_and_ensemble():
    s = EuclideanSphere()
    raw = torch.tensor([[[1.0, 0.0]], [[0.0, 5.0]]])  # T=2 templates, C=1 class
    # normalise -> mean (0.5, 0.5) -> normalise
    torch.testing.assert_close(s.ensemble(raw), torch.tensor([[1.0, 1.0]]) / math.sqrt(2))
    torch.testing.assert_close(s.lift(torch.tensor([[3.0, 4.0]])), torch.tensor([[0.6, 0.8]]))
    torch.testing.assert_close(s.interpolate_to_root(torch.tensor([[1.0, 0.0]]), torch.tensor([0.0, 1.0]), 0.5),
                               torch.tensor([[1.0, 1.0]]) / math.sqrt(2))


@pytest.mark.parametrize("curv", [0.1, 1.0, 10.0])
def test_lorentz_lift_and_ensemble_closed_form(curv):
    s = Lorentz(curv)
    rc = math.sqrt(curv)
    # 1-D: exp_0(alpha v) = sinh(sqrt(c) alpha v) / sqrt(c); the ensemble averages in the tangent space first
    raw = torch.tensor([[[0.4], [-1.0]], [[1.2], [3.0]]])  # [T=2, C=2, D=1]
    alpha = 0.5
    expected = torch.sinh(rc * alpha * torch.tensor([[0.8], [1.0]])) / rc
    torch.testing.assert_close(s.ensemble(raw, alpha), expected)
    torch.testing.assert_close(s.lift(raw[0], alpha), torch.sinh(rc * alpha * raw[0]) / rc)
    # with T identical templates the ensemble is just the lift
    v = torch.randn(3, 4)
    torch.testing.assert_close(s.ensemble(v.expand(5, 3, 4), 0.3), s.lift(v, 0.3))


@pytest.mark.parametrize("curv", [0.5, 2.0])
def test_lorentz_similarity_distance_root(curv):
    s = Lorentz(curv)
    r = torch.tensor([[0.2], [1.0], [-0.7]], dtype=torch.float64)
    x = torch.sinh(math.sqrt(curv) * r) / math.sqrt(curv)  # points at signed distances r on a line
    d = s.distance(x.double(), x.double())
    torch.testing.assert_close(d.fill_diagonal_(0).double(), (r - r.T).abs().fill_diagonal_(0).float().double(),
                               atol=1e-3, rtol=1e-3)
    sim = s.similarity(x, x)
    # <x, x>_L = -1/c and -c <x, y>_L = cosh(sqrt(c) d(x, y))
    torch.testing.assert_close(sim.diagonal(), torch.full((3,), -1 / curv))
    torch.testing.assert_close(-curv * sim, torch.cosh(math.sqrt(curv) * (r - r.T).abs()).float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s.root_distance(x), r.abs()[:, 0].float(), rtol=1e-5, atol=1e-6)
    mid = s.interpolate_to_root(x, None, 0.5)
    torch.testing.assert_close(s.root_distance(mid), r.abs()[:, 0].float() / 2, rtol=1e-5, atol=1e-6)


def test_lorentz_entails_hand_cases():
    s = Lorentz(1.0)
    text = torch.tensor([[2.0, 0.0], [0.05, 0.0]])  # far from / within the min radius of the origin
    image = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [5.0, 4.0], [0.0, 3.0]])
    got = s.entails(text, image)
    assert got.shape == (2, 4) and got.dtype == torch.bool
    # cone at (2, 0) has half-aperture asin(0.1) ~ 5.7 deg: contains the point further along its ray only
    assert got[0].tolist() == [True, False, False, False]
    # within the min radius the cone is a half-space (aperture pi/2 - eps): the point straight behind is outside
    assert got[1, 0] and not got[1, 1]
    # agrees with the row-wise definition oxy_angle <= half_aperture
    for i in range(2):
        for j in range(4):
            ang = L.oxy_angle(text[i:i + 1], image[j:j + 1], 1.0)
            assert bool(got[i, j]) == bool(ang <= L.half_aperture(text[i:i + 1], 1.0))
    assert (s.cone_violation(text[:1], image[:1]) < 0).all() and (s.cone_violation(text[:1], image[1:2]) > 0).all()
