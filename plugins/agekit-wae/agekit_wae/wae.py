"""WAE-MMD (Tolstikhin, Bousquet, Gelly & Schoelkopf, "Wasserstein Auto-Encoders", ICLR 2018) as
an agekit game.

A deterministic encoder e (agekit's encoders are) and a generator g, trained together by one
optimiser on

    loss = w * L_X(x, g(e(x))) + lambda * MMD_k(e(x), z),      z ~ prior (the batch's own draws)

with MMD_k the unbiased U-statistic estimate of MMD^2 and k the reference code's kernel: a sum of
inverse multiquadratics C_s / (C_s + ||a - b||^2) over C_s = s * C for s in KERNEL_SCALES, where
C = 2 * sum_j Var_prior[z_j] (the paper's C = 2 d_z sigma_z^2 for N(0, sigma_z^2 I); 2 on the unit
sphere). No adversary and no configured divergence: the penalty is the game's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from agekit.components import Encoder, Generator, Prior, ReconstructionLoss
from agekit.games.base import Game, GameBatch, GameParts, Phase, Play, StepLosses

__all__ = ["KERNEL_SCALES", "REFERENCE_COST_WEIGHT", "WAEMMD", "WAEPlay", "imq_mmd"]

#: The multiples of C whose kernels the reference code sums (tolstikhin/wae, wae.py mmd_penalty):
#: no single width has to be right for codes that start far from the prior.
KERNEL_SCALES: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
#: The reference's squared-L2 cost is c(x, y) = 0.05 * ||x - y||^2 (summed over the elements).
REFERENCE_COST_WEIGHT = 0.05


def _sq_distances(a: Tensor, b: Tensor) -> Tensor:
    """||a_i - b_j||^2 in the Gram form (no B x B x M tensor, no square root to make a gradient
    infinite at coincident codes); rounding can leave tiny negatives, clamped to 0."""
    aa, bb = (a * a).sum(dim=1), (b * b).sum(dim=1)
    return (aa[:, None] + bb[None, :] - 2.0 * (a @ b.T)).clamp_min(0.0)


def _off_diagonal_mean(k: Tensor) -> Tensor:
    # The U-statistic leaves out i == j (a point's kernel with itself says nothing about Q).
    n = k.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=k.device)
    return k.masked_fill(eye, 0.0).sum() / (n * (n - 1))


def imq_mmd(codes: Tensor, samples: Tensor, base: float, scales: Sequence[float]) -> Tensor:
    """Unbiased MMD^2 between codes (n, M) and prior samples (m, M), n, m >= 2, under the kernel
    sum over C = s * base of C / (C + ||a - b||^2)."""
    d_xx, d_yy, d_xy = (
        _sq_distances(codes, codes),
        _sq_distances(samples, samples),
        _sq_distances(codes, samples),
    )
    total = codes.new_zeros(())
    for scale in scales:
        c = scale * base
        k_xx, k_yy, k_xy = c / (c + d_xx), c / (c + d_yy), c / (c + d_xy)
        total = total + _off_diagonal_mean(k_xx) + _off_diagonal_mean(k_yy) - 2.0 * k_xy.mean()
    return total


class WAEPlay(Play):
    """WAE-MMD bound to its networks: one update of encoder and generator together."""

    def __init__(
        self,
        encoder: Encoder,
        generator: Generator,
        prior: Prior,
        data_loss: ReconstructionLoss,
        mmd_weight: float,
        data_weight: float | None,
        kernel_scales: Sequence[float],
        gather: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.encoder, self.generator, self.prior = encoder, generator, prior
        self.data_loss = data_loss
        self.mmd_weight, self.data_weight = mmd_weight, data_weight
        self.kernel_scales = tuple(kernel_scales)
        #: As in the other games: a multi-process trainer's all-gather of the codes, so the batch
        #: statistic sees the global batch. None is the identity.
        self.gather = gather
        # C at the prior's typical squared distance between two draws, 2 * sum(var).
        self.kernel_base = 2.0 * float(prior.variance().sum())

    def phases(self) -> list[Phase]:
        return [Phase("autoencoder", self._phase, label="data_rec, mmd")]

    def _phase(self, batch: GameBatch) -> StepLosses:
        return self.step(batch.x, batch.sample_z(batch.size), batch.condition)

    def weight_of_data(self, x: Tensor) -> float:
        """w: the given number, or 0.05 N for samples of N elements (with the per-element mean
        squared error, l2, w L_X is the reference's 0.05 ||x - g(e(x))||^2)."""
        if self.data_weight is not None:
            return self.data_weight
        return REFERENCE_COST_WEIGHT * x[0].numel()

    def step(self, x: Tensor, z: Tensor, condition: Tensor | None = None) -> StepLosses:
        codes = self.encoder(x, condition)
        data_rec = self.data_loss(x, self.generator(codes, condition))
        gathered = codes if self.gather is None else self.gather(codes)
        samples = z.to(device=codes.device, dtype=codes.dtype)
        mmd = imq_mmd(gathered, samples, self.kernel_base, self.kernel_scales)
        loss = self.weight_of_data(x) * data_rec + self.mmd_weight * mmd
        return StepLosses(loss, {"data_rec": data_rec, "mmd": mmd})


class WAEMMD(Game):
    """WAE-MMD; registered as ``wae-mmd``.

    Options (defaults from the reference code's MNIST and CelebA configurations, tolstikhin/wae
    ``configs.py``: lambda = 10, IMQ kernel, squared-L2 cost weighted 0.05):
        mmd_weight: lambda, the weight of the MMD penalty.
        data_weight: w, the weight of the configured data loss; None: 0.05 x the elements of a
            sample, the reference's cost when ``game.data_loss`` is ``l2`` (a per-element mean).
        kernel_scales: the multiples of C = 2 * sum(prior variance) whose IMQ kernels are summed.
    """

    term_labels: ClassVar[Mapping[str, str]] = {"data_rec": "L_X", "mmd": "MMD"}
    #: The penalty is the game's own MMD; the configured divergence is not used.
    uses_divergence = False

    def __init__(
        self,
        mmd_weight: float = 10.0,
        data_weight: float | None = None,
        kernel_scales: tuple[float, ...] = KERNEL_SCALES,
    ) -> None:
        if not (math.isfinite(mmd_weight) and mmd_weight >= 0):
            raise ValueError(f"mmd_weight must be a finite number >= 0, got {mmd_weight}")
        if data_weight is not None and not (math.isfinite(data_weight) and data_weight >= 0):
            raise ValueError(f"data_weight must be a finite number >= 0 or None, got {data_weight}")
        if not kernel_scales or not all(math.isfinite(s) and s > 0 for s in kernel_scales):
            raise ValueError(f"kernel_scales must be positive numbers, got {kernel_scales}")
        self.mmd_weight = float(mmd_weight)
        self.data_weight = data_weight
        self.kernel_scales = tuple(float(s) for s in kernel_scales)

    def optimisers(self) -> dict[str, tuple[str, ...]]:
        """One optimiser over both networks: the objective is a single loss, not a game."""
        return {"autoencoder": ("encoder", "generator")}

    def bind(self, parts: GameParts) -> WAEPlay:
        return WAEPlay(
            parts.encoder,
            parts.generator,
            parts.prior,
            parts.data_loss,
            self.mmd_weight,
            self.data_weight,
            self.kernel_scales,
            gather=parts.gather,
        )
