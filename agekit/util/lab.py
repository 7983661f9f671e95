"""sRGB <-> CIE Lab (D65, 2 degree observer) in torch, differentiable, matching scikit-image.

Same constants and branch points as ``skimage.color.rgb2lab`` / ``lab2rgb`` (scikit-image 0.26):
sRGB companding (threshold 0.04045 / 0.0031308), the ``xyz_from_rgb`` matrix of scikit-image and
its inverse, the D65 white (0.95047, 1, 1.08883), and the CIE ``f`` with threshold 0.008856 and
the linear branch 7.787 t + 16/116. ``lab_to_rgb`` sets negative Z (f_z < 0) to 0 and clips the
result to [0, 1], as scikit-image does.

Layout: channels first, ``(..., 3, H, W)``; RGB in [0, 1]; L in [0, 100], a and b roughly in
[-110, 110]. Every branch is evaluated on clamped inputs inside ``torch.where`` so gradients stay
finite (no cube root or 1/2.4 power of 0).

Network scaling (:func:`lab_to_network` / :func:`network_to_lab`): the condition is
``L / 50 - 1`` in [-1, 1]; the target x is ``ab / AB_SCALE`` with ``AB_SCALE = 110``: every sRGB
colour has a in [-86.2, 98.3] and b in [-107.9, 94.5], so x lies in [-0.99, 0.90] and a tanh
generator can reach every in-gamut colour.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "AB_SCALE",
    "lab_to_network",
    "lab_to_rgb",
    "network_to_lab",
    "network_to_rgb",
    "rgb_to_lab",
    "rgb_to_network",
]

#: ab are divided by this to become the network's x (see the module docstring).
AB_SCALE = 110.0

_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)


def _matrix(x: Tensor, inverse: bool) -> Tensor:
    m = torch.tensor(_XYZ_FROM_RGB, dtype=torch.float64)
    if inverse:
        m = torch.linalg.inv(m)
    return m.to(dtype=x.dtype, device=x.device)


def _apply(m: Tensor, x: Tensor) -> Tensor:
    """Apply a 3x3 matrix over the channel axis (-3) of (..., 3, H, W)."""
    return torch.einsum("ij,...jhw->...ihw", m, x)


def _white(x: Tensor) -> Tensor:
    return torch.tensor(_WHITE_D65, dtype=x.dtype, device=x.device).view(3, 1, 1)


def _check(x: Tensor, name: str) -> None:
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name}: expected (..., 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating tensor, got {x.dtype}")


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1], (..., 3, H, W) -> Lab (L in [0, 100]), as ``skimage.color.rgb2lab``."""
    _check(rgb, "rgb_to_lab")
    high = ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4
    linear = torch.where(rgb > 0.04045, high, rgb / 12.92)
    xyz = _apply(_matrix(rgb, inverse=False), linear) / _white(rgb)
    cube = xyz.clamp_min(0.008856) ** (1.0 / 3.0)
    f = torch.where(xyz > 0.008856, cube, 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-3)
    lightness = 116.0 * fy - 16.0
    return torch.stack([lightness, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """Lab (..., 3, H, W) -> sRGB in [0, 1], as ``skimage.color.lab2rgb`` (clipped)."""
    _check(lab, "lab_to_rgb")
    lightness, a, b = lab.unbind(-3)
    fy = (lightness + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = (fy - b / 200.0).clamp_min(0.0)
    f = torch.stack([fx, fy, fz], dim=-3)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / 7.787) * _white(lab)
    linear = _apply(_matrix(lab, inverse=True), xyz)
    high = 1.055 * linear.clamp_min(0.0031308) ** (1.0 / 2.4) - 0.055
    rgb = torch.where(linear > 0.0031308, high, 12.92 * linear)
    return rgb.clamp(0.0, 1.0)


def lab_to_network(lab: Tensor) -> tuple[Tensor, Tensor]:
    """Lab (..., 3, H, W) -> (x = ab / AB_SCALE, condition = L / 50 - 1)."""
    return lab[..., 1:, :, :] / AB_SCALE, lab[..., :1, :, :] / 50.0 - 1.0


def network_to_lab(x: Tensor, condition: Tensor) -> Tensor:
    """Inverse of :func:`lab_to_network`: (ab / AB_SCALE, L / 50 - 1) -> Lab."""
    return torch.cat([(condition + 1.0) * 50.0, x * AB_SCALE], dim=-3)


def rgb_to_network(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """sRGB in [0, 1] -> (x, condition) in the networks' scaling."""
    return lab_to_network(rgb_to_lab(rgb))


def network_to_rgb(x: Tensor, condition: Tensor) -> Tensor:
    """(x, condition) in the networks' scaling -> sRGB in [0, 1]."""
    return lab_to_rgb(network_to_lab(x, condition))
