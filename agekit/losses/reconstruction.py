"""Per-sample reconstruction losses for the data space (eq. 3) and the latent space (eq. 4).

Scale convention
----------------
Every loss returns one number per sample, shape ``(B,)``; ``loss(target, reconstruction)`` is the
batch mean of that.

* ``L1Loss`` and ``L2Loss`` default to ``reduction="mean"``: the per-sample MEAN over the sample's
  elements (pixels x channels, or latent coordinates). This is the scale of the reference code (its
  L1 is PyTorch's mean absolute error), and the paper's weights (mu = 10 on the data term,
  lambda = 500..2000 on the latent term) were tuned at that scale. ``reduction="sum"`` gives the
  paper's literal eq. (3) ``||x - x'||_1`` and eq. (4) ``||z - z'||_2^2``; it is larger by the
  number of elements per sample (3072 for a 32 px RGB image), so weights must shrink to match.
* ``L2Loss`` is the SQUARED Euclidean distance (eq. 4), not the norm: its gradient stays finite
  at equality and it is what the paper writes.
* ``CosineLoss`` is ``1 - cos(target, reconstruction)`` on each flattened sample, in [0, 2]. On the
  unit sphere ``||z - z'||_2^2 = 2 - 2 cos``, so it is exactly half of ``L2Loss(reduction="sum")``
  there. The reference code's latent 'cos' loss is instead ``2 - mean over all B*M elements of the
  product of normalised codes`` = ``2 - mean_b(cos_b) / M``; its gradient is ``1/M`` of this one's,
  so a reference latent weight w corresponds to w / M here (1000 at M = 64 -> about 16).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from agekit.components import ComponentInputError, ReconstructionLoss

__all__ = ["CosineLoss", "L1Loss", "L2Loss"]


def _flat_pair(
    loss: ReconstructionLoss, target: Tensor, reconstruction: Tensor
) -> tuple[Tensor, Tensor]:
    """Both inputs as (B, N); checks shapes too, as ``per_sample`` may be called directly."""
    name = type(loss).__name__
    if target.shape != reconstruction.shape:
        raise ComponentInputError(
            f"{name}: target shape {tuple(target.shape)} differs from "
            f"reconstruction shape {tuple(reconstruction.shape)}"
        )
    if target.ndim < 1:
        raise ComponentInputError(f"{name}: inputs need a batch dimension, got a 0-dim tensor")
    batch = target.shape[0]
    return target.reshape(batch, -1), reconstruction.reshape(batch, -1)


class _ElementwiseLoss(ReconstructionLoss):
    def __init__(self, reduction: Literal["mean", "sum"] = "mean") -> None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction

    def _reduce(self, elementwise: Tensor) -> Tensor:
        return elementwise.mean(dim=1) if self.reduction == "mean" else elementwise.sum(dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class L1Loss(_ElementwiseLoss):
    """Absolute error per sample: mean (default) or sum (eq. 3's ||x - x'||_1) over elements."""

    def per_sample(self, target: Tensor, reconstruction: Tensor) -> Tensor:
        t, r = _flat_pair(self, target, reconstruction)
        return self._reduce((t - r).abs())


class L2Loss(_ElementwiseLoss):
    """Squared error per sample: mean (default) or sum (eq. 4's ||z - z'||_2^2) over elements."""

    def per_sample(self, target: Tensor, reconstruction: Tensor) -> Tensor:
        t, r = _flat_pair(self, target, reconstruction)
        return self._reduce((t - r).square())


class CosineLoss(ReconstructionLoss):
    """``1 - cos(target, reconstruction)`` per flattened sample, in [0, 2].

    Each vector is divided by ``max(||v||, eps)``. A zero vector therefore has cosine 0 with
    anything (loss 1) instead of NaN, and because the clamp acts on the squared norm before the
    square root, the gradient at a zero vector is finite too (``torch.linalg.norm`` at 0 is not
    differentiable). ``eps`` changes nothing for vectors longer than ``eps``.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.eps = float(eps)

    def per_sample(self, target: Tensor, reconstruction: Tensor) -> Tensor:
        t, r = _flat_pair(self, target, reconstruction)
        floor = self.eps**2
        t_norm = t.square().sum(dim=1).clamp_min(floor).sqrt()
        r_norm = r.square().sum(dim=1).clamp_min(floor).sqrt()
        cosine = (t * r).sum(dim=1) / (t_norm * r_norm)
        # Rounding can push cos a hair past 1 for parallel vectors; a loss must not go negative.
        return (1.0 - cosine).clamp_min(0.0)

    def __repr__(self) -> str:
        return f"CosineLoss(eps={self.eps:g})"
