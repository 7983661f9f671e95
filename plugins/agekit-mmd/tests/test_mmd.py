"""agekit-mmd: conformance, registration and known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from agekit_mmd import MMD

import agekit
from agekit.components import ComponentInputError
from agekit.priors import GaussianPrior, SpherePrior
from agekit.registry import REGISTRY, ComponentOptionsError
from agekit.testing import conformance_test

# The kit needs the same codes to give the same value, so the prior draws are seeded.
test_conformance_imq = conformance_test(MMD(seed=0))
test_conformance_rbf = conformance_test(MMD(kernel="rbf", seed=1))


def test_conformance_by_registered_name_with_fewer_prior_samples() -> None:
    from agekit.testing import check_divergence

    made = agekit.create("divergence", "mmd", n_prior_samples=64, seed=2)
    check_divergence(made, [SpherePrior(8), GaussianPrior(3)], n_batches=8)


def test_registered_under_its_name() -> None:
    assert "mmd" in agekit.available("divergence")
    made = agekit.create("divergence", "mmd", kernel="rbf", bandwidth=2.0, seed=3)
    assert isinstance(made, MMD)
    assert (made.kernel, made.bandwidth, made.seed) == ("rbf", 2.0, 3)
    (entry,) = [e for e in REGISTRY.check("divergence") if e.name == "mmd"]
    assert entry.status == "ok"
    assert entry.distribution == "agekit-mmd"


@pytest.mark.parametrize(
    "options",
    [{"kernel": "gauss"}, {"bandwidth": -1.0}, {"n_prior_samples": 1}, {"sigma": 1.0}],
)
def test_bad_options_are_rejected_by_name(options: dict) -> None:
    with pytest.raises(ComponentOptionsError, match=next(iter(options))):
        agekit.create("divergence", "mmd", **options)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("prior", [SpherePrior(5), GaussianPrior(3)], ids=repr)
def test_identical_distributions_average_to_zero(kernel: str, prior) -> None:
    torch.manual_seed(0)
    div = MMD(kernel=kernel)  # fresh prior draws each call: the estimator is unbiased
    gen = torch.Generator().manual_seed(10)
    values = np.array(
        [float(div(prior.sample(64, gen, dtype=torch.float64), prior)) for _ in range(300)]
    )
    se = values.std(ddof=1) / math.sqrt(len(values))
    assert abs(values.mean()) < 4 * se + 1e-4
    assert values.min() < 0 < values.max()  # a U-statistic: single batches straddle 0


def _shifted(prior: GaussianPrior, shift: float, seed: int) -> torch.Tensor:
    codes = prior.sample(128, torch.Generator().manual_seed(seed), dtype=torch.float64)
    codes[:, 0] += shift
    return codes


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_grows_with_the_shift(kernel: str) -> None:
    prior = GaussianPrior(4)
    div = MMD(kernel=kernel, seed=0)
    means = [
        np.mean([float(div(_shifted(prior, shift, s), prior)) for s in range(8)])
        for shift in (0.0, 0.25, 0.5, 1.0, 2.0)
    ]
    assert abs(means[0]) < 0.01
    assert all(b > a for a, b in itertools.pairwise(means)), means
    assert means[1] > 0.0


def test_rbf_matches_the_gaussian_closed_form() -> None:
    # For P = N(0, I), Q = N(delta, I) in R^M and k = exp(-|x-y|^2 / h):
    # E k(x, y) = (1 + 4/h)^(-M/2) exp(-|x_mean - y_mean|^2 / (h + 4)), hence
    # MMD^2 = 2 (1 + 4/h)^(-M/2) (1 - exp(-|delta|^2 / (h + 4))).
    dim, h = 3, 6.0
    prior = GaussianPrior(dim)
    torch.manual_seed(1)
    div = MMD(kernel="rbf", bandwidth=h, n_prior_samples=256)
    for shift in (0.5, 1.5):
        truth = 2 * (1 + 4 / h) ** (-dim / 2) * (1 - math.exp(-(shift**2) / (h + 4)))
        values = [float(div(_shifted(prior, shift, 100 + s), prior)) for s in range(40)]
        se = np.std(values, ddof=1) / math.sqrt(len(values))
        assert np.mean(values) == pytest.approx(truth, abs=4 * se + 1e-3)


def test_seed_makes_it_deterministic_and_none_follows_the_global_rng() -> None:
    prior = SpherePrior(6)
    codes = prior.sample(32, torch.Generator().manual_seed(0))
    seeded = MMD(seed=7)
    assert float(seeded(codes, prior)) == float(seeded(codes, prior))
    free = MMD()
    torch.manual_seed(3)
    first = float(free(codes, prior))
    second = float(free(codes, prior))
    torch.manual_seed(3)
    assert first != second
    assert float(free(codes, prior)) == first


def test_float32_gradient_descent_pulls_codes_to_the_prior() -> None:
    prior = GaussianPrior(2)
    codes = (_shifted(prior, 3.0, 0) * 0.3).float().requires_grad_(True)
    div = MMD(seed=0)
    optimizer = torch.optim.SGD([codes], lr=20.0)
    start = float(div(codes, prior).detach())
    for _ in range(50):
        optimizer.zero_grad()
        value = div(codes, prior)
        assert value.dtype == torch.float32
        value.backward()
        optimizer.step()
    assert float(div(codes, prior).detach()) < 0.1 * start
    assert abs(float(codes.detach()[:, 0].mean())) < 0.5


def test_refuses_codes_off_the_sphere() -> None:
    prior = SpherePrior(4)
    with pytest.raises(ComponentInputError, match="unit sphere"):
        MMD(seed=0)(prior.sample(16) * 2, prior)


def test_works_with_the_gaussian_mixture_prior() -> None:
    agekit_priors = pytest.importorskip("agekit_priors", reason="install plugins/agekit-priors")
    mixture = agekit_priors.GaussianMixturePrior(dim=2, n_components=4)

    def matched(s: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(s)
        noise = torch.randn(128, 2, generator=gen, dtype=torch.float64)
        return mixture.mean() + mixture.variance().sqrt() * noise

    def at_prior(s: int) -> torch.Tensor:
        return mixture.sample(128, torch.Generator().manual_seed(s), dtype=torch.float64)

    # A Gaussian with the mixture's moments fools moment matching, not MMD, given a kernel scale
    # near the components' width (the default C = 2 sum(var) follows the spread of the modes).
    div = MMD(seed=0, bandwidth=1.0)
    assert abs(np.mean([float(div(at_prior(s), mixture)) for s in range(8)])) < 0.01
    assert np.mean([float(div(matched(s), mixture)) for s in range(8)]) > 0.02
