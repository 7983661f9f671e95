"""The built-in divergences against independent float64 numpy / scipy / scikit-learn references."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import scipy.special as sps
import torch
from scipy.stats import vonmises_fisher
from sklearn.neighbors import NearestNeighbors

import agekit
from agekit.components import ComponentInputError, Prior, log_sphere_area
from agekit.divergences import GaussianKL, KozachenkoLeonenko, ReferenceCodeGaussianKL
from agekit.divergences.kozachenko_leonenko import (
    _column_group_size,
    _kth_smallest_column,
    kth_neighbour_sq_distances,
)
from agekit.priors import GaussianPrior, SpherePrior
from agekit.registry import ComponentOptionsError
from agekit.util.special import log_cap_fraction


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # These tests evaluate many small batches, where torch's intra-op threads cost more than the
    # work (several times slower on a loaded 2-core machine).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# independent references ------------------------------------------------------------------------
def ref_gaussian_kl(x: np.ndarray, prior: Prior) -> float:
    m, v = x.mean(0), x.var(0)  # numpy's var is the biased one
    pm, pv = prior.mean().numpy(), prior.variance().numpy()
    # KL(N(m, v) || N(pm, pv)) per dimension, averaged
    return float(np.mean(0.5 * (v / pv + (m - pm) ** 2 / pv - 1 - np.log(v / pv))))


def ref_knn(x: np.ndarray, k: int) -> np.ndarray:
    # k + 1 neighbours because scikit-learn returns each point as its own nearest neighbour.
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return dist[:, k]


def ref_kl_sphere(x: np.ndarray, k: int) -> float:
    n, dim = x.shape
    c = ref_knn(x, k)
    s = c**2 * (1 - c**2 / 4)
    i = sps.betainc((dim - 1) / 2, 0.5, s)
    f = np.where(c <= math.sqrt(2), i / 2, 1 - i / 2)
    return float(sps.digamma(k) - sps.digamma(n) - np.mean(np.log(f)))


def ref_kl_euclidean(x: np.ndarray, k: int) -> float:
    n, dim = x.shape
    eps = ref_knn(x, k)
    log_vd = dim / 2 * math.log(math.pi) - math.lgamma(dim / 2 + 1)
    h = sps.digamma(n) - sps.digamma(k) + log_vd + dim * np.mean(np.log(eps))
    return float(-h + np.mean((x**2).sum(1)) / 2 + dim / 2 * math.log(2 * math.pi))


# registry and options -----------------------------------------------------------------------------
def test_registry_creates_both() -> None:
    assert isinstance(agekit.create("divergence", "gaussian-kl"), GaussianKL)
    kl = agekit.create("divergence", "kozachenko-leonenko", k=5)
    assert isinstance(kl, KozachenkoLeonenko) and kl.k == 5 and kl.min_batch() == 6
    ref = agekit.create("divergence", "gaussian-kl", reference_code_variance=True)
    assert isinstance(ref, ReferenceCodeGaussianKL)
    assert ref.guarantees.nonnegative == "none" and ref.guarantees.zero_at_equality == "none"
    with pytest.raises(ComponentOptionsError):
        agekit.create("divergence", "kozachenko-leonenko", k=0)
    with pytest.raises(ComponentOptionsError):
        agekit.create("divergence", "gaussian-kl", eps=-1.0)


# GaussianKL ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("prior", [SpherePrior(8), GaussianPrior(5)], ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_kl_matches_closed_form(prior: Prior, dtype: torch.dtype) -> None:
    raw = 0.7 * torch.randn(200, prior.dim, generator=gen(0), dtype=torch.float64) + 0.3
    codes = prior.project(raw)
    expected = ref_gaussian_kl(codes.numpy(), prior)
    got = GaussianKL()(codes.to(dtype), prior)
    assert got.dtype == dtype and got.ndim == 0
    # float64: only eps = 1e-12 (relative) separates the two; float32 rounding of v' ~ 1e-7.
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    assert math.isclose(float(got), expected, rel_tol=tol, abs_tol=tol)


def test_reference_code_variance_reproduces_the_bug_exactly() -> None:
    prior = SpherePrior(16)
    codes = prior.sample(64, gen(1), dtype=torch.float64)
    x = codes.numpy()
    m, v = x.mean(0), x.var(0)
    bug = float(np.mean((v**2 + m**2) / 2 - np.log(v) - 0.5))  # src/losses.py, KLN01Loss 'qp'
    got = GaussianKL(reference_code_variance=True)(codes, prior)
    assert math.isclose(float(got), bug, rel_tol=1e-13)
    # ... and it is not the correct KL: at the prior it is about log M, not 0.
    assert float(got) > 2.0 > 0.05 > float(GaussianKL()(codes, prior))


def test_gaussian_kl_bias_at_prior_is_about_one_over_b() -> None:
    for prior in (SpherePrior(16), GaussianPrior(16)):
        values = [float(GaussianKL()(prior.sample(64, gen(s), dtype=torch.float64), prior))
                  for s in range(50)]  # fmt: skip
        mean = float(np.mean(values))
        # Bias ~ 1/B = 0.016 at B = 64 (E m'^2 = 1/B, E[v' - 1 - log v'] ~ 1/B); measured 0.0146
        # (sphere) and 0.0155 (Gaussian). It must be positive and within the declared tolerance.
        assert 0.005 < mean < GaussianKL.guarantees.tolerance, (prior, mean)


def test_gaussian_kl_collapsed_batch_is_finite() -> None:
    prior = SpherePrior(4)
    codes = prior.project(torch.ones(10, 4, dtype=torch.float64)).requires_grad_(True)
    value = GaussianKL()(codes, prior)
    value.backward()
    # v' = eps = 1e-12: the value is large (0.5 * -log 1e-12 ~ 14 nats/dim) but finite.
    assert torch.isfinite(value) and float(value.detach()) > 10
    assert codes.grad is not None and torch.isfinite(codes.grad).all()


# Kozachenko-Leonenko ------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_knn_distances_match_sklearn(chunk_size: int | None) -> None:
    x = torch.randn(300, 5, generator=gen(2), dtype=torch.float64)
    for k in (1, 3):
        got = kth_neighbour_sq_distances(x, k, chunk_size=chunk_size).sqrt().numpy()
        np.testing.assert_allclose(got, ref_knn(x.numpy(), k), rtol=1e-12)


def test_knn_search_survives_codes_bunched_far_from_the_origin() -> None:
    # A collapsing encoder: float32 codes within 1e-4 of one unit vector. Uncentred, the ranking
    # key ||y||^2 - 2 x.y is ~-1 with neighbour gaps ~1e-8, below float32's resolution (6e-8),
    # so the k-th neighbour would be picked at random; centred, the gaps are resolved. The
    # float64 reference sees the same float32 points.
    centre = torch.zeros(16)
    centre[0] = 1.0
    x = centre + 1e-4 * torch.randn(400, 16, generator=gen(11))
    got = kth_neighbour_sq_distances(x, 3).sqrt().double().numpy()
    expected = ref_knn(x.double().numpy(), 3)
    # float32 differences of ~1e-4 carry ~1e-3 relative rounding (eps 6e-8 on values ~1).
    np.testing.assert_allclose(got, expected, rtol=5e-3)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_grouped_search_of_long_rows_matches_sklearn(k: int) -> None:
    # B = 2304 = 48^2 is long enough for the grouped top-k (rows of 2,048+ columns), and blocks
    # of 455 rows leave a partial last block.
    x = torch.randn(2304, 4, generator=gen(21), dtype=torch.float64)
    got = kth_neighbour_sq_distances(x, k).sqrt().numpy()
    np.testing.assert_allclose(got, ref_knn(x.numpy(), k), rtol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_grouped_kth_smallest_keeps_topk_value_under_ties(k: int) -> None:
    # Small integers: every row is full of ties, inside and across groups, the worst case for
    # choosing groups by their minima. The value must be top-k's (the column may be another
    # holding the same value).
    block = torch.randint(0, 6, (64, 2048), generator=gen(22)).double()
    block[:, :40] = 9.0  # and a row start of large values, so the minima are not all in group 0
    group = _column_group_size(2048, k)
    assert group is not None and 2048 % group == 0
    got = block.gather(1, _kth_smallest_column(block, k, group).unsqueeze(1)).squeeze(1)
    expected = torch.topk(block, k, dim=1, largest=False).values[:, k - 1]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def _autograd_reference_kl(codes: torch.Tensor, prior: Prior, k: int) -> torch.Tensor:
    """The sphere or Euclidean estimate from plain differentiable torch operations."""
    n, dim = codes.shape
    sq = kth_neighbour_sq_distances(codes, k, floor=1e-12)
    digamma_gap = float(sps.digamma(k) - sps.digamma(n))
    if prior.support == "sphere":
        return digamma_gap - log_cap_fraction(sq.sqrt(), dim).mean()
    log_unit_ball = (dim / 2) * math.log(math.pi) - math.lgamma(dim / 2 + 1)
    entropy = -digamma_gap + log_unit_ball + (dim / 2) * torch.log(sq).mean()
    cross_entropy = 0.5 * (codes**2).sum(dim=1).mean() + 0.5 * dim * math.log(2 * math.pi)
    return cross_entropy - entropy


@pytest.mark.parametrize("prior", [SpherePrior(16), GaussianPrior(5)], ids=repr)
def test_kl_written_out_gradient_matches_autograd(prior: Prior) -> None:
    # The estimator's gradient is written out (one autograd node); the reference lets autograd
    # differentiate gather, sum, clamp, sqrt and log F itself. Same float64 arithmetic up to
    # summation order: 1e-10 relative.
    codes = prior.sample(200, gen(23), dtype=torch.float64)
    # A near-duplicate pair (squared distance ~1e-16, below the 1e-12 floor): the floor acts, and
    # that pair passes no gradient.
    codes[7] = prior.project((codes[3] + 1e-8).unsqueeze(0))[0]
    for k in (1, 3):
        leaf = codes.clone().requires_grad_(True)
        value = KozachenkoLeonenko(k=k, per_dimension=False)(leaf, prior)
        (grad,) = torch.autograd.grad(value, leaf)
        reference_leaf = codes.clone().requires_grad_(True)
        reference = _autograd_reference_kl(reference_leaf, prior, k)
        (reference_grad,) = torch.autograd.grad(reference, reference_leaf)
        torch.testing.assert_close(value, reference, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, reference_grad, rtol=1e-10, atol=1e-12)


def test_kl_euclidean_gradcheck() -> None:
    # Finite differences of 1e-6 do not change which neighbour each code has (random codes are
    # ~0.3 apart), so the estimate is smooth there and gradcheck applies.
    prior = GaussianPrior(3)
    codes = prior.sample(40, gen(24), dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: KozachenkoLeonenko(k=2)(c, prior), (codes,))


@pytest.mark.parametrize("dim", [3, 16, 64])
def test_kl_sphere_matches_reference(dim: int) -> None:
    prior = SpherePrior(dim)
    codes = prior.project(torch.randn(256, dim, generator=gen(3), dtype=torch.float64) + 0.4)
    for k in (1, 3):
        got = float(KozachenkoLeonenko(k=k, per_dimension=False)(codes, prior))
        assert math.isclose(got, ref_kl_sphere(codes.numpy(), k), rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("dim", [2, 5])
def test_kl_euclidean_matches_reference(dim: int) -> None:
    prior = GaussianPrior(dim)
    codes = 0.8 * torch.randn(256, dim, generator=gen(4), dtype=torch.float64) + 0.3
    got = float(KozachenkoLeonenko(k=3, per_dimension=False)(codes, prior))
    assert math.isclose(got, ref_kl_euclidean(codes.numpy(), 3), rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("dim", [3, 16, 64])
def test_kl_sphere_unbiased_at_prior_and_no_flat_bias(dim: int) -> None:
    prior, kl, n, batches = SpherePrior(dim), KozachenkoLeonenko(k=3, per_dimension=False), 256, 20
    values, flat = [], []
    for s in range(batches):
        codes = prior.sample(n, gen(100 + s), dtype=torch.float64)
        values.append(float(kl(codes, prior)))
        if dim != 64:
            continue
        # the flat approximation: ball volume in R^{M-1} with the chordal radius
        eps = ref_knn(codes.numpy(), 3)
        d = dim - 1
        log_v = d / 2 * math.log(math.pi) - math.lgamma(d / 2 + 1)
        h = sps.digamma(n) - sps.digamma(3) + log_v + d * np.mean(np.log(eps))
        flat.append(-h + log_sphere_area(dim))
    mean, se = np.mean(values), np.std(values) / math.sqrt(batches)
    # Unbiased in theory (F(eps) ~ Beta(k, N - k)); standard deviation ~0.05 per batch at N = 256,
    # so the mean of 20 batches has SE ~0.011: 0.05 is 4.5 SE.
    assert abs(mean) < 0.05, (dim, mean, se)
    if dim == 64:  # the notes measured -12.8 nats for the flat formula here
        assert np.mean(flat) < -10


def test_kl_per_dimension_is_total_over_m() -> None:
    """The default unit is nats per latent dimension, like gaussian-kl."""
    for prior in (SpherePrior(16), GaussianPrior(4)):
        codes = prior.sample(128, gen(7), dtype=torch.float64)
        total = KozachenkoLeonenko(k=3, per_dimension=False)(codes, prior)
        torch.testing.assert_close(KozachenkoLeonenko(k=3)(codes, prior), total / prior.dim)


def test_kl_euclidean_bias_at_prior_small_dims() -> None:
    kl = KozachenkoLeonenko(k=3, per_dimension=False)
    for dim, expected in ((2, 0.034), (4, 0.086)):  # measured means, 100 batches of B = 256
        prior = GaussianPrior(dim)
        values = [float(kl(prior.sample(256, gen(200 + s), dtype=torch.float64), prior))
                  for s in range(20)]  # fmt: skip
        # The Euclidean estimator's finite-N bias grows with M; at M <= 4 it stays inside the
        # declared tolerance (0.15), with the batch mean's SE ~0.011 on top.
        assert abs(np.mean(values)) < KozachenkoLeonenko.guarantees.tolerance, (dim, expected)


def test_kl_vmf_closed_form() -> None:
    dim, kappa = 3, 4.0
    prior, kl = SpherePrior(dim), KozachenkoLeonenko(k=3, per_dimension=False)
    dist = vonmises_fisher(np.array([0.0, 0.0, 1.0]), kappa)
    truth = -float(dist.entropy()) + log_sphere_area(dim)
    values = []
    for s in range(20):
        x = torch.as_tensor(dist.rvs(512, random_state=np.random.default_rng(s)))
        values.append(float(kl(prior.project(x), prior)))
    # KL ~ 1.07 nats; kNN bias for this mild concentration at M = 3 is a few 0.01; SE ~0.01.
    assert abs(np.mean(values) - truth) < 0.06, (np.mean(values), truth)


def test_kl_large_batch_runs_with_gradients() -> None:
    """B = 8192, M = 128 fits in memory (chunked); its speed is benchmarks/divergences.py's job."""
    prior = SpherePrior(128)
    codes = prior.sample(8192, gen(5)).requires_grad_(True)
    value = KozachenkoLeonenko(k=3)(codes, prior)
    value.backward()
    assert codes.grad is not None and torch.isfinite(codes.grad).all()
    # Unbiased at the prior, SD ~0.05 * sqrt(256 / 8192) ~ 0.01 here.
    assert abs(float(value.detach())) < 0.05


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("prior", [SpherePrior(8), GaussianPrior(3)], ids=repr)
def test_kl_dtypes_and_duplicates(dtype: torch.dtype, prior: Prior) -> None:
    codes = prior.sample(64, gen(6), dtype=dtype)
    codes[1] = codes[0]
    codes.requires_grad_(True)
    value = KozachenkoLeonenko(k=1)(codes, prior)
    assert value.dtype == dtype and torch.isfinite(value)
    value.backward()
    assert codes.grad is not None and torch.isfinite(codes.grad).all()


# bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("divergence", [GaussianKL(), KozachenkoLeonenko(k=3)], ids=repr)
def test_bad_inputs(divergence: GaussianKL | KozachenkoLeonenko) -> None:
    prior = SpherePrior(4)
    good = prior.sample(16, gen(7), dtype=torch.float64)
    small = good[: divergence.min_batch() - 1]
    with pytest.raises(ComponentInputError, match="too small"):
        divergence(small, prior)
    with pytest.raises(ComponentInputError, match="shape"):
        divergence(good[0], prior)
    with pytest.raises(ComponentInputError, match="dimensions"):
        divergence(good[:, :3], prior)
    nan = good.clone()
    nan[2, 1] = math.nan
    with pytest.raises(ComponentInputError, match="NaN"):
        divergence(nan, prior)
    with pytest.raises(ComponentInputError, match="sphere"):
        divergence(good * 2, prior)


def test_kl_batch_of_k_is_an_error() -> None:
    prior = GaussianPrior(2)
    with pytest.raises(ComponentInputError, match="at least 4"):
        KozachenkoLeonenko(k=3)(prior.sample(3, gen(8)), prior)


class ScaledSphere(SpherePrior):
    """Not uniform: claims less entropy than the sphere's area."""

    def entropy(self) -> float:
        return log_sphere_area(self.dim) - 1.0


class Laplace(GaussianPrior):
    """Unit-variance Laplace coordinates: not Gaussian, so its entropy is lower."""

    def entropy(self) -> float:
        return self.dim * (1.0 + math.log(2 / math.sqrt(2)))


def test_kl_refuses_priors_it_cannot_estimate_against() -> None:
    kl = KozachenkoLeonenko()
    with pytest.raises(ComponentInputError, match="not uniform"):
        kl(ScaledSphere(4).sample(32, gen(9)), ScaledSphere(4))
    with pytest.raises(ComponentInputError, match="Gaussian prior"):
        kl(Laplace(4).sample(32, gen(9)), Laplace(4))


def test_kl_refuses_second_order_gradients() -> None:
    # The written-out gradient carries no graph: with create_graph=True it would enter a gradient
    # penalty as a constant, so the second derivative would be silently wrong.
    prior = SpherePrior(4)
    codes = prior.sample(32, gen(25), dtype=torch.float64).requires_grad_(True)
    value = KozachenkoLeonenko(k=3)(codes, prior)
    with pytest.raises(RuntimeError, match="cannot be differentiated again"):
        torch.autograd.grad(value, codes, create_graph=True)
