"""agekit-priors: extra latent priors for agekit."""

from agekit_priors.mixture import GaussianMixturePrior

__all__ = ["GaussianMixturePrior"]
