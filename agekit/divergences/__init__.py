"""Built-in divergences between a batch of codes and the prior (registered via entry points)."""

from __future__ import annotations

from agekit.divergences.gaussian_kl import GaussianKL, ReferenceCodeGaussianKL
from agekit.divergences.kozachenko_leonenko import KozachenkoLeonenko

__all__ = ["GaussianKL", "KozachenkoLeonenko", "ReferenceCodeGaussianKL"]
