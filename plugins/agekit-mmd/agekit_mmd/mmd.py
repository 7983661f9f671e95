"""Unbiased MMD^2 between a batch of codes and fresh draws from the prior (as in WAE-MMD).

Only ``prior.sample`` is used, so any prior works, including ones without closed-form moments.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from agekit.components import Divergence, DivergenceGuarantees, Prior

__all__ = ["MMD", "pairwise_sq_distances"]


def pairwise_sq_distances(x: Tensor, y: Tensor) -> Tensor:
    """||x_i - y_j||^2, shape (len(x), len(y)).

    The Gram form needs B x B memory instead of the B x B x M of explicit differences, and it has
    no square root, so coincident codes keep a finite gradient. Cancellation can leave tiny
    negative values; they are clamped to 0.
    """
    xx = (x * x).sum(dim=1)
    yy = (y * y).sum(dim=1)
    return (xx[:, None] + yy[None, :] - 2.0 * (x @ y.T)).clamp_min(0.0)


def _off_diagonal_mean(k: Tensor) -> Tensor:
    # The U-statistic leaves out i == j; masking (rather than subtracting the diagonal's sum)
    # avoids cancellation against the large full sum.
    n = k.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=k.device)
    return k.masked_fill(eye, 0.0).sum() / (n * (n - 1))


class MMD(Divergence):
    """Unbiased estimate of MMD^2(Q, prior) from one batch of codes and fresh prior samples.

    With X the B codes and Y the m prior samples (drawn on every call)::

        MMD^2_u = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)

    Options:
        n_prior_samples: m, the prior draws per call (>= 2); ``None`` uses m = B.
        kernel: ``"imq"`` (default), k = C / (C + ||x - y||^2), the inverse multiquadric WAE
            recommends: its heavy tails keep a gradient for codes far from the prior samples.
            ``"rbf"``: k = exp(-||x - y||^2 / h).
        bandwidth: the kernel's squared length scale (C for imq, h for rbf). ``None``: for imq,
            C = 2 * sum_j Var_prior[z_j], WAE's C = 2 M sigma^2 (2M for N(0, I), 2 on the sphere);
            for rbf, the median heuristic h = median of the pairwise squared distances in X and Y
            pooled, computed without gradient.
        seed: seeds a fresh ``torch.Generator`` on the codes' device for the prior draws on every
            call, so the same codes always give the same value (required by the conformance kit's
            permutation check), at the price of comparing against the same m prior points at
            every training step. ``None`` (default) draws from torch's global RNG: new prior
            samples each call, which is what training wants. Seeded values are reproducible per
            device type (CPU and CUDA generators produce different streams).

    The estimator is unbiased for a fixed kernel (imq, or rbf with an explicit bandwidth), so it
    can be slightly negative on a single batch; its expectation is MMD^2 >= 0, 0 iff Q = prior
    (both kernels are characteristic).
    """

    guarantees: ClassVar[DivergenceGuarantees] = DivergenceGuarantees(
        nonnegative="expectation",
        zero_at_equality="expectation",
        # Read at the conformance kit's B = m = 128, where one batch's value has sd 0.0015-0.0053
        # (unseeded, 2000 batches per prior; lowest single value -0.0084). The mean over fresh
        # draws is 0 within 2 standard errors (imq; rbf's data-dependent bandwidth adds < 3e-4).
        # A fixed seed reuses one prior sample, whose offset does not average out over batches:
        # across seeds 0-99 the 16-batch mean had sd <= 0.0029 and |mean| - 4 se <= 0.0042.
        # 0.01 covers that worst case with room; the noise scales as 1/B (0.02 at B = 64).
        tolerance=0.01,
        supports=("sphere", "euclidean"),
    )

    def __init__(
        self,
        n_prior_samples: int | None = None,
        kernel: Literal["rbf", "imq"] = "imq",
        bandwidth: float | None = None,
        seed: int | None = None,
    ) -> None:
        if n_prior_samples is not None and n_prior_samples < 2:
            raise ValueError(f"n_prior_samples must be >= 2 or None, got {n_prior_samples}")
        if kernel not in ("rbf", "imq"):
            raise ValueError(f"kernel must be 'rbf' or 'imq', got {kernel!r}")
        if bandwidth is not None and not bandwidth > 0.0:
            raise ValueError(f"bandwidth must be > 0 or None, got {bandwidth}")
        self.n_prior_samples = n_prior_samples
        self.kernel = kernel
        self.bandwidth = None if bandwidth is None else float(bandwidth)
        self.seed = seed

    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        n = codes.shape[0]
        m = self.n_prior_samples if self.n_prior_samples is not None else n
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=codes.device)
            generator.manual_seed(self.seed)
        samples = prior.sample(m, generator, device=codes.device, dtype=codes.dtype)

        d_xx = pairwise_sq_distances(codes, codes)
        d_yy = pairwise_sq_distances(samples, samples)
        d_xy = pairwise_sq_distances(codes, samples)
        scale = self._scale(prior, d_xx, d_yy, d_xy)
        k_xx, k_yy, k_xy = (self._kernel(d, scale) for d in (d_xx, d_yy, d_xy))
        return _off_diagonal_mean(k_xx) + _off_diagonal_mean(k_yy) - 2.0 * k_xy.mean()

    def _kernel(self, sq_dist: Tensor, scale: float) -> Tensor:
        if self.kernel == "imq":
            return scale / (scale + sq_dist)
        return torch.exp(-sq_dist / scale)

    def _scale(self, prior: Prior, d_xx: Tensor, d_yy: Tensor, d_xy: Tensor) -> float:
        if self.bandwidth is not None:
            return self.bandwidth
        # WAE's C = 2 M sigma^2, generalised to unequal coordinates: the expected squared distance
        # between two prior draws is 2 * sum(var), so C sits at the prior's typical pair distance.
        prior_scale = 2.0 * float(prior.variance().sum())
        if self.kernel == "imq":
            return prior_scale
        with torch.no_grad():
            n, m = d_xx.shape[0], d_yy.shape[0]
            pooled = torch.cat(
                [
                    d_xx[torch.triu_indices(n, n, 1, device=d_xx.device).unbind()],
                    d_yy[torch.triu_indices(m, m, 1, device=d_yy.device).unbind()],
                    d_xy.flatten(),
                ]
            )
            median = float(pooled.median())
        # All codes and samples coincident (median 0) would make exp(-d/0) undefined.
        return median if median > 0.0 else prior_scale

    def __repr__(self) -> str:
        return (
            f"MMD(kernel={self.kernel!r}, bandwidth={self.bandwidth}, "
            f"n_prior_samples={self.n_prior_samples}, seed={self.seed})"
        )
