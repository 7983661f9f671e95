"""Special functions torch lacks, with exact gradients.

The sphere's Kozachenko-Leonenko estimator needs the fraction of S^{M-1} covered by a spherical cap
of chordal radius c:

    F(c) = I_s((M-1)/2, 1/2) / 2            for c <= sqrt(2)
    F(c) = 1 - I_s((M-1)/2, 1/2) / 2        for c >  sqrt(2),   s = c^2 (1 - c^2/4) = sin^2(theta)

with I the regularized incomplete beta function. torch has no incomplete beta, so the value runs on
scipy in float64, and the gradient is the closed-form derivative, evaluated in the same float64
pass and kept for the backward:

    d log F / dc = sin^{M-2}(theta) / (B((M-1)/2, 1/2) F sqrt(1 - c^2/4)).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.special as sps
import torch
from torch import Tensor

__all__ = [
    "log_cap_fraction",
    "log_cap_fraction_and_slope",
    "log_cap_fraction_numpy",
]

# Where a log s is below this, log I_s comes from the hypergeometric series, not scipy's betainc.
_UNDERFLOW_LOG = -600.0
# Within this t = cos^2(theta) of the equator, I_s is computed from t rather than s = 1 - t.
_EQUATOR_T = 1e-4


def log_cap_fraction_numpy(chordal_distance: np.ndarray, dim: int) -> np.ndarray:
    """log F(c) in float64 numpy: the log of the fraction of S^{dim-1} within chordal distance c.

    ``dim`` is the ambient dimension M (the sphere S^{M-1} lives in R^M). ``c`` is clipped to the
    sphere's diameter [0, 2]; c = 0 gives -inf (an empty cap).
    """
    return _log_cap_fraction_numpy(chordal_distance, dim, slope=False)[0]


def _log_cap_fraction_numpy(
    chordal_distance: np.ndarray, dim: int, *, slope: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    # The common case is a handful of vectorised operations around one betainc call: at kNN batch
    # sizes the cost is per-operation overhead, so the exceptional routes (tiny caps, the equator,
    # caps beyond the hemisphere) run only on the entries that need them.
    if dim < 2:
        raise ValueError(f"log_cap_fraction needs dim >= 2 (the sphere S^(dim-1)), got {dim}")
    raw = np.asarray(chordal_distance, dtype=np.float64)
    c = np.clip(raw, 0.0, 2.0)
    a, b = (dim - 1) / 2.0, 0.5
    # s = sin^2(theta) = c^2 q with q = 1 - c^2/4 = (2 - c)(2 + c)/4: 2 - c is exact near the
    # antipode, where 1 - c^2/4 would cancel.
    c2 = c * c
    q = (2.0 - c) * (2.0 + c) / 4.0
    s = c2 * q
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        log_i = np.log(sps.betainc(a, b, s))
        # Where s^a is within a few hundred orders of float64's underflow (a = 255.5, s = 0.1
        # already gives 1e-257), log I_s comes from the hypergeometric series instead:
        # I_s = s^a (1 - s)^b / (a B(a, b)) 2F1(a + b, 1; a + 1; s) (DLMF 8.17.8). No underflow
        # however small s^a is; the terms shrink geometrically with ratio s.
        tiny = s < math.exp(_UNDERFLOW_LOG / a)
        if tiny.any():
            ct, st = c[tiny], s[tiny]
            log_s = 2.0 * np.log(ct) + np.log(2.0 - ct) + np.log(2.0 + ct) - math.log(4.0)
            log_i[tiny] = (
                a * log_s
                + b * np.log1p(-st)
                - math.log(a)
                - sps.betaln(a, b)
                + np.log(sps.hyp2f1(a + b, 1.0, a + 1.0, st))
            )
        # Near the equator c = sqrt(2), t = cos^2(theta) = (1 - c^2/2)^2 -> 0 and
        # I_s(a, 1/2) ~ 1 - O(sqrt(t)) would lose half its digits: I_s = 1 - I_t(b, a), from t's
        # own digits, instead.
        equator = np.abs(1.0 - c2 / 2.0) <= math.sqrt(_EQUATOR_T)
        if equator.any():
            t = (1.0 - c2[equator] / 2.0) ** 2
            log_i[equator] = np.log(sps.betaincc(b, a, t))
        # F = I_s / 2 inside the hemisphere, 1 - I_s / 2 beyond it (c = 2: I = 0, F = 1).
        log_f = log_i - math.log(2.0)
        beyond = c > math.sqrt(2.0)
        if beyond.any():
            log_f[beyond] = np.log1p(-0.5 * np.exp(log_i[beyond]))
        if not slope:
            return log_f, None
        # d log F / dc = sin^{M-2}(theta) / (B(a, 1/2) F sqrt(1 - c^2/4))
        #              = c^{M-2} q^{(M-3)/2} / (B(a, 1/2) F)
        log_num = (dim - 2) * np.log(c) if dim != 2 else np.zeros_like(c)
        if dim != 3:  # the q power vanishes at M = 3: skip it so c = 2 gives no 0 * inf
            log_num = log_num + (dim - 3) / 2.0 * np.log(q)
        dlogf_dc = np.exp(log_num - (sps.betaln(a, b) + log_f))
    outside = c != raw
    if outside.any():
        dlogf_dc[outside] = 0.0
    return log_f, dlogf_dc


def log_cap_fraction_and_slope(chordal_distance: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """log F(c) and d log F / dc without autograd, in c's dtype and on c's device.

    Both come from one float64 numpy pass: a backward made of torch operations (each its own
    kernel and autograd record) cost more than the value at kNN batch sizes. The derivative is 0
    outside [0, 2], where the value clips c.
    """
    log_f, dlogf_dc = _via_numpy(chordal_distance, dim, slope=True)
    return log_f, dlogf_dc


def _via_numpy(chordal_distance: Tensor, dim: int, *, slope: bool) -> list[Tensor]:
    """_log_cap_fraction_numpy on a tensor: one float64 round trip, results in c's dtype/device."""
    raw = chordal_distance.detach().to("cpu", torch.float64).numpy()
    arrays = [a for a in _log_cap_fraction_numpy(raw, dim, slope=slope) if a is not None]
    stacked = torch.from_numpy(np.stack(arrays)).to(
        device=chordal_distance.device, dtype=chordal_distance.dtype
    )
    return list(stacked.unbind(0))


class _LogCapFraction(torch.autograd.Function):
    # ctx-style on purpose: with setup_context, apply() measured 5x slower (torch 2.14, CPU).
    @staticmethod
    def forward(ctx: Any, chordal_distance: Tensor, dim: int) -> Tensor:
        log_f, slope = log_cap_fraction_and_slope(chordal_distance, dim)
        ctx.save_for_backward(slope)
        return log_f

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        if torch.is_grad_enabled():
            # create_graph=True: the slope would enter the graph as a constant, silently.
            raise RuntimeError(
                "log_cap_fraction's gradient cannot be differentiated again (create_graph=True)"
            )
        (slope,) = ctx.saved_tensors
        return grad_output * slope, None


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
    if not (torch.is_grad_enabled() and chordal_distance.requires_grad):
        return _via_numpy(chordal_distance, int(dim), slope=False)[0]
    log_f: Tensor = _LogCapFraction.apply(chordal_distance, int(dim))
    return log_f
