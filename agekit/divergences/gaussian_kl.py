"""The paper's parametric divergence (eq. 7): KL between a diagonal Gaussian fitted to the batch and
the Gaussian with the prior's per-coordinate moments.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from agekit.components import Divergence, DivergenceGuarantees, Prior

__all__ = ["GaussianKL", "ReferenceCodeGaussianKL"]


class GaussianKL(Divergence):
    """KL( N(m, diag v) || N(mean_p, diag var_p) ), averaged over the M dimensions.

    m and v are the batch's per-dimension mean and biased (1/B) variance; mean_p and var_p are the
    prior's analytic per-coordinate moments (0 and 1/M on the sphere, 0 and 1 for N(0, I)). Per
    dimension, in the prior's units v' = v / var_p and m' = (m - mean_p) / sqrt(var_p):

        0.5 * (v' + m'^2 - 1 - log v')

    The mean over dimensions (not the sum eq. 7 writes) is the scale the paper's lambda and mu were
    tuned for in the reference code. On the sphere this is a moment-matching criterion, not an
    estimate of KL(Q || uniform): it vanishes for every distribution with the sphere's first two
    per-coordinate moments.

    Options:
        eps: added to v' inside the divergence (so the fitted variance is v + eps * var_p). It only
            matters when the batch has (nearly) collapsed to one point: there v' = 0 makes the value
            and its gradient infinite/NaN, which would poison a training step. The default 1e-12 is
            far below float32 resolution of v' ~ 1, so it changes nothing elsewhere; because the
            same shifted variance enters every term, the result stays an exact Gaussian KL (>= 0).
            ``None`` means 1e-12 here and 0 in the reference-code mode (the reference has none).
        reference_code_variance: reproduce the public reference code's KLN01Loss exactly: the mean
            over dimensions of (v^2 + m^2)/2 - log v - 1/2 against N(0, I), whatever the prior.
            It puts the variance where the standard deviation belongs (a known bug of the
            reference), so it is not a divergence: it is neither >= 0 nor 0 at equality. Kept for
            reproduction only.
    """

    guarantees: ClassVar[DivergenceGuarantees] = DivergenceGuarantees(
        nonnegative="exact",
        zero_at_equality="population",
        # The population value at the prior is 0; a batch of B codes from the prior has bias
        # ~ 1/B per dimension (E[m'^2] = 1/B, E[v' - 1 - log v'] ~ 1/B for Gaussian coordinates):
        # 0.016 at B = 64. 0.04 leaves room for the spread of the average over a few batches.
        tolerance=0.04,
        supports=("sphere", "euclidean"),
    )
    #: For agekit.testing's closed-form checks: on diagonal-Gaussian codes against a Gaussian prior
    #: it converges to KL / M (the per-dimension average); it does not estimate KL on the sphere.
    closed_form_families: ClassVar[dict[str, str]] = {"diagonal-gaussian": "kl-per-dim"}

    _DEFAULT_EPS: ClassVar[float] = 1e-12

    def __new__(cls, eps: float | None = None, reference_code_variance: bool = False) -> Any:
        # The reference formula has different guarantees (none); a subclass carries them, so that
        # ``divergence.guarantees`` is always the truth about the object in hand.
        target = ReferenceCodeGaussianKL if reference_code_variance else cls
        return super().__new__(target)

    def __init__(self, eps: float | None = None, reference_code_variance: bool = False) -> None:
        if eps is not None and not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        # Constructing the subclass directly also means the reference formula.
        self.reference_code_variance = bool(reference_code_variance) or isinstance(
            self, ReferenceCodeGaussianKL
        )
        if eps is None:
            eps = 0.0 if self.reference_code_variance else self._DEFAULT_EPS
        self.eps = float(eps)

    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        mean = codes.mean(dim=0)
        var = codes.var(dim=0, unbiased=False)
        if self.reference_code_variance:
            var = var + self.eps
            return ((var * var + mean * mean) / 2 - torch.log(var) - 0.5).mean()
        prior_mean = prior.mean().to(device=codes.device, dtype=codes.dtype)
        prior_var = prior.variance().to(device=codes.device, dtype=codes.dtype)
        v = var / prior_var + self.eps
        m2 = (mean - prior_mean) ** 2 / prior_var
        return (0.5 * (_v_minus_one_minus_log_v(v) + m2)).mean()

    def __repr__(self) -> str:
        return (
            f"GaussianKL(eps={self.eps:g}, reference_code_variance={self.reference_code_variance})"
        )


def _v_minus_one_minus_log_v(v: Tensor) -> Tensor:
    """v - 1 - log v, accurate near v = 1 (as u - log1p(u)) and finite for tiny v.

    The log1p form alone breaks for v below float32 resolution (1 + u rounds to 0, log1p(-1) =
    -inf); the plain form loses the digits that matter near v = 1. Each branch gets an input that
    is finite for it, so the unselected branch cannot put a NaN into the gradient.
    """
    near_one = (v > 0.5) & (v < 2.0)
    u = torch.where(near_one, v - 1, torch.zeros_like(v))
    v_far = torch.where(near_one, torch.ones_like(v), v)
    return torch.where(near_one, u - torch.log1p(u), v_far - 1 - torch.log(v_far))


class ReferenceCodeGaussianKL(GaussianKL):
    """GaussianKL(reference_code_variance=True): the reference code's formula, a known bug."""

    guarantees: ClassVar[DivergenceGuarantees] = DivergenceGuarantees(
        nonnegative="none", zero_at_equality="none", tolerance=0.0, supports=("sphere", "euclidean")
    )
    closed_form_families: ClassVar[dict[str, str]] = {}
