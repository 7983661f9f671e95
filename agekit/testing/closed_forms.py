"""Closed-form KLs the kit compares estimates with: a von Mises-Fisher distribution against the
uniform sphere, and a diagonal Gaussian against a Gaussian prior."""

from __future__ import annotations

import math

import scipy.special as sps
import torch
from scipy.optimize import brentq
from torch import Tensor

from agekit.components import log_sphere_area

#: Total KL, in nats, of the diagonal-Gaussian closed form, the same in every dimension. Far above
#: the built-ins' tolerances (0.04, 0.15): an estimator scaled by 0.5, 2 or 1e-3 misses by 1.25
#: nats or more, beyond the allowance tolerance + 10% of the value + SIGMAS standard errors
#: (~0.4 + 4 x 0.03-0.1 for the built-ins at B = 128, 16 batches) that the built-ins' finite-B
#: biases need at M <= 4 (kNN: +0.03 to +0.09 nats).
CLOSED_FORM_KL = 2.5

#: Concentrations of the two von Mises-Fisher members, as kappa / (M - 1): a member's codes lie at a
#: mean squared distance of about 1/c from its mean direction ((M - 1)/kappa for kappa >> M). There
#: the vMF is a Gaussian on the tangent plane up to O(1/c), and a kNN estimate's bias is that of
#: a Euclidean kNN estimate, which does not change with the scale: at the kit's sizes and seeds
#: (B = 128, 16 batches, k = 1, 3, 5, M from 2 to 128) the rise of the estimate from one member to
#: the other matched the rise of the KL (1.15 nats at M = 2, 17.3 at M = 16, 72.5 at M = 64) within
#: 0.021 nats, against a bias of -12.2 nats in each at M = 64. At moderate concentrations it does
#: not: for the KL = 2.5 vMF the bias is -11% at M = 16 and -45% at M = 64, and -27% still at
#: KL = 30. Not more concentrated than 1e4: at M = 3 the 3rd neighbour's squared distance (5e-6
#: typically, 6e-7 at the least) stays far above the estimators' distance floors (1e-12).
VMF_CONCENTRATIONS = (1e3, 1e4)


def vmf_kl(dim: int, kappa: float) -> float:
    """KL( vMF(mu, kappa) || uniform on S^{dim-1} ) in nats (any mean direction mu).

    -H(vMF) + log|S^{M-1}| with log C_M(kappa) = nu log kappa - (M/2) log 2 pi - log I_nu(kappa),
    nu = M/2 - 1, and E[mu . x] = I_{M/2}(kappa) / I_nu(kappa); Bessel functions in their
    exponentially scaled form (ive), so that large kappa cannot overflow.

    Raises:
        ValueError: where I_nu(kappa) e^-kappa underflows (nu in the hundreds and kappa far
            below it, e.g. M = 1000 at a KL of a few nats).
    """
    nu = dim / 2 - 1
    scaled_bessel = float(sps.ive(nu, kappa))
    if not (scaled_bessel > 0.0 and math.isfinite(scaled_bessel)):
        raise ValueError(f"vMF closed form out of float64 range at dim={dim}, kappa={kappa:g}")
    mean_cosine = float(sps.ive(dim / 2, kappa)) / scaled_bessel
    log_normaliser = (
        nu * math.log(kappa) - (dim / 2) * math.log(2 * math.pi) - math.log(scaled_bessel) - kappa
    )
    return log_normaliser + kappa * mean_cosine + log_sphere_area(dim)


def vmf_kappa(dim: int, kl: float = CLOSED_FORM_KL) -> float:
    """The concentration kappa at which :func:`vmf_kl` equals ``kl`` on S^{dim-1}."""
    # d KL / d kappa = kappa A'(kappa) <= kappa / M (A is concave with A'(0) = 1/M), so
    # KL(kappa) <= kappa^2 / (2M): kappa = sqrt(2 M kl) is at or below the root.
    low = math.sqrt(2 * dim * kl)
    while vmf_kl(dim, low) > kl:  # never taken if the bound holds; cheap insurance for brentq
        low /= 2
    high = 2 * low
    while vmf_kl(dim, high) < kl:
        low, high = high, 2 * high
    return float(brentq(lambda k: vmf_kl(dim, k) - kl, low, high, xtol=1e-12))


def diagonal_gaussian_kl(shift: Tensor, log_ratio: Tensor) -> float:
    """KL( N(mean + shift sd, diag (e^log_ratio sd)^2) || N(mean, diag sd^2) ), float64 nats.

    Shift and log-ratio are per coordinate, in units of the reference's standard deviations.
    """
    ratio = torch.exp(2 * log_ratio.double())
    return float(0.5 * (ratio + shift.double() ** 2 - 1 - 2 * log_ratio.double()).sum())


def diagonal_gaussian_offsets(dim: int, kl: float = CLOSED_FORM_KL) -> tuple[Tensor, Tensor]:
    """Shift and log-ratio (see :func:`diagonal_gaussian_kl`) of the kit's test Gaussian.

    Both are t * linspace(-1, 1, M), t chosen so that the KL is ``kl``: coordinates are moved by
    up to t standard deviations either way and narrowed or widened by up to e^t. KL grows with t.
    """
    pattern = torch.linspace(-1.0, 1.0, dim, dtype=torch.float64)

    def excess(t: float) -> float:
        return diagonal_gaussian_kl(t * pattern, t * pattern) - kl

    high = 1.0
    while excess(high) < 0:
        high *= 2
    t = float(brentq(excess, 0.0, high, xtol=1e-12))
    return t * pattern, t * pattern
