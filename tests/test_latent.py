"""agekit.evaluation.latent_paths.interpolate: great circles on the sphere, including between
antipodal codes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from agekit.evaluation.latent_paths import interpolate
from agekit.priors import GaussianPrior, SpherePrior

# Tolerances: float64 paths are a few cos/sin evaluations and one normalisation per row, so
# angles and coordinates are right to ~1e-15; 1e-12 leaves room. float32 ones to ~1e-7; 1e-5.
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def _unit(dim: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return SpherePrior(dim).sample(1, gen, dtype=dtype)[0]


def _angles(path: Tensor) -> Tensor:
    """Angles between successive rows, from chord lengths (well conditioned near 0 and pi)."""
    path = path.double()
    return 2 * torch.asin(((path[1:] - path[:-1]).norm(dim=1) / 2).clamp(max=1.0))


def _assert_great_circle(path: Tensor, start: Tensor, end: Tensor, total_angle: float) -> None:
    tol = TOL[path.dtype]
    steps = path.shape[0]
    ones = torch.ones(steps, dtype=path.dtype)
    torch.testing.assert_close(path.norm(dim=1), ones, atol=tol, rtol=0)
    torch.testing.assert_close(path[0], start, atol=tol, rtol=0)
    torch.testing.assert_close(path[-1], end, atol=tol, rtol=0)
    # constant angular speed, total_angle in all
    expected = torch.full((steps - 1,), total_angle / (steps - 1), dtype=torch.float64)
    torch.testing.assert_close(_angles(path), expected, atol=10 * tol, rtol=0)
    # one plane through the origin: a third singular value would mean leaving the great circle
    off_plane = torch.linalg.svdvals(path.double())[2:]
    assert off_plane.numel() == 0 or float(off_plane.max()) < 10 * tol * math.sqrt(steps), off_plane


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("dim", [2, 3, 16, 64])
def test_antipodal_ends_give_a_great_semicircle(dim: int, dtype: torch.dtype) -> None:
    # Before the fix slerp divided 0 by sin(pi) here and projected the zero vector: the midpoint
    # was 0 (norm 0), so this failed on the norm check.
    prior = SpherePrior(dim)
    start = _unit(dim, 1, dtype)
    path = interpolate(start, -start, 9, prior)
    _assert_great_circle(path, start, -start, math.pi)
    midpoint = path[4]
    assert abs(float((midpoint * start).sum())) < TOL[dtype]
    # the documented choice: the axis least aligned with start, made orthogonal to it
    j = int(start.abs().argmin())
    axis = -start[j] * start
    axis[j] += 1
    torch.testing.assert_close(midpoint, axis / axis.norm(), atol=TOL[dtype], rtol=0)


def test_antipodal_path_is_reproducible_and_reversible() -> None:
    prior = SpherePrior(8)
    start = _unit(8, 2)
    forward = interpolate(start, -start, 7, prior)
    assert torch.equal(forward, interpolate(start.clone(), -start, 7, prior))
    backward = interpolate(-start, start, 7, prior)
    torch.testing.assert_close(backward, forward.flip(0), atol=1e-12, rtol=0)


@pytest.mark.parametrize("offset", [1e-12, 1e-9, 1e-6, 1e-3])
def test_nearly_antipodal_ends_give_a_great_circle_through_both(offset: float) -> None:
    # end is -start turned by `offset` rad towards a random direction. Below sqrt(eps) = 1.5e-8
    # the plane is the documented axis' (rounding would pick it otherwise): the old code took the
    # rounding noise as the plane at every interior step, and jumped straight to it (failing the
    # equal-angle check); above, the plane is the one through start and end.
    dim = 16
    prior = SpherePrior(dim)
    start = _unit(dim, 3)
    other = _unit(dim, 4)
    other = other - (other @ start) * start
    other = other / other.norm()
    end = -math.cos(offset) * start + math.sin(offset) * other
    path = interpolate(start, end, 11, prior)
    total = math.pi - offset
    if offset > 1.5e-8:
        _assert_great_circle(path, start, end, total)
    else:  # within 2 * offset of the semicircle: check it with that slack
        torch.testing.assert_close(path.norm(dim=1), torch.ones(11, dtype=torch.float64))
        torch.testing.assert_close(path[-1], end, atol=1e-12, rtol=0)
        expected = torch.full((10,), total / 10, dtype=torch.float64)
        torch.testing.assert_close(_angles(path), expected, atol=4 * offset + 1e-12, rtol=0)


def _slerp_reference(start: Tensor, end: Tensor, steps: int) -> Tensor:
    """Textbook slerp in float64, for ends well away from 0 and pi."""
    a, b = start.double(), end.double()
    angle = torch.arccos((a @ b).clamp(-1, 1))
    t = torch.linspace(0, 1, steps, dtype=torch.float64)[:, None]
    return (torch.sin((1 - t) * angle) * a + torch.sin(t * angle) * b) / torch.sin(angle)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("seed", range(5))
def test_generic_ends_match_slerp(seed: int, dtype: torch.dtype) -> None:
    dim = 12
    start, end = _unit(dim, 10 + seed, dtype), _unit(dim, 20 + seed, dtype)
    path = interpolate(start, end, 8, SpherePrior(dim))
    assert path.dtype == dtype and path.shape == (8, dim)
    reference = _slerp_reference(start, end, 8)
    torch.testing.assert_close(path.double(), reference, atol=TOL[dtype], rtol=0)
    total = float(_angles(reference).sum())
    _assert_great_circle(path, start, end, total)


def test_equal_ends_give_a_constant_path() -> None:
    start = _unit(5, 7)
    path = interpolate(start, start.clone(), 4, SpherePrior(5))
    torch.testing.assert_close(path, start.expand(4, -1), atol=1e-15, rtol=0)


def test_ends_off_the_sphere_are_projected_first() -> None:
    start, end = _unit(6, 8), _unit(6, 9)
    path = interpolate(3.0 * start, 0.5 * end, 5, SpherePrior(6))
    torch.testing.assert_close(path, interpolate(start, end, 5, SpherePrior(6)))


def test_euclidean_path_is_the_straight_segment() -> None:
    start = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    path = interpolate(start, -start, 5, GaussianPrior(3))
    t = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None]
    torch.testing.assert_close(path, (1 - 2 * t) * start)
    assert float(path[2].norm()) == 0.0  # through the origin: no sphere here
