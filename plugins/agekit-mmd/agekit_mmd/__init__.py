"""agekit-mmd: the maximum mean discrepancy between codes and prior samples as a divergence."""

from agekit_mmd.mmd import MMD, pairwise_sq_distances

__all__ = ["MMD", "pairwise_sq_distances"]
