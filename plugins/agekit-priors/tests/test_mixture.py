"""agekit-priors: the Gaussian mixture prior, and what agekit's divergences make of it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from agekit_priors import GaussianMixturePrior

import agekit
from agekit.components import ComponentInputError
from agekit.registry import REGISTRY, ComponentOptionsError
from agekit.testing import check_divergence


def _log_density(prior: GaussianMixturePrior, z: torch.Tensor) -> torch.Tensor:
    sq = ((z[:, None, :] - prior.means[None]) ** 2).sum(dim=-1)
    return (
        torch.logsumexp(-sq / (2 * prior.std**2), dim=1)
        - math.log(prior.n_components)
        - 0.5 * prior.dim * math.log(2 * math.pi * prior.std**2)
    )


def test_registered_under_its_name() -> None:
    assert "gaussian-mixture" in agekit.available("prior")
    prior = agekit.create("prior", "gaussian-mixture", dim=8, n_components=5, radius=3.0)
    assert isinstance(prior, GaussianMixturePrior)
    assert (prior.dim, prior.n_components, prior.radius, prior.std) == (8, 5, 3.0, 0.5)
    (entry,) = [e for e in REGISTRY.check("prior") if e.name == "gaussian-mixture"]
    assert entry.status == "ok"
    assert entry.distribution == "agekit-priors"


@pytest.mark.parametrize(
    "options", [{"n_components": 0}, {"std": 0.0}, {"radius": -1.0}, {"entropy_samples": 10}]
)
def test_bad_options_are_rejected_by_name(options: dict) -> None:
    with pytest.raises(ComponentOptionsError, match=next(iter(options))):
        agekit.create("prior", "gaussian-mixture", dim=4, **options)


@pytest.mark.parametrize(("dim", "k"), [(1, 5), (2, 10), (16, 10), (4, 10)])
def test_means_are_deterministic_and_at_the_radius(dim: int, k: int) -> None:
    prior = GaussianMixturePrior(dim, n_components=k, radius=2.5)
    assert torch.equal(prior.means, GaussianMixturePrior(dim, n_components=k, radius=2.5).means)
    norms = prior.means.norm(dim=1)
    if dim == 1:
        assert float(norms.max()) == pytest.approx(2.5)
    else:
        assert torch.allclose(norms, torch.full((k,), 2.5, dtype=torch.float64))
    distances = torch.cdist(prior.means, prior.means) + torch.eye(k, dtype=torch.float64) * 1e9
    assert float(distances.min()) > 0.5  # distinct, separated modes
    if k <= dim:  # scaled simplex vertices
        assert float(distances.min()) == pytest.approx(2.5 * math.sqrt(2))


@pytest.mark.parametrize("dim", [2, 16])
def test_analytic_moments_match_monte_carlo(dim: int) -> None:
    prior = GaussianMixturePrior(dim)
    n = 200_000
    z = prior.sample(n, torch.Generator().manual_seed(0), dtype=torch.float64)
    var = prior.variance()
    se_mean = (var / n).sqrt()
    assert bool(((z.mean(dim=0) - prior.mean()).abs() < 5 * se_mean).all())
    # sd of a sample variance ~ var * sqrt((kurtosis - 1) / n); kurtosis < 3 here, so 2 var/sqrt(n)
    assert bool(((z.var(dim=0) - var).abs() < 5 * 2 * var / math.sqrt(n)).all())
    assert prior.mean().dtype == var.dtype == torch.float64


def test_sample_contract() -> None:
    prior = GaussianMixturePrior(3, n_components=4)
    a = prior.sample(50, torch.Generator().manual_seed(1))
    b = prior.sample(50, torch.Generator().manual_seed(1))
    assert a.shape == (50, 3) and a.dtype == torch.float32 and torch.equal(a, b)
    assert prior.sample(5, dtype=torch.float64).dtype == torch.float64
    assert torch.equal(prior.project(a), a)


@pytest.mark.parametrize("dim", [1, 2])
def test_entropy_matches_quadrature_within_its_standard_error(dim: int) -> None:
    prior = GaussianMixturePrior(dim)
    grid = torch.linspace(-7.0, 7.0, 1401 if dim == 2 else 100_001, dtype=torch.float64)
    if dim == 1:
        points, cell = grid[:, None], float(grid[1] - grid[0])
    else:
        points = torch.cartesian_prod(grid, grid)
        cell = float(grid[1] - grid[0]) ** 2
    log_p = _log_density(prior, points)
    assert float(log_p.exp().sum()) * cell == pytest.approx(1.0, abs=1e-6)
    truth = float(-(log_p.exp() * log_p).sum()) * cell
    se = prior.entropy_standard_error
    assert 0 < se < 2.5e-3
    assert prior.entropy() == pytest.approx(truth, abs=4 * se)
    assert prior.entropy() == prior.entropy()  # fixed seed: the same number every call


def test_entropy_bounds_and_exact_limits() -> None:
    prior = GaussianMixturePrior(8)
    component = 0.5 * 8 * math.log(2 * math.pi * math.e * 0.25)
    assert component < prior.entropy() < component + math.log(10)
    assert prior.entropy() < 0.5 * float(torch.log(2 * math.pi * math.e * prior.variance()).sum())
    # Far-apart modes: the entropy approaches H_component + log K.
    far = GaussianMixturePrior(8, radius=50.0)
    assert far.entropy() == pytest.approx(component + math.log(10), abs=1e-6)
    # One Gaussian: exact.
    for single in (GaussianMixturePrior(8, radius=0.0), GaussianMixturePrior(8, n_components=1)):
        assert single.entropy() == component and single.entropy_standard_error == 0.0


def _matched_gaussian(prior: GaussianMixturePrior, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, prior.dim, generator=gen, dtype=torch.float64)
    return prior.mean() + prior.variance().sqrt() * noise


def test_gaussian_kl_uses_moments_only_so_it_cannot_tell_a_matched_gaussian() -> None:
    prior = GaussianMixturePrior(4)
    kl = agekit.create("divergence", "gaussian-kl")
    gens = [torch.Generator().manual_seed(s) for s in range(16)]
    at_prior = np.mean([float(kl(prior.sample(256, g, dtype=torch.float64), prior)) for g in gens])
    matched = np.mean([float(kl(_matched_gaussian(prior, 256, s), prior)) for s in range(16)])
    narrow = float(kl(0.3 * torch.randn(256, 4, dtype=torch.float64), prior))
    assert at_prior < 0.02 and matched < 0.02  # both ~ the O(1/B) bias: moment matching
    assert narrow > 0.5


def test_gaussian_kl_passes_the_conformance_kit_on_the_mixture() -> None:
    check_divergence("gaussian-kl", [GaussianMixturePrior(2), GaussianMixturePrior(4)])


def test_kozachenko_leonenko_refuses_the_mixture_clearly() -> None:
    prior = GaussianMixturePrior(4)
    knn = agekit.create("divergence", "kozachenko-leonenko")
    codes = prior.sample(64, torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ComponentInputError, match="needs a Gaussian prior") as info:
        knn(codes, prior)
    assert "GaussianMixturePrior" in str(info.value)


def test_plugin_mmd_tells_the_mixture_from_its_matched_gaussian() -> None:
    agekit_mmd = pytest.importorskip("agekit_mmd", reason="install plugins/agekit-mmd")
    prior = GaussianMixturePrior(2, n_components=6)

    def means(mmd, make) -> float:
        return float(np.mean([float(mmd(make(s), prior)) for s in range(8)]))

    def draws(s: int) -> torch.Tensor:
        return prior.sample(128, torch.Generator().manual_seed(s), dtype=torch.float64)

    # The default IMQ scale C = 2 sum(var) = 9 follows the spread of the modes, not their width,
    # so it sees the difference only faintly (per-batch sd ~0.006 at B = 128); a scale near the
    # components' (bandwidth 1 ~ 4 std^2) sees it clearly.
    default, resolving = agekit_mmd.MMD(seed=0), agekit_mmd.MMD(seed=0, bandwidth=1.0)
    assert abs(means(default, draws)) < 0.01 and abs(means(resolving, draws)) < 0.01
    assert means(default, lambda s: _matched_gaussian(prior, 128, s)) > 0.005
    assert means(resolving, lambda s: _matched_gaussian(prior, 128, s)) > 0.02
    check_divergence(default, [prior], n_batches=8)


def test_plugin_sliced_tells_the_mixture_from_its_matched_gaussian() -> None:
    agekit_sliced = pytest.importorskip("agekit_sliced", reason="install plugins/agekit-sliced")
    prior = GaussianMixturePrior(2, n_components=6)
    sliced = agekit_sliced.SlicedWasserstein(seed=0)
    gens = [torch.Generator().manual_seed(s) for s in range(8)]
    at_prior = np.mean(
        [float(sliced(prior.sample(512, g, dtype=torch.float64), prior)) for g in gens]
    )
    # At B = 512 the finite-sample bias (~0.012 here) is well below the mismatch (~0.11).
    assert float(sliced(_matched_gaussian(prior, 512, 0), prior)) > 4 * at_prior
