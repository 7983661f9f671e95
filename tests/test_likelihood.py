"""The AIS log-likelihood metric against a model whose likelihood is known in closed form.

Probabilistic PCA (g(z) = W z + b, z ~ N(0, I), x = g(z) + sigma * noise) has
x ~ N(b, W W^T + sigma^2 I), so log p(x) is exact (scipy, float64). Sizes are small enough for the
whole module to run in a few seconds on one CPU core.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from metric_doubles import TensorData, toy_context
from scipy.stats import multivariate_normal
from torch import Tensor, nn

from agekit.components import Generator, Prior
from agekit.metrics.ais import AISConfig, ais_log_likelihood, annealing_schedule, iwae_bound
from agekit.metrics.likelihood import LogLikelihood, bdmc_gap, choose_sigma
from agekit.priors.standard import GaussianPrior, SpherePrior
from agekit.registry import REGISTRY, create


class PPCA:
    """A random linear-Gaussian model and data drawn from it."""

    def __init__(self, latent: int, dim: int, sigma: float, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.latent, self.sigma = latent, sigma
        self.W = torch.randn(dim, latent, generator=g, dtype=torch.float64)
        self.b = torch.randn(dim, generator=g, dtype=torch.float64)
        z = torch.randn(n, latent, generator=g, dtype=torch.float64)
        self.x = self.decode(z) + sigma * torch.randn(n, dim, generator=g, dtype=torch.float64)

    def decode(self, u: Tensor) -> Tensor:
        return u.double() @ self.W.T + self.b

    def exact(self, x: Tensor, sigma: float | None = None) -> np.ndarray:
        s = self.sigma if sigma is None else sigma
        cov = (self.W @ self.W.T).numpy() + s**2 * np.eye(self.W.shape[0])
        return np.asarray(multivariate_normal(self.b.numpy(), cov).logpdf(x.numpy()))

    def estimate(self, steps: int, chains: int = 8, seed: int = 1) -> np.ndarray:
        config = AISConfig(chains=chains, steps=steps)
        rng = torch.Generator().manual_seed(seed)
        result = ais_log_likelihood(self.decode, self.x, self.sigma, self.latent, config, rng)
        return result.log_likelihood.numpy()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # AIS here runs thousands of tiny decoder calls, where torch's intra-op threads cost far more
    # than the work (tens of times slower on a loaded 2-core machine).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _stderr(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values)))


def test_schedules_run_from_zero_to_one() -> None:
    for kind in ("sigmoid", "linear"):
        betas = annealing_schedule(50, kind)
        assert betas.shape == (51,) and betas[0] == 0.0 and betas[-1] == 1.0
        assert bool((betas.diff() > 0).all())


def test_ais_agrees_with_the_closed_form_ppca_likelihood() -> None:
    model = PPCA(latent=3, dim=12, sigma=0.5, n=40)
    truth, estimate = model.exact(model.x), model.estimate(steps=200)
    # The reported standard error is over images. Tolerance 0.5 nats: the AIS bias left at 200
    # steps and 8 chains measured 0.1-0.2 nats on this model over three chain seeds.
    assert abs(estimate.mean() - truth.mean()) <= 3 * _stderr(estimate) + 0.5
    # Paired per image, a much sharper check: a lower bound in expectation (above the truth only
    # by noise), and below it by no more than the bias tolerance.
    diff = estimate - truth
    assert -0.5 <= diff.mean() <= 3 * _stderr(diff)


def test_more_intermediate_distributions_do_not_lower_the_estimate() -> None:
    # On this sharper model 10 steps fall ~10 nats short and 200 steps ~0.4, a margin of about 8
    # standard errors of the paired difference (three chain seeds), so no tolerance is needed.
    model = PPCA(latent=4, dim=16, sigma=0.3, n=40)
    short, long = model.estimate(steps=10), model.estimate(steps=200)
    assert long.mean() >= short.mean()
    assert long.mean() - model.exact(model.x).mean() > short.mean() - model.exact(model.x).mean()


def test_bdmc_sandwiches_the_exact_likelihood_and_the_gap_shrinks() -> None:
    model = PPCA(latent=3, dim=12, sigma=0.5, n=1)
    gaps = []
    for steps in (10, 200):
        rng = torch.Generator().manual_seed(5)
        config = AISConfig(chains=4, steps=steps)
        result = bdmc_gap(model.decode, model.latent, 20, model.sigma, config, rng)
        truth = model.exact(result.x)
        lower, upper = result.forward.numpy() - truth, result.reverse.numpy() - truth
        # Bounds in expectation: the means over 20 points may cross the truth by noise only.
        assert lower.mean() <= 3 * _stderr(lower)
        assert upper.mean() >= -3 * _stderr(upper)
        gaps.append(result.gap)
    assert gaps[1] < gaps[0]


def test_choose_sigma_picks_the_generating_noise_level() -> None:
    model = PPCA(latent=3, dim=12, sigma=0.5, n=16)
    grid = (0.25, 0.5, 1.0)
    exact = [model.exact(model.x, s).mean() for s in grid]
    assert grid[int(np.argmax(exact))] == 0.5
    rng = torch.Generator().manual_seed(3)
    choice = choose_sigma(model.decode, model.x, 3, grid, AISConfig(chains=4, steps=100), rng)
    assert choice.sigma == 0.5 and set(choice.estimates) == set(grid)


class LinearGenerator(Generator):
    def __init__(self, W: Tensor, b: Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(W)
            self.linear.bias.copy_(b)

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.linear(z)


def test_the_metric_scores_vector_data_in_its_own_units() -> None:
    model = PPCA(latent=3, dim=12, sigma=0.5, n=20)
    data = TensorData((model.x.float(), torch.zeros(20)), (model.x.float(), torch.zeros(20)))
    data.kind = "vector"  # type: ignore[misc]  # an instance override: the doubles are images
    prior = GaussianPrior(3)
    generator = LinearGenerator(model.W.float(), model.b.float())
    context = toy_context(data, None, generator, prior)  # type: ignore[arg-type]
    metric = LogLikelihood(n_images=20, chains=8, steps=200, sigma=0.5)
    result = metric(context)
    truth = model.exact(model.x).mean()
    assert abs(result.values["log_likelihood_nats"] - truth) <= 0.5
    assert result.protocol["pixel_scale"] == "native units" and result.protocol["sigma"] == 0.5


class TinyImageGenerator(Generator):
    def __init__(self, latent: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(latent, 16), nn.Tanh())

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.net(z).reshape(-1, 1, 4, 4)


def _images() -> TensorData:
    g = torch.Generator().manual_seed(0)
    train, test = (torch.rand(n, 1, 4, 4, generator=g) * 2 - 1 for n in (16, 8))
    return TensorData((train, torch.zeros(16)), (test, torch.zeros(8)))


def test_the_sphere_prior_path_gives_a_finite_reproducible_estimate() -> None:
    assert "log-likelihood" in REGISTRY.available("metric")
    metric = create(
        "metric",
        "log-likelihood",
        n_images=6,
        chains=4,
        steps=20,
        sigma_grid=[0.2, 0.5],
        sigma_images=4,
        bdmc_images=3,
    )
    context = toy_context(_images(), None, TinyImageGenerator(3), SpherePrior(3))  # type: ignore[arg-type]
    global_state = torch.random.get_rng_state()
    first, second = metric(context), metric(context)
    assert torch.equal(global_state, torch.random.get_rng_state())
    assert first.values == second.values
    values = first.values
    for key in ("log_likelihood_nats", "log_likelihood_stderr", "bdmc_gap_nats"):
        assert math.isfinite(values[key])
    assert values["sigma"] in (0.2, 0.5) and set(first.details["sigma_grid_nats"]) == {"0.2", "0.5"}
    assert first.protocol["prior_path"].startswith("u ~ N(0, I), z = u / |u|")
    assert first.protocol["pixel_scale"].startswith("[0, 1] pixels")


class UniformCube(Prior):
    """A prior that is no function of a standard normal the metric knows."""

    support = "euclidean"

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        return torch.rand(n, self.dim, generator=generator, device=device, dtype=dtype)

    def project(self, raw: Tensor) -> Tensor:
        return raw.flatten(1)

    def mean(self) -> Tensor:
        return torch.full((self.dim,), 0.5, dtype=torch.float64)

    def variance(self) -> Tensor:
        return torch.full((self.dim,), 1 / 12, dtype=torch.float64)

    def entropy(self) -> float:
        return 0.0


def test_priors_without_a_standard_normal_path_are_refused() -> None:
    context = toy_context(_images(), None, TinyImageGenerator(3), UniformCube(3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gaussian and sphere priors"):
        LogLikelihood(n_images=2, chains=2, steps=2, sigma=0.5)(context)


def test_a_crop_scores_the_central_pixels_only() -> None:
    # A linear-Gaussian generator of 4x4 images; with crop = 2 the observation model covers the
    # central 2x2 pixels, whose marginal is the PPCA of those rows of W (closed form).
    model = PPCA(latent=2, dim=16, sigma=0.2, n=12, seed=3)
    images = model.x.float().reshape(-1, 1, 4, 4)
    data = TensorData((images, torch.zeros(12)), (images, torch.zeros(12)))
    generator = LinearGenerator(model.W.float(), model.b.float())

    class ImageShaped(Generator):
        def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
            return generator(z).reshape(-1, 1, 4, 4)

    context = toy_context(data, None, ImageShaped(), GaussianPrior(2))  # type: ignore[arg-type]
    # the metric scores [0, 1] pixels, (x + 1) / 2: sigma 0.1 there is the model's 0.2
    metric = LogLikelihood(n_images=12, chains=8, steps=200, sigma=0.1, dequantize=False, crop=2)
    result = metric(context)
    central = torch.tensor([5, 6, 9, 10])
    W, b = model.W[central] / 2, (model.b[central] + 1) / 2
    cov = (W @ W.T).numpy() + 0.1**2 * np.eye(4)
    x = (model.x[:, central] + 1) / 2
    truth = float(multivariate_normal(b.numpy(), cov).logpdf(x.numpy()).mean())
    # 200 AIS steps on a 2-D latent: the PPCA test above holds the estimate within 0.5 nats
    assert abs(result.values["log_likelihood_nats"] - truth) <= 0.5
    assert result.protocol["pixels"] == "central 2x2 crop"
    with pytest.raises(ValueError, match="crop 5 is larger than the 4x4 images"):
        LogLikelihood(n_images=2, chains=2, steps=2, sigma=0.1, crop=5)(context)


def test_the_iwae_bound_is_exact_with_the_true_posterior_and_below_ais_otherwise() -> None:
    # One latent dimension: the PPCA posterior is a 1-d Gaussian, which a diagonal proposal holds
    # exactly; every importance weight then equals p(x), so the bound is log p(x) itself.
    model = PPCA(latent=1, dim=5, sigma=0.3, n=16, seed=4)
    w = model.W[:, 0]
    precision = 1.0 + float(w @ w) / model.sigma**2
    mean = ((model.x - model.b) @ w / model.sigma**2 / precision).unsqueeze(1)
    log_var = torch.full_like(mean, -math.log(precision))
    rng = torch.Generator().manual_seed(0)
    exact = model.exact(model.x)
    true_q = iwae_bound(model.decode, model.x, model.sigma, mean, log_var, 5, rng).numpy()
    # float64 throughout: the weights are equal up to rounding
    assert np.allclose(true_q, exact, atol=1e-9)
    # a wrong proposal (shifted, too narrow) gives a loose bound that more samples tighten
    shifted, narrow = mean + 0.5, log_var - 1.0
    one = iwae_bound(model.decode, model.x, model.sigma, shifted, narrow, 1, rng).numpy()
    many = iwae_bound(model.decode, model.x, model.sigma, shifted, narrow, 200, rng).numpy()
    assert one.mean() < many.mean() <= exact.mean() + 3 * _stderr(many - exact)
    # AIS, a different estimator of the same quantity, is at least as tight as the loose bound
    ais = model.estimate(steps=200)
    assert ais.mean() >= one.mean() and abs(ais.mean() - exact.mean()) <= 0.5


def test_ais_lies_above_a_trained_vaes_iwae_bound(tmp_path: Path) -> None:
    from agekit.config import parse_config
    from agekit.metrics.likelihood import model_decoder
    from agekit.model import load_trained
    from agekit.training.trainer import Trainer

    config = parse_config(
        {
            "name": "vae",
            "out_dir": str(tmp_path),
            "data": {"name": "ring8", "batch_size": 128},
            "prior": {"name": "gaussian", "dim": 2},
            "backbone": {"name": "mlp", "options": {"hidden": 32, "depth": 2}},
            # a light KL weight keeps the posterior informative (at beta = 1 it collapses onto
            # the prior on ring8, where AIS and the bound then agree trivially)
            "game": {"name": "vae", "options": {"beta": 0.05}},
            "optim": {"lr": 3e-3},
            "train": {"steps": 300, "log_every": 100, "checkpoint_every": 300, "image_every": 1000},
        }
    )
    Trainer(config, progress=False).fit()
    model, _ = load_trained(tmp_path / "vae", "cpu")
    model.pair.encoder.eval()
    model.pair.generator.eval()
    x = model.data.tensors("test")[0][:24].double()
    decode = model_decoder(model.pair.generator, model.prior, unit_pixels=False)
    sigma = 0.1
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        mean, log_var = model.pair.encoder.posterior(x.float())  # type: ignore[operator]
    bound = iwae_bound(decode, x, sigma, mean, log_var, 64, rng)
    ais = ais_log_likelihood(decode, x, sigma, 2, AISConfig(chains=16, steps=300), rng)
    difference = (ais.log_likelihood - bound).numpy()
    # per image, AIS minus the bound: at least -2 standard errors of that difference's mean
    assert difference.mean() >= -2 * _stderr(difference), difference
