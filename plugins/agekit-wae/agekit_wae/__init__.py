"""agekit-wae: the Wasserstein auto-encoder with an MMD penalty (WAE-MMD) as an agekit game."""

from agekit_wae.wae import KERNEL_SCALES, WAEMMD, WAEPlay, imq_mmd

__all__ = ["KERNEL_SCALES", "WAEMMD", "WAEPlay", "imq_mmd"]
