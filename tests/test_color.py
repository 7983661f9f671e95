"""agekit.util.lab against scikit-image on random images.

Tolerances: in float64 the torch code evaluates the same formulas, constants and branch points as
scikit-image, so the only differences are rounding (measured ~2e-13 Lab units); 1e-8 leaves room
for other BLAS/einsum orderings and still catches any wrong constant (the smallest constant
change, a threshold digit, moves values by >1e-6). In float32 the relative precision is ~1.2e-7 on
values up to ~100 (L, a, b), amplified by the cube root near its threshold: measured 4.4e-5 Lab
units, bound 1e-3 Lab units (far below a visible difference of ~1) and 1e-5 in RGB.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from skimage.color import lab2rgb, rgb2lab

from agekit.util.lab import (
    AB_SCALE,
    lab_to_rgb,
    network_to_rgb,
    rgb_to_lab,
    rgb_to_network,
)


def _random_rgb(seed: int) -> np.ndarray:
    rgb = np.random.default_rng(seed).random((6, 12, 10, 3))
    rgb[0] = 0.0  # black
    rgb[1] = 1.0  # white
    rgb[2, :, :, 1:] = 0.0  # saturated reds
    rgb[3] *= 0.05  # dark values, the linear branches of both curves
    return rgb


def _chw(x: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).to(dtype)


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).double().numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rgb_to_lab_matches_skimage(seed: int) -> None:
    rgb = _random_rgb(seed)
    expected = rgb2lab(rgb)
    assert np.abs(_hwc(rgb_to_lab(_chw(rgb))) - expected).max() < 1e-8
    assert np.abs(_hwc(rgb_to_lab(_chw(rgb, torch.float32))) - expected).max() < 1e-3


@pytest.mark.parametrize("seed", [0, 1])
def test_lab_to_rgb_matches_skimage_including_out_of_gamut(seed: int) -> None:
    lab = np.random.default_rng(seed).uniform([0, -110, -110], [100, 110, 110], (5, 9, 7, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns about negative Z, clipped like ours
        expected = lab2rgb(lab)
    assert np.abs(_hwc(lab_to_rgb(_chw(lab))) - expected).max() < 1e-8
    assert np.abs(_hwc(lab_to_rgb(_chw(lab, torch.float32))) - expected).max() < 1e-5


def test_round_trip_and_network_scaling() -> None:
    rgb = _chw(_random_rgb(3))
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-10)
    x, condition = rgb_to_network(rgb)
    assert x.shape == (6, 2, 12, 10) and condition.shape == (6, 1, 12, 10)
    assert float(condition.min()) >= -1.0 - 1e-9 and float(condition.max()) <= 1.0 + 1e-9
    assert float(x.abs().max()) < 1.0  # every sRGB colour has |a|, |b| < AB_SCALE
    assert torch.allclose(network_to_rgb(x, condition), rgb, atol=1e-10)
    grey = torch.full((1, 3, 4, 4), 0.4, dtype=torch.float64)
    # grey is neutral up to the ~2e-3 ab that skimage's matrix rows vs its D65 white leave too
    assert float(rgb_to_network(grey)[0].abs().max()) * AB_SCALE < 1e-2
    expected = rgb2lab(grey.permute(0, 2, 3, 1).numpy())[..., 1:]
    assert np.abs(_hwc(rgb_to_lab(grey))[..., 1:] - expected).max() < 1e-8


def test_conversions_are_differentiable_with_finite_gradients() -> None:
    rgb = _chw(_random_rgb(4)).requires_grad_(True)
    rgb_to_lab(rgb).sum().backward()
    assert rgb.grad is not None and bool(torch.isfinite(rgb.grad).all())
    lab = torch.tensor([[[[0.0]], [[0.0]], [[0.0]]], [[[50.0]], [[20.0]], [[-30.0]]]])
    lab = lab.double().requires_grad_(True)
    lab_to_rgb(lab).sum().backward()
    assert lab.grad is not None and bool(torch.isfinite(lab.grad).all())
    assert torch.autograd.gradcheck(
        rgb_to_lab,
        (torch.rand(1, 3, 2, 2, dtype=torch.float64).mul(0.8).add(0.1).requires_grad_(True),),
    )


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="3, H, W"):
        rgb_to_lab(torch.zeros(2, 4, 4))
