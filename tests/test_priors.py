"""Priors: samples, projection, analytic moments and entropy against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

import agekit
from agekit.components import ComponentInputError


@pytest.mark.parametrize("dim", [2, 3, 16, 128])
def test_sphere_samples_lie_on_the_sphere_with_analytic_moments(dim: int) -> None:
    prior = agekit.create("prior", "sphere", dim=dim)
    generator = torch.Generator().manual_seed(0)
    samples = prior.sample(40_000, generator, dtype=torch.float64)
    assert samples.shape == (40_000, dim)
    torch.testing.assert_close(samples.norm(dim=1), torch.ones(40_000, dtype=torch.float64))
    # Standard error of a coordinate mean is sqrt(1/M / n) <= 0.0036; 5 standard errors.
    assert samples.mean(0).abs().max() < 5 * math.sqrt(1 / dim / 40_000)
    # The variance 1/M: relative standard error about sqrt(2/n) ~ 0.7%; allow 5%.
    np.testing.assert_allclose(samples.var(0).numpy(), prior.variance().numpy(), rtol=0.05)
    torch.testing.assert_close(prior.variance().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_sphere_entropy_is_log_surface_area() -> None:
    # |S^1| = 2 pi, |S^2| = 4 pi, |S^3| = 2 pi^2.
    for dim, area in [(2, 2 * math.pi), (3, 4 * math.pi), (4, 2 * math.pi**2)]:
        assert agekit.create("prior", "sphere", dim=dim).entropy() == pytest.approx(math.log(area))


def test_gaussian_prior_matches_scipy() -> None:
    prior = agekit.create("prior", "gaussian", dim=5)
    expected = scipy.stats.multivariate_normal(mean=np.zeros(5), cov=np.eye(5)).entropy()
    assert prior.entropy() == pytest.approx(expected, rel=1e-12)
    raw = torch.randn(7, 5)
    assert torch.equal(prior.project(raw), raw)
    samples = prior.sample(20_000, torch.Generator().manual_seed(1))
    assert samples.mean(0).abs().max() < 5 / math.sqrt(20_000)


def test_sphere_projection_and_support_check() -> None:
    prior = agekit.create("prior", "sphere", dim=8)
    raw = torch.randn(10, 2, 2, 2) * 7
    codes = prior.project(raw)
    assert codes.shape == (10, 8)
    torch.testing.assert_close(codes.norm(dim=1), torch.ones(10))
    prior.check_support(codes)
    with pytest.raises(ComponentInputError, match="not on the unit sphere"):
        prior.check_support(raw.flatten(1))


def test_sampling_is_reproducible_with_a_generator() -> None:
    prior = agekit.create("prior", "sphere", dim=16)
    a = prior.sample(4, torch.Generator().manual_seed(3))
    b = prior.sample(4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_bad_dimension() -> None:
    with pytest.raises(agekit.registry.ComponentOptionsError, match="dim"):
        agekit.create("prior", "sphere", dim=1)
