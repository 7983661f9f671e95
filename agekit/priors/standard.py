"""The paper's two priors: uniform on the unit sphere, and the standard Gaussian."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from agekit.components import ComponentInputError, Prior, log_sphere_area


class SpherePrior(Prior):
    """Uniform on S^{M-1} in R^M (the paper's default); encoders L2-normalise onto it."""

    support = "sphere"

    def __init__(self, dim: int = 64, support_tolerance: float = 1e-3) -> None:
        super().__init__(dim)
        if dim < 2:
            raise ValueError("the sphere prior needs dim >= 2 (S^{M-1} in R^M)")
        self.support_tolerance = support_tolerance

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        gauss = torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)
        return self.project(gauss)

    def project(self, raw: Tensor) -> Tensor:
        # eps keeps an all-zero raw output finite; it changes nothing for any nonzero vector.
        return torch.nn.functional.normalize(raw.flatten(1), dim=1, eps=1e-12)

    def mean(self) -> Tensor:
        return torch.zeros(self.dim, dtype=torch.float64)

    def variance(self) -> Tensor:
        # Coordinates are exchangeable and sum of squares is 1, so each has variance 1/M.
        return torch.full((self.dim,), 1.0 / self.dim, dtype=torch.float64)

    def entropy(self) -> float:
        return log_sphere_area(self.dim)

    def check_support(self, codes: Tensor, *, atol: float | None = None) -> None:
        tolerance = self.support_tolerance if atol is None else atol
        norms = codes.detach().norm(dim=1)
        worst = float((norms - 1).abs().max()) if codes.shape[0] else 0.0
        if worst > tolerance:
            raise ComponentInputError(
                f"codes are not on the unit sphere: the largest | ||code|| - 1 | is {worst:.3g} "
                f"(tolerance {tolerance:g}); pass codes through prior.project() first"
            )


class GaussianPrior(Prior):
    """N(0, I_M) in R^M; the encoder's output is used as is."""

    support = "euclidean"

    def __init__(self, dim: int = 64) -> None:
        super().__init__(dim)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        return torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)

    def project(self, raw: Tensor) -> Tensor:
        return raw.flatten(1)

    def mean(self) -> Tensor:
        return torch.zeros(self.dim, dtype=torch.float64)

    def variance(self) -> Tensor:
        return torch.ones(self.dim, dtype=torch.float64)

    def entropy(self) -> float:
        return 0.5 * self.dim * (1.0 + math.log(2 * math.pi))
