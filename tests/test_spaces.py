"""Embedding spaces: hand-computed cases for CLIP's sphere, MERU's hyperboloid and EuCLIP's Euclidean space."""

import math

import pytest
import torch

from meru import lorentz as L
from meru.records import space_from_record
from meru.spaces import Euclidean, EuclideanSphere, Lorentz, get_space


def test_get_space():
    assert isinstance(get_space("clip"), EuclideanSphere)
    space = get_space("meru", 0.5)
    assert isinstance(space, Lorentz) and space.curv == 0.5
    assert isinstance(get_space("euclip"), Euclidean)
    with pytest.raises(ValueError, match="curvature"):
        get_space("meru")
    with pytest.raises(ValueError, match="unknown model kind"):
        get_space("poincare")


def test_sphere_similarity_distance_root():
    s = EuclideanSphere()
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(s.similarity(x, y), torch.full((2, 1), 1 / math.sqrt(2)))
    torch.testing.assert_close(
        s.distance(x, x), torch.tensor([[0.0, math.pi / 2], [math.pi / 2, 0.0]]), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(
        s.root_distance(x, torch.tensor([1.0, 0.0])), torch.tensor([0.0, math.pi / 2]), atol=1e-3, rtol=0
    )
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
    torch.testing.assert_close(
        s.interpolate_to_root(torch.tensor([[1.0, 0.0]]), torch.tensor([0.0, 1.0]), 0.5),
        torch.tensor([[1.0, 1.0]]) / math.sqrt(2),
    )


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
    torch.testing.assert_close(
        d.fill_diagonal_(0).double(), (r - r.T).abs().fill_diagonal_(0).float().double(), atol=1e-3, rtol=1e-3
    )
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
            ang = L.oxy_angle(text[i : i + 1], image[j : j + 1], 1.0)
            assert bool(got[i, j]) == bool(ang <= L.half_aperture(text[i : i + 1], 1.0))
    assert (s.cone_violation(text[:1], image[:1]) < 0).all() and (s.cone_violation(text[:1], image[1:2]) > 0).all()


# ------------------------------------------------------------------------------------------- EuCLIP


def test_euclidean_half_aperture_closed_form_and_clamp():
    s = Euclidean(min_radius=0.1)
    x = torch.tensor([[0.2, 0.0], [0.0, 1.0], [3.0, 4.0], [0.05, 0.0], [0.0, 0.0]])
    got = s.half_aperture(x)
    # asin(K / ||x||) for ||x|| > K; within the min radius the argument is clamped (cone = half-space, pi/2)
    expected = torch.tensor([math.asin(0.5), math.asin(0.1), math.asin(0.02), math.pi / 2, math.pi / 2])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # finite gradient even at the origin
    xg = x.clone().requires_grad_(True)
    s.half_aperture(xg).sum().backward()
    assert torch.isfinite(xg.grad).all()


def test_euclidean_exterior_angle_hand_cases_and_law_of_cosines():
    s = Euclidean()
    x = torch.tensor([[1.0, 0.0]])
    cases = {
        (2.0, 0.0): 0.0,  # straight on along the ray through x
        (0.0, 0.0): math.pi,  # back towards the origin
        (1.0, 1.0): math.pi / 2,  # perpendicular to the ray
        (2.0, 1.0): math.pi / 4,
    }
    for y, angle in cases.items():
        torch.testing.assert_close(s.exterior_angle(x, torch.tensor([y])), torch.tensor([angle]), atol=1e-3, rtol=0)
    # Ganea et al. (2018) Eq. 28: ext = acos((||y||^2 - ||x||^2 - ||x - y||^2) / (2 ||x|| ||x - y||))
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 4, generator=g, dtype=torch.float64), torch.randn(50, 4, generator=g, dtype=torch.float64)
    n_a, n_b, n_ab = a.norm(dim=-1), b.norm(dim=-1), (a - b).norm(dim=-1)
    ganea = torch.acos((n_b**2 - n_a**2 - n_ab**2) / (2 * n_a * n_ab))
    torch.testing.assert_close(s.exterior_angle(a, b), ganea, atol=1e-6, rtol=0)


def test_euclidean_cones_and_entailment_hand_cases():
    s = Euclidean(min_radius=0.1)
    text = torch.tensor([[1.0, 0.0], [0.05, 0.0]])
    image = torch.tensor([[3.0, 0.1], [3.0, 1.0], [0.5, 0.0], [-1.0, 0.1]])
    # cone at (1, 0): half-aperture asin(0.1) = 5.74 deg; (3, 0.1) is at atan(0.05) = 2.9 deg -> inside,
    # (3, 1) at atan(0.5) = 26.6 deg -> outside, (0.5, 0) behind -> outside
    got = s.entails(text, image)
    assert got.shape == (2, 4) and got[0].tolist() == [True, False, False, False]
    # within the min radius: the half-space (pi/2) in front of the caption; (-1, 0.1) lies behind it
    assert got[1].tolist() == [True, True, True, False]
    viol = s.cone_violation(text[:1].expand(4, 2), image)
    torch.testing.assert_close(viol[0], torch.tensor(math.atan(0.05) - math.asin(0.1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(viol[1], torch.tensor(math.atan(0.5) - math.asin(0.1)), atol=1e-5, rtol=0)
    # the chunked matrix equals the row-wise definition, whatever the chunk size
    full = s.cone_violation_matrix(text, image)
    for i in range(2):
        torch.testing.assert_close(full[i], s.cone_violation(text[i : i + 1].expand(4, 2), image))
    assert torch.equal(full <= 0, got)
    torch.testing.assert_close(s.cone_violation_matrix(text, image, chunk_elems=1), full)


def test_euclidean_logits_root_paths_and_projection():
    s = Euclidean()
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    y = torch.tensor([[1.0, 0.0], [-2.0, 2.0], [1.0, 2.0]])
    # -||x - y||^2 by hand
    expected = -torch.tensor([[4.0, 9.0, 0.0], [1.0, 8.0, 5.0]])
    torch.testing.assert_close(s.logits(x, y), expected)
    torch.testing.assert_close(s.similarity(x, y), expected)
    torch.testing.assert_close(s.distance(x, y), (-expected).sqrt())
    torch.testing.assert_close(s.root(y), torch.zeros(2))
    torch.testing.assert_close(s.root_distance(x), torch.tensor([math.sqrt(5), 0.0]))
    p = s.path_to_root(x[0], s.root(y), 5)
    torch.testing.assert_close(p, torch.linspace(1, 0, 5)[:, None] * x[0])
    # projection: alpha * raw, no normalisation; the prompt ensemble is alpha * mean over templates
    raw = torch.tensor([[[1.0, 0.0]], [[0.0, 5.0]]])
    torch.testing.assert_close(s.ensemble(raw, 0.5), torch.tensor([[0.25, 1.25]]))
    torch.testing.assert_close(s.lift(torch.tensor([[3.0, 4.0]]), 0.5), torch.tensor([[1.5, 2.0]]))
    assert s.modality_gap(x, y) == pytest.approx(float((x.mean(0) - y.mean(0)).norm()))


def test_space_records_round_trip_and_geometry_labels():
    for space in (EuclideanSphere(), Lorentz(0.7), Euclidean(min_radius=0.2)):
        rebuilt = space_from_record(space.record())
        assert type(rebuilt) is type(space) and rebuilt.matches(space) and rebuilt.min_radius == space.min_radius
        g = space.geometry()
        assert set(g) == {"space", "root_distance"} and g["space"] == space.name and g["root_distance"]
    assert not Lorentz(0.7).matches(Lorentz(0.8)) and not Euclidean().matches(EuclideanSphere())
    with pytest.raises(ValueError, match="re-run"):
        space_from_record({})
    with pytest.raises(ValueError, match="re-run"):
        space_from_record({"name": "lorentz", "curv": None, "min_radius": 0.1})  # MERU needs its curvature
