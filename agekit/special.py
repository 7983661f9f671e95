"""Special functions torch lacks, with exact gradients.

The sphere's Kozachenko-Leonenko estimator needs the fraction of S^{M-1} covered by a spherical cap
of chordal radius c:

    F(c) = I_s((M-1)/2, 1/2) / 2            for c <= sqrt(2)
    F(c) = 1 - I_s((M-1)/2, 1/2) / 2        for c >  sqrt(2),   s = c^2 (1 - c^2/4) = sin^2(theta)

with I the regularized incomplete beta function. torch has no incomplete beta, so the forward pass
runs on scipy in float64 and the backward pass uses the closed-form derivative (in torch, on the
tensor's own device):

    d log F / dc = sin^{M-2}(theta) / (B((M-1)/2, 1/2) F sqrt(1 - c^2/4)).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.special as sps
import torch
from torch import Tensor

__all__ = ["log_cap_fraction", "log_cap_fraction_numpy"]

# Where a log s is below this, I_s(a, 1/2) ~ s^a is within a few hundred orders of float64's
# underflow (a = 255.5, s = 0.1 already gives 1e-257), so log I_s comes from the hypergeometric
# series instead of scipy's betainc.
_UNDERFLOW_LOG = -600.0
# Within this t = cos^2(theta) of the equator, I_s is computed from t rather than s = 1 - t.
_EQUATOR_T = 1e-4


def log_cap_fraction_numpy(chordal_distance: np.ndarray, dim: int) -> np.ndarray:
    """log F(c) in float64 numpy: the log of the fraction of S^{dim-1} within chordal distance c.

    ``dim`` is the ambient dimension M (the sphere S^{M-1} lives in R^M). ``c`` is clipped to the
    sphere's diameter [0, 2]; c = 0 gives -inf (an empty cap).
    """
    if dim < 2:
        raise ValueError(f"log_cap_fraction needs dim >= 2 (the sphere S^(dim-1)), got {dim}")
    c = np.clip(np.asarray(chordal_distance, dtype=np.float64), 0.0, 2.0)
    a, b = (dim - 1) / 2.0, 0.5
    # s = sin^2(theta) and t = 1 - s = cos^2(theta) = (1 - c^2/2)^2, each from a form that stays
    # accurate where it is small: near c = 0 and c = 2 (s -> 0), and near the equator c = sqrt(2)
    # (t -> 0), where I_s(a, 1/2) ~ 1 - O(sqrt(t)) would otherwise lose half its digits.
    t = (1.0 - c * c / 2.0) ** 2
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        log_s = 2.0 * np.log(c) + np.log(2.0 - c) + np.log(2.0 + c) - math.log(4.0)
        s = np.exp(log_s)
        # The common case in one vectorised call: kNN distances rarely come near the exceptions.
        log_i = np.log(sps.betainc(a, b, s))
        tiny = a * log_s < _UNDERFLOW_LOG
        if tiny.any():
            # log I_s from I_s = s^a (1 - s)^b / (a B(a, b)) 2F1(a + b, 1; a + 1; s) (DLMF 8.17.8):
            # no underflow however small s^a is; the terms shrink geometrically with ratio s.
            ls, ss = log_s[tiny], s[tiny]
            log_i[tiny] = (
                a * ls
                + b * np.log1p(-ss)
                - math.log(a)
                - sps.betaln(a, b)
                + np.log(sps.hyp2f1(a + b, 1.0, a + 1.0, ss))
            )
        equator = t <= _EQUATOR_T
        if equator.any():
            # I_s = 1 - I_t(b, a), from t's own digits.
            log_i[equator] = np.log(sps.betaincc(b, a, t[equator]))
        # F = I_s / 2 inside the hemisphere, 1 - I_s / 2 beyond it.
        log_f = np.where(c > math.sqrt(2.0), np.log1p(-0.5 * np.exp(log_i)), log_i - math.log(2.0))
    log_f = np.where(c == 0.0, -np.inf, log_f)
    return np.where(c == 2.0, 0.0, log_f)


def _dlogf_dc(c: Tensor, log_f: Tensor, dim: int) -> Tensor:
    """The analytic derivative d log F / dc, computed in log space on c's device and dtype."""
    a = (dim - 1) / 2.0
    log_beta = math.lgamma(a) + math.lgamma(0.5) - math.lgamma(a + 0.5)
    # sin^{M-2}(theta) / sqrt(1 - c^2/4) with sin(theta) = c sqrt(1 - c^2/4)
    #   = c^{M-2} (1 - c^2/4)^{(M-3)/2}
    log_num = (dim - 2) * torch.log(c) if dim != 2 else torch.zeros_like(c)
    if dim != 3:  # the (1 - c^2/4) power vanishes at M = 3: skip it so c = 2 gives no 0 * inf
        log_num = log_num + (dim - 3) / 2.0 * torch.log1p(-c * c / 4.0)
    return torch.exp(log_num - log_beta - log_f)


class _LogCapFraction(torch.autograd.Function):
    @staticmethod
    def forward(chordal_distance: Tensor, dim: int) -> Tensor:
        values = log_cap_fraction_numpy(
            chordal_distance.detach().to("cpu", torch.float64).numpy(), dim
        )
        return torch.from_numpy(values).to(
            device=chordal_distance.device, dtype=chordal_distance.dtype
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        chordal_distance, dim = inputs
        ctx.save_for_backward(chordal_distance, output)
        ctx.dim = dim

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, None]:
        chordal_distance, log_f = ctx.saved_tensors
        grad = _dlogf_dc(chordal_distance.clamp(0.0, 2.0), log_f, ctx.dim)
        # Outside [0, 2] the forward clips c, so F is flat there.
        inside = (chordal_distance >= 0) & (chordal_distance <= 2)
        grad = torch.where(inside, grad, torch.zeros_like(grad))
        return grad_output * grad, None


def log_cap_fraction(chordal_distance: Tensor, dim: int) -> Tensor:
    """log F(c): the log of the fraction of S^{dim-1} in R^dim within chordal distance c.

    Differentiable in ``chordal_distance`` (any shape, float32 or float64, any device); the result
    has the input's dtype and device. Accurate for dims up to a few thousand and for tiny c (the
    value is computed in log space, so it does not underflow to -inf for c > 0).
    """
    if dim < 2:
        raise ValueError(f"log_cap_fraction needs dim >= 2 (the sphere S^(dim-1)), got {dim}")
    if not chordal_distance.is_floating_point():
        raise TypeError(f"chordal_distance must be floating point, got {chordal_distance.dtype}")
    result: Tensor = _LogCapFraction.apply(chordal_distance, int(dim))
    return result
