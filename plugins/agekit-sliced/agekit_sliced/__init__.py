"""agekit-sliced: the sliced Wasserstein distance to prior samples as a latent divergence."""

from agekit_sliced.sliced import SlicedWasserstein

__all__ = ["SlicedWasserstein"]
