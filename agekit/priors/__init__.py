"""Priors: the paper's uniform distribution on the sphere and the standard Gaussian."""

from agekit.priors.standard import GaussianPrior, SpherePrior

__all__ = ["GaussianPrior", "SpherePrior"]
