"""Log-likelihood of held-out data under the generator, by annealed importance sampling.

The protocol of Wu et al. 2017 ("On the Quantitative Analysis of Decoder-Based Generative
Models"), which the AGE paper reports (MNIST, latent size 10: AGE 746, ALI 721, VAE 705 nats): the
generator becomes a density through a Gaussian observation model, p(x | z) = N(x; g(z), sigma^2 I)
over the flattened x, and log p(x) = log E_{z ~ prior} p(x | z) is estimated by AIS with HMC
(:mod:`agekit.metrics.ais`). Numbers are comparable only under the same pixel scale, sigma,
schedule and number of steps, which is why all of them are in the protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from agekit.components import (
    Direction,
    EvaluationContext,
    Generator,
    Metric,
    MetricResult,
    Prior,
)
from agekit.metrics.ais import (
    AISConfig,
    BDMCResult,
    Decoder,
    HMCSettings,
    ais_log_likelihood,
    bdmc_gap,
)
from agekit.metrics.classifier import load_split, network_mode
from agekit.priors.standard import GaussianPrior, SpherePrior

#: Observation standard deviations that ``sigma = None`` chooses from, in the units the data are
#: scored in ([0, 1] pixels for images). Spaced about 1.2x apart over 0.07-0.25, where Wu et al.'s
#: validated values for MNIST lie (their code's ``sigma`` is a variance, 0.005-0.03, i.e. standard
#: deviations 0.07-0.17); coarser below, for low-noise vector data such as ring8 (mode std 0.01).
DEFAULT_SIGMA_GRID: tuple[float, ...] = (
    0.01,
    0.02,
    0.05,
    0.07,
    0.085,
    0.1,
    0.12,
    0.145,
    0.17,
    0.2,
    0.25,
)


@dataclass(frozen=True)
class SigmaChoice:
    sigma: float
    #: the mean AIS estimate (nats) over the selection images at each grid value
    estimates: dict[float, float]


def choose_sigma(
    decode: Decoder,
    x: Tensor,
    latent_dim: int,
    grid: tuple[float, ...],
    config: AISConfig,
    generator: torch.Generator,
) -> SigmaChoice:
    """The grid value with the highest mean AIS estimate of log p(x) over the rows of ``x``.

    Every (sigma, image) pair is one image of a single AIS batch. AIS bounds are looser for smaller
    sigma (a sharper posterior), so with few steps the choice leans towards larger sigma.
    """
    if not grid:
        raise ValueError("the sigma grid is empty")
    n = x.shape[0]
    values = torch.tensor(grid, dtype=torch.float64, device=x.device)
    rows = x.flatten(1).repeat(len(grid), 1)
    estimate = ais_log_likelihood(
        decode, rows, values.repeat_interleave(n), latent_dim, config, generator
    )
    means = estimate.log_likelihood.view(len(grid), n).mean(1)
    best = int(torch.nan_to_num(means, nan=-math.inf).argmax())
    table = {float(s): float(m) for s, m in zip(grid, means.tolist(), strict=True)}
    return SigmaChoice(float(grid[best]), table)


def model_decoder(
    generator: Generator, prior: Prior, unit_pixels: bool, crop: int | None = None
) -> Decoder:
    """u ~ N(0, I) -> g(z(u)) flattened: z = u for the Gaussian prior, u / |u| for the sphere.

    u / |u| is exactly uniform on the sphere and g depends on u only through it, so annealing over
    u targets the sphere model's own p(x). ``unit_pixels`` maps [-1, 1] images onto [0, 1];
    ``crop`` keeps the central ``crop`` x ``crop`` pixels of images (the observation model then
    covers those pixels only).
    """
    if not isinstance(prior, GaussianPrior | SpherePrior):
        raise ValueError(
            f"log-likelihood anneals from N(0, I) and serves the gaussian and sphere priors only, "
            f"not {type(prior).__name__}"
        )
    sphere = isinstance(prior, SpherePrior)
    dtype = next((p.dtype for p in generator.parameters()), torch.float32)

    def decode(u: Tensor) -> Tensor:
        z = u.to(dtype)
        if sphere:
            z = z / z.norm(dim=1, keepdim=True)
        out = central_crop(generator(z), crop).flatten(1)
        return (out + 1) / 2 if unit_pixels else out

    return decode


def central_crop(images: Tensor, crop: int | None) -> Tensor:
    """The central ``crop`` x ``crop`` pixels of a batch of images (all of them for None)."""
    if crop is None:
        return images
    height, width = images.shape[-2:]
    if not crop <= min(height, width):
        raise ValueError(f"crop {crop} is larger than the {height}x{width} images")
    top, left = (height - crop) // 2, (width - crop) // 2
    return images[..., top : top + crop, left : left + crop]


class LogLikelihood(Metric):
    """AIS estimate of the mean log p(x) over TEST images, in nats, with its standard error.

    Images are scored on the [0, 1] pixel scale ((x + 1) / 2), dequantised with U(0, 1/256)
    noise as Wu et al. do (``dequantize``); vector data in their own units. ``sigma = None``
    chooses sigma per model from ``sigma_grid`` by :func:`choose_sigma` on ``sigma_images``
    TRAIN images with the same AIS settings; a number fixes it (compare models at one sigma).
    ``bdmc_images > 0`` adds Wu et al.'s BDMC check on that many points simulated from the model.
    ``crop`` scores the central crop of images: 28 on MNIST padded to 32 scores the 784 pixels
    the literature's MNIST numbers are over. Each image's estimate is a stochastic lower bound
    (AIS); the reported stderr is over images.
    The generator runs in eval mode with the batch-norm statistics of prior samples, since p(x)
    is the density of what the generator produces from prior codes.
    """

    headline: ClassVar[dict[str, Direction]] = {"log_likelihood_nats": "higher"}
    headline_order: ClassVar[int] = 25
    generator_inputs: ClassVar[Literal["prior", "codes"]] = "prior"

    def __init__(
        self,
        n_images: int = 100,
        chains: int = 16,
        steps: int = 500,
        leapfrog: int = 10,
        sigma: float | None = None,
        sigma_grid: tuple[float, ...] = DEFAULT_SIGMA_GRID,
        sigma_images: int = 8,
        schedule: Literal["sigmoid", "linear"] = "sigmoid",
        dequantize: bool = True,
        batch_images: int = 100,
        bdmc_images: int = 0,
        crop: int | None = None,
    ) -> None:
        if min(n_images, sigma_images, batch_images) < 1 or bdmc_images < 0:
            raise ValueError(
                "n_images, sigma_images and batch_images must be positive, bdmc_images >= 0"
            )
        if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        if any(not (math.isfinite(s) and s > 0) for s in sigma_grid) or not sigma_grid:
            raise ValueError(f"sigma_grid must hold positive numbers, got {sigma_grid!r}")
        self.config = AISConfig(chains, steps, schedule, HMCSettings(leapfrog=leapfrog))
        self.n_images = n_images
        self.sigma = sigma
        self.sigma_grid = tuple(float(s) for s in sigma_grid)
        self.sigma_images = sigma_images
        self.dequantize = dequantize
        self.batch_images = batch_images
        self.bdmc_images = bdmc_images
        if crop is not None and crop < 1:
            raise ValueError(f"crop must be a positive number of pixels, got {crop!r}")
        self.crop = crop

    def __call__(self, context: EvaluationContext) -> MetricResult:
        if context.data.condition_shape is not None:
            raise ValueError(
                f"log-likelihood scores unconditional generators; {context.dataset_name!r} is "
                "conditional"
            )
        rng = torch.Generator().manual_seed(context.seed)
        images = context.data.kind == "image"
        if self.crop is not None and not images:
            raise ValueError(f"crop applies to images; {context.dataset_name!r} holds vectors")
        decode = model_decoder(context.generator, context.prior, images, self.crop)
        dim = context.prior.dim
        x = self._observed(context, "test", self.n_images, rng)
        with network_mode([context.generator], "eval"):
            sigma, choice = self._sigma(context, decode, rng)
            per_image, acceptance = self._estimate(decode, x, sigma, dim, rng)
            bdmc = None
            if self.bdmc_images:
                bdmc = bdmc_gap(decode, dim, self.bdmc_images, sigma, self.config, rng, x.device)
        values = _values(per_image, acceptance, sigma, bdmc)
        details: dict[str, Any] = {}
        if choice is not None:
            details["sigma_grid_nats"] = {f"{s:g}": v for s, v in choice.estimates.items()}
        return MetricResult(values, self._protocol(context, images, x.shape[0], sigma), details)

    def _sigma(
        self, context: EvaluationContext, decode: Decoder, rng: torch.Generator
    ) -> tuple[float, SigmaChoice | None]:
        if self.sigma is not None:
            return self.sigma, None
        train = self._observed(context, "train", self.sigma_images, rng)
        dim = context.prior.dim
        choice = choose_sigma(decode, train, dim, self.sigma_grid, self.config, rng)
        return choice.sigma, choice

    def _observed(
        self,
        context: EvaluationContext,
        split: Literal["train", "test"],
        n: int,
        rng: torch.Generator,
    ) -> Tensor:
        x, _ = load_split(context.data, split, n, seed=context.seed)
        x = central_crop(x, self.crop).flatten(1).double()
        if context.data.kind == "image":
            x = (x + 1) / 2
            if self.dequantize:
                x = x + torch.rand(x.shape, generator=rng, dtype=torch.float64) / 256
        return x.to(context.device)

    def _estimate(
        self, decode: Decoder, x: Tensor, sigma: float, dim: int, rng: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Per-image estimates and acceptance rates, ``batch_images`` images per AIS batch."""
        estimates, acceptance = [], []
        for start in range(0, x.shape[0], self.batch_images):
            block = x[start : start + self.batch_images]
            result = ais_log_likelihood(decode, block, sigma, dim, self.config, rng)
            estimates.append(result.log_likelihood.cpu())
            acceptance.append(result.acceptance.cpu())
        return torch.cat(estimates), torch.cat(acceptance)

    def _protocol(
        self, context: EvaluationContext, images: bool, n: int, sigma: float
    ) -> dict[str, Any]:
        hmc = self.config.hmc
        scale = "native units"
        if images:
            scale = "[0, 1] pixels ((x + 1) / 2)"
            if self.dequantize:
                scale += " + U(0, 1/256) dequantisation noise"
        return {
            "metric": "log-likelihood",
            "split": "test",
            "n_images": n,
            "seed": context.seed,
            "observation": "N(x; g(z), sigma^2 I) over the flattened x",
            "pixel_scale": scale,
            "pixels": "all" if self.crop is None else f"central {self.crop}x{self.crop} crop",
            "sigma": sigma,
            "sigma_selection": (
                "fixed"
                if self.sigma is not None
                else {
                    "grid": list(self.sigma_grid),
                    "split": "train",
                    "n_images": self.sigma_images,
                }
            ),
            "prior_path": _prior_path(context.prior),
            "estimator": "AIS (Wu et al. 2017), log-mean-exp of the chains' weights per image",
            "bound": "stochastic lower bound: E[estimate] <= log p(x)",
            "chains": self.config.chains,
            "steps": self.config.steps,
            "schedule": self.config.schedule,
            "hmc": {
                "leapfrog": hmc.leapfrog,
                "initial_step": hmc.initial_step,
                "target_acceptance": hmc.target_acceptance,
                "step_adaptation": [hmc.step_decrease, hmc.step_increase],
                "step_range": [hmc.step_min, hmc.step_max],
                "adapted": "per image, shared by its chains",
            },
            "reduction": "mean over images; stderr = sd / sqrt(n)",
            "batch_images": self.batch_images,
            "bn_mode": "eval",
            "bdmc_images": self.bdmc_images,
        }


def _prior_path(prior: Prior) -> str:
    if isinstance(prior, SpherePrior):
        return "u ~ N(0, I), z = u / |u| (uniform on the sphere)"
    return "z ~ N(0, I)"


def _values(
    per_image: Tensor, acceptance: Tensor, sigma: float, bdmc: BDMCResult | None
) -> dict[str, float]:
    n = per_image.shape[0]
    stderr = float(per_image.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.nan
    values = {
        "log_likelihood_nats": float(per_image.mean()),
        "log_likelihood_stderr": stderr,
        "sigma": float(sigma),
        "hmc_acceptance": float(acceptance.mean()),
    }
    if bdmc is not None:
        values["bdmc_forward_nats"] = float(bdmc.forward.mean())
        values["bdmc_reverse_nats"] = float(bdmc.reverse.mean())
        values["bdmc_gap_nats"] = bdmc.gap
    return values


__all__ = ["DEFAULT_SIGMA_GRID", "LogLikelihood", "SigmaChoice", "bdmc_gap", "choose_sigma"]
