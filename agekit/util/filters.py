"""Fixed low-pass image filters, differentiable, for (B, C, H, W) batches.

The game can measure its latent term on a low-passed g(z), and the dcgan encoder can read its
input through one: either way, codes cannot be carried by pixel-scale patterns that a person sees
as speckle (docs/method.md, "Speckle"). The metrics use the median filter to measure that speckle.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur as _torchvision_blur

__all__ = ["LOW_PASS_FILTERS", "gaussian_blur", "low_pass", "median_filter"]

LOW_PASS_FILTERS = ("none", "gaussian", "median")


def median_filter(images: Tensor, size: int = 3) -> Tensor:
    """Per-channel ``size`` x ``size`` median, edges replicated (the gradient reaches the median
    pixel of each window)."""
    pad = size // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    windows = padded.unfold(2, size, 1).unfold(3, size, 1)
    return windows.reshape(*windows.shape[:4], size * size).median(dim=-1).values


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels, edges reflected."""
    # A kernel of +-2 sigma: the weights it leaves out are below 2 % of the centre's.
    size = 2 * max(1, math.ceil(2 * sigma)) + 1
    return _torchvision_blur(images, [size, size], [sigma, sigma])


def low_pass(kind: str, sigma: float = 1.0) -> Callable[[Tensor], Tensor] | None:
    """The filter ``kind`` (one of :data:`LOW_PASS_FILTERS`) as a function; None for 'none'."""
    if kind == "none":
        return None
    if kind == "median":
        return median_filter
    if kind == "gaussian":
        return lambda images: gaussian_blur(images, sigma)
    raise ValueError(f"unknown low-pass filter {kind!r}: expected one of {LOW_PASS_FILTERS}")
