"""Per-sample reconstruction losses for the data and the latent space."""

from agekit.losses.reconstruction import CosineLoss, L1Loss, L2Loss

__all__ = ["CosineLoss", "L1Loss", "L2Loss"]
