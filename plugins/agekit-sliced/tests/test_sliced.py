"""agekit-sliced: conformance, registration and known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from agekit_sliced import SlicedWasserstein

import agekit
from agekit.components import ComponentInputError
from agekit.priors import GaussianPrior, SpherePrior
from agekit.registry import REGISTRY, ComponentOptionsError
from agekit.testing import check_divergence, conformance_test

# The kit needs the same codes to give the same value, so directions and prior draws are seeded.
test_conformance_p2 = conformance_test(SlicedWasserstein(seed=0))


def test_conformance_p1_by_registered_name() -> None:
    made = agekit.create("divergence", "sliced-wasserstein", p=1, n_projections=64, seed=1)
    assert made.guarantees.tolerance == 0.25  # p-specific promise, read by the kit
    check_divergence(made, [SpherePrior(8), GaussianPrior(3)], n_batches=8)


def test_registered_under_its_name() -> None:
    assert "sliced-wasserstein" in agekit.available("divergence")
    made = agekit.create("divergence", "sliced-wasserstein", n_projections=16, p=3, seed=4)
    assert isinstance(made, SlicedWasserstein)
    assert (made.n_projections, made.p, made.seed) == (16, 3, 4)
    (entry,) = [e for e in REGISTRY.check("divergence") if e.name == "sliced-wasserstein"]
    assert entry.status == "ok"
    assert entry.distribution == "agekit-sliced"


@pytest.mark.parametrize("options", [{"n_projections": 0}, {"p": 0}, {"q": 2}])
def test_bad_options_are_rejected_by_name(options: dict) -> None:
    with pytest.raises(ComponentOptionsError, match=next(iter(options))):
        agekit.create("divergence", "sliced-wasserstein", **options)


def test_unmeasured_p_declares_no_zero_at_equality() -> None:
    assert SlicedWasserstein(p=6).guarantees.zero_at_equality == "none"
    assert SlicedWasserstein(p=6).guarantees.nonnegative == "exact"


def _gauss(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_shift_of_its_own_prior_draws_is_exactly_the_mean_squared_projected_shift() -> None:
    # With a seed the generator draws the directions, then the prior samples Y (documented order).
    # Codes Y + d project to Y.theta + d.theta: sorting keeps the pairing, so every pair differs
    # by exactly d.theta and SW_2^2 = mean_theta (d.theta)^2, whose expectation is |d|^2 / M.
    dim, n, n_proj = 4, 256, 4000
    prior = GaussianPrior(dim)
    generator = torch.Generator().manual_seed(3)
    theta = torch.randn(dim, n_proj, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    draws = prior.sample(n, generator, dtype=torch.float64)
    shift = torch.tensor([1.5, -1.0, 0.5, 0.0], dtype=torch.float64)
    value = float(SlicedWasserstein(n_projections=n_proj, seed=3)(draws + shift, prior))
    assert value == pytest.approx(float(((shift @ theta) ** 2).mean()), rel=1e-10)
    # (d.theta)^2 / |d|^2 ~ Beta(1/2, 3/2): relative sd 1, so 4000 directions give +-1.6% (1 sd).
    assert value == pytest.approx(float(shift @ shift) / dim, rel=0.07)


def test_shift_matches_the_closed_form_on_average() -> None:
    # Codes = N(0, I) + d against fresh prior samples: E[SW_2^2] = |d|^2 / M + bias_0, bias_0 the
    # value at d = 0 on the same codes, directions and draws (common random numbers).
    dim = 4
    prior = GaussianPrior(dim)
    shift = torch.tensor([1.5, -1.0, 0.5, 0.0], dtype=torch.float64)
    truth = float(shift @ shift) / dim
    excess = []
    for s in range(16):
        div = SlicedWasserstein(n_projections=1000, seed=100 + s)
        codes = _gauss(256, dim, s)
        excess.append(float(div(codes + shift, prior)) - float(div(codes, prior)))
    se = np.std(excess, ddof=1) / np.sqrt(len(excess))
    assert np.mean(excess) == pytest.approx(truth, abs=4 * se + 0.01 * truth)


def test_grows_with_the_shift_and_is_small_at_the_prior() -> None:
    prior = SpherePrior(8)
    div = SlicedWasserstein(seed=0)
    values = []
    for shift in (0.0, 0.5, 1.0, 2.0):
        raw = _gauss(256, 8, 1)
        raw[:, 0] += shift
        values.append(float(div(prior.project(raw), prior)))
    assert values[0] < 0.01
    assert all(b > a for a, b in itertools.pairwise(values)), values


def test_seed_makes_it_deterministic_and_none_follows_the_global_rng() -> None:
    prior = GaussianPrior(3)
    codes = _gauss(32, 3, 0)
    seeded = SlicedWasserstein(seed=5)
    assert float(seeded(codes, prior)) == float(seeded(codes, prior))
    free = SlicedWasserstein()
    torch.manual_seed(2)
    first = float(free(codes, prior))
    assert float(free(codes, prior)) != first
    torch.manual_seed(2)
    assert float(free(codes, prior)) == first


def test_float32_gradient_descent_pulls_codes_to_the_prior() -> None:
    prior = GaussianPrior(2)
    codes = (0.3 * _gauss(128, 2, 0) + 3.0).float().requires_grad_(True)
    div = SlicedWasserstein(n_projections=32, seed=0)
    optimizer = torch.optim.SGD([codes], lr=50.0)
    start = float(div(codes, prior).detach())
    for _ in range(50):
        optimizer.zero_grad()
        value = div(codes, prior)
        assert value.dtype == torch.float32
        value.backward()
        optimizer.step()
    assert float(div(codes, prior).detach()) < 0.05 * start
    assert float(codes.detach().mean(dim=0).abs().max()) < 0.3


def test_refuses_codes_off_the_sphere() -> None:
    prior = SpherePrior(4)
    with pytest.raises(ComponentInputError, match="unit sphere"):
        SlicedWasserstein(seed=0)(prior.sample(16) * 2, prior)


def test_works_with_the_gaussian_mixture_prior() -> None:
    agekit_priors = pytest.importorskip("agekit_priors", reason="install plugins/agekit-priors")
    mixture = agekit_priors.GaussianMixturePrior(dim=2, n_components=4)
    matched = mixture.mean() + mixture.variance().sqrt() * _gauss(512, 2, 0)
    div = SlicedWasserstein(seed=0)
    gens = [torch.Generator().manual_seed(s) for s in range(8)]
    at_prior = [float(div(mixture.sample(512, g, dtype=torch.float64), mixture)) for g in gens]
    # A Gaussian with the mixture's moments fools moment matching, not the sliced distance; at
    # B = 512 the finite-sample bias at the prior is well below that mismatch.
    assert np.mean(at_prior) < 0.05
    assert float(div(matched, mixture)) > 4 * np.mean(at_prior)
