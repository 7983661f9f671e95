"""Histogram KL and JSD between generated and real 2-D samples: Soft-IntroVAE's 2-D metrics.

Soft-IntroVAE (Daniel and Tamar, CVPR 2021) scores its 2-D toy models by histogramming 5,000
generated and 5,000 real samples on a square grid and comparing the histograms
(``calculate_sample_kl`` in ``soft_intro_vae_2d/train_soft_intro_vae_2d.py`` of
github.com/taldatech/soft-intro-vae-pytorch). Their function:

* ``np.histogram2d(..., bins=100, density=True, range=[[-2s, 2s]] * 2)`` of ``evalset.next_batch``
  (fresh draws from the training distribution) and of ``decode(z)``, z ~ N(0, I), the decoder's
  mean without observation noise; s = 1 for 8Gaussians (grid [-2, 2]^2), 2 for 2spirals,
  checkerboard and rings (grid [-4, 4]^2). ``density=True`` divides the counts by the number of
  samples *inside* the grid and by the bin area, so samples outside the grid are dropped;
* KL = ``F.kl_div(log(q + 1e-14), p, reduction="batchmean")`` with p the real and q the model
  histogram *densities*: sum p (log p - log(q + 1e-14)) / 100, i.e. KL(data || model) in nats,
  divided by the 100 rows of the histogram (``batchmean``) and, being a sum over densities rather
  than probabilities, multiplied by 1 / bin area; 1e-14 is added to the model's density;
* "JSD" = 0.5 (KL(m || p + 1e-14) + KL(m || q + 1e-14)) / 100 with m = (p + q) / 2, in the same
  density units. ``F.kl_div(log a, m)`` is KL(m || a), so this runs from the mixture to each
  histogram, not from each histogram to the mixture as the Jensen-Shannon divergence does: it is
  zero at equality but not bounded by log 2 (an empty model bin costs about log(1 / 1e-14)).

agekit's headline numbers are the textbook quantities on the same binning, computed with scipy on
the histograms normalised to probabilities (counts inside the grid over their total, as
``density=True`` normalises): ``histogram_kl`` = KL(data || model) (``scipy.stats.entropy``), the
model's probabilities floored by their epsilon (1e-14 per unit area, i.e. 1e-14 x bin area per
bin, the same floor as theirs), and ``histogram_jsd`` (``scipy.spatial.distance.jensenshannon``
squared), in nats, in [0, log 2], no floor needed. Their two numbers, computed by their formulas
on agekit's samples and grid, are reported beside them as ``soft_introvae_kl`` (=
``histogram_kl`` / (bins x bin area)) and ``soft_introvae_jsd``. Both depend on the grid's area,
so they compare with their published numbers only at their data scale (below).

Grid extent. Their data sets are not agekit's: their 8Gaussians has modes on a circle of radius
2 / 1.414 (std 0.02 / 1.414) on the grid [-2, 2]^2, a half-width of sqrt(2) x the largest mode
coordinate. agekit's default keeps that ratio: half-width sqrt(2) x the largest |coordinate| of the
data set's ``modes`` (ring8: 1.414; grid25: 5.657), or, for a 2-D data set without ``modes``,
sqrt(2) x the largest |coordinate| of the real samples; ``extent`` sets it. ring8 is their
8Gaussians scaled by 1 / sqrt(2) (same eight angles, std / radius 0.01 in both), so on the default
grid its histograms are theirs up to that scale: ``histogram_kl`` and ``histogram_jsd`` estimate
the same quantities, the KL their code prints is ``histogram_kl`` x 100 / 16 (their bins x bin
area is 0.16) and their "JSD" is ``soft_introvae_jsd`` / 2 (bin area 0.0016 against agekit's
0.0008), up to the floor, which their scale puts at twice the probability (within 2 % on simulated
samples). Real samples come from the data set's TEST split (held-out draws from the mixture, like
their fresh draws), model samples g(z), z ~ prior, as mode coverage draws them. Their
grid-normalised ELBO needs an ELBO (a stochastic encoder and a decoder likelihood), which an
AGE pair does not have; it is not computed here.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import xlogy
from scipy.stats import entropy

from agekit.components import Direction, EvaluationContext, Metric, MetricResult
from agekit.metrics.classifier import generate_samples, load_split, registered_datasets_where

#: Their 8Gaussians grid half-width (2) over its largest mode coordinate (2 / 1.414).
EXTENT_RATIO = math.sqrt(2.0)
#: Their epsilon, added to the model's histogram density (per unit area) inside the log.
SOFT_INTROVAE_EPSILON = 1e-14


def histogram_counts(samples: Any, extent: float, bins: int) -> np.ndarray:
    """Counts of 2-D ``samples`` (N, 2) on ``bins`` x ``bins`` equal bins of [-extent, extent]^2.

    Samples outside the grid are not counted (``np.histogram2d`` with ``range``), as in their code.
    """
    x = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    span = [[-extent, extent], [-extent, extent]]
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=bins, range=span)
    return counts


def histogram_divergences(
    real: Any,
    model: Any,
    extent: float,
    bins: int = 100,
    epsilon: float = SOFT_INTROVAE_EPSILON,
) -> dict[str, float]:
    """KL(data || model), JSD and Soft-IntroVAE's two numbers for 2-D ``real`` and ``model``.

    All in nats (see the module docstring); NaN when either set has no sample inside the grid.
    ``epsilon`` is added to the model's histogram density (per unit area), as in their code.
    """
    if not (math.isfinite(extent) and extent > 0) or bins < 1 or epsilon < 0:
        raise ValueError("extent must be positive, bins a positive integer, epsilon >= 0")
    p_counts = histogram_counts(real, extent, bins)
    q_counts = histogram_counts(model, extent, bins)
    n_real, n_model = len(np.asarray(real).reshape(-1, 2)), len(np.asarray(model).reshape(-1, 2))
    outside = {
        "real_outside_fraction": float(1.0 - p_counts.sum() / n_real) if n_real else math.nan,
        "model_outside_fraction": float(1.0 - q_counts.sum() / n_model) if n_model else math.nan,
    }
    if p_counts.sum() == 0 or q_counts.sum() == 0:
        keys = ("histogram_kl", "histogram_jsd", "soft_introvae_kl", "soft_introvae_jsd")
        return {**dict.fromkeys(keys, math.nan), **outside}
    p = (p_counts / p_counts.sum()).ravel()
    q = (q_counts / q_counts.sum()).ravel()
    area = (2.0 * extent / bins) ** 2
    # scipy renormalises q + floor; the floor adds bins^2 x epsilon x area (8e-14 at the defaults).
    kl = float(entropy(p, q + epsilon * area))
    # jensenshannon returns the square root; squaring it can round one ulp past log 2.
    jsd = min(float(jensenshannon(p, q) ** 2), math.log(2.0))
    return {
        "histogram_kl": kl,
        "histogram_jsd": jsd,
        **soft_introvae_numbers(p / area, q / area, bins, epsilon),
        **outside,
    }


def soft_introvae_numbers(
    real_density: np.ndarray, model_density: np.ndarray, bins: int, epsilon: float
) -> dict[str, float]:
    """Their ``calculate_sample_kl``: F.kl_div(log(a + eps), b, "batchmean") is
    sum(b log b - b log(a + eps)) / bins (0 log 0 = 0) on densities, as they compute it."""

    def kl_div(log_input: np.ndarray, target: np.ndarray) -> float:
        return float(np.sum(xlogy(target, target) - target * log_input) / bins)

    mixture = 0.5 * (real_density + model_density)
    log_real = np.log(real_density + epsilon)
    log_model = np.log(model_density + epsilon)
    return {
        "soft_introvae_kl": kl_div(log_model, real_density),
        "soft_introvae_jsd": 0.5 * (kl_div(log_real, mixture) + kl_div(log_model, mixture)),
    }


def default_extent(data: Any, real: torch.Tensor) -> tuple[float, str]:
    """Half-width of the grid and how it was chosen (module docstring, "Grid extent")."""
    modes = getattr(data, "modes", None)
    if modes is not None:
        largest = float(torch.as_tensor(modes, dtype=torch.float64).abs().max())
        return EXTENT_RATIO * largest, "sqrt(2) x the largest |coordinate| of the data set's modes"
    largest = float(real.double().abs().max())
    return EXTENT_RATIO * largest, "sqrt(2) x the largest |coordinate| of the real samples"


class HistogramDivergence(Metric):
    """Soft-IntroVAE's 2-D histogram KL and JSD (module docstring) on 2-D vector data sets.

    ``n_samples`` model samples g(z), z ~ prior (seeded by the evaluation seed) and ``n_samples``
    TEST samples (a seeded subset; fewer if the split is smaller) are histogrammed on ``bins`` x
    ``bins`` bins of [-extent, extent]^2. ``extent = None`` derives it from the data set.
    Image data, conditional data and vectors of any other size raise a ValueError naming the
    data set.
    """

    headline: ClassVar[dict[str, Direction]] = {
        "histogram_kl": "lower",
        "histogram_jsd": "lower",
    }
    headline_order: ClassVar[int] = 32

    def __init__(
        self,
        n_samples: int = 5000,
        bins: int = 100,
        extent: float | None = None,
        epsilon: float = SOFT_INTROVAE_EPSILON,
        split: Literal["test", "train"] = "test",
        batch_size: int = 500,
        bn_mode: Literal["eval", "train"] = "eval",
    ) -> None:
        if n_samples < 1 or bins < 1 or batch_size < 1:
            raise ValueError("n_samples, bins and batch_size must be positive")
        if extent is not None and not (math.isfinite(extent) and extent > 0):
            raise ValueError(f"extent must be a positive number, got {extent!r}")
        if not (math.isfinite(epsilon) and epsilon >= 0):
            raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
        self.n_samples = n_samples
        self.bins = bins
        self.extent = extent
        self.epsilon = epsilon
        self.split = split
        self.batch_size = batch_size
        self.bn_mode = bn_mode

    def __call__(self, context: EvaluationContext) -> MetricResult:
        data = context.data
        two_d = data.kind == "vector" and tuple(data.shape) == (2,)
        if not two_d or data.condition_shape is not None:
            supported = registered_datasets_where(lambda cls: cls.kind == "vector")
            raise ValueError(
                f"histogram-divergence is not defined for data set {context.dataset_name!r}: it "
                f"histograms unconditional 2-D vector data ({', '.join(supported)})"
            )
        real, _ = load_split(data, self.split, self.n_samples, seed=context.seed)
        real = real.reshape(-1, 2)
        model = generate_samples(context, self.n_samples, self.batch_size, self.bn_mode)
        if self.extent is None:
            extent, source = default_extent(data, real)
        else:
            extent, source = float(self.extent), "set (option extent)"
        values = histogram_divergences(real.numpy(), model.numpy(), extent, self.bins, self.epsilon)
        return MetricResult(values, self._protocol(context, real.shape[0], extent, source))

    def _protocol(
        self, context: EvaluationContext, n_real: int, extent: float, source: str
    ) -> dict[str, Any]:
        width = 2.0 * extent / self.bins
        return {
            "metric": "histogram-divergence",
            "reference": (
                "Soft-IntroVAE 2-D (Daniel & Tamar 2021), calculate_sample_kl in "
                "soft_intro_vae_2d/train_soft_intro_vae_2d.py"
            ),
            "dataset": context.dataset_name,
            "seed": context.seed,
            "split": self.split,
            "n_real": n_real,
            "n_model": self.n_samples,
            "model_samples": "g(z), z ~ prior, no observation noise",
            "grid": f"[-{extent:g}, {extent:g}]^2, {self.bins} x {self.bins} bins",
            "extent": extent,
            "extent_source": source,
            "bins": self.bins,
            "bin_width": width,
            "normalisation": "counts inside the grid / their total (samples outside dropped)",
            "epsilon": self.epsilon,
            "epsilon_units": "added to the model's density per unit area (x bin area per bin)",
            "histogram_kl": "KL(data || model), scipy.stats.entropy, nats",
            "histogram_jsd": "scipy jensenshannon(data, model)^2, nats, in [0, log 2]",
            "soft_introvae_scale": f"their numbers on this grid = KL / (bins x bin area) "
            f"= KL x {1.0 / (self.bins * width * width):.6g}",
            "batch_size": self.batch_size,
            "bn_mode": self.bn_mode,
        }


__all__ = [
    "HistogramDivergence",
    "default_extent",
    "histogram_counts",
    "histogram_divergences",
    "soft_introvae_numbers",
]
