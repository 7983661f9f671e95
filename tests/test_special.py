"""log_cap_fraction against scipy, closed forms and its own finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sps
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agekit.util.special import log_cap_fraction, log_cap_fraction_numpy

DIMS = [2, 3, 4, 16, 128, 512]


def scipy_log_cap_fraction(c: np.ndarray, dim: int) -> np.ndarray:
    """Straight from the definition (underflows for tiny caps, fine where it is finite)."""
    s = c**2 * (1 - c**2 / 4)
    i = sps.betainc((dim - 1) / 2, 0.5, s)
    with np.errstate(divide="ignore"):
        return np.log(np.where(c <= math.sqrt(2), i / 2, 1 - i / 2))


@pytest.mark.parametrize("dim", DIMS)
def test_matches_scipy_betainc(dim: int) -> None:
    c = np.linspace(0.05, 1.999, 400)
    ref = scipy_log_cap_fraction(c, dim)
    ok = ref > -600  # where scipy's incomplete beta has not underflowed
    got = log_cap_fraction(torch.tensor(c), dim).numpy()
    # Both are float64 evaluations of the same function; 1e-9 relative covers the different routes
    # (the series near underflow, betainc elsewhere, betaincc at the equator) and s computed
    # through exp(log s).
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-9, atol=1e-12)


def test_two_sphere_is_archimedes() -> None:
    # On S^2 a cap of chordal radius c has area pi c^2 (Archimedes), so F = c^2 / 4 exactly.
    c = torch.linspace(0.01, 1.99, 200, dtype=torch.float64)
    torch.testing.assert_close(log_cap_fraction(c, 3), torch.log(c**2 / 4), rtol=1e-12, atol=1e-12)


def test_circle_is_arc_length() -> None:
    # On S^1 the "cap" is an arc of angle 2 theta, theta = 2 asin(c / 2): F = theta / pi.
    c = torch.linspace(0.01, 1.99, 200, dtype=torch.float64)
    expected = torch.log(2 * torch.asin(c / 2) / math.pi)
    torch.testing.assert_close(log_cap_fraction(c, 2), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dim", DIMS)
def test_tiny_caps_do_not_underflow(dim: int) -> None:
    c = np.array([1e-150, 1e-30, 1e-8, 1e-3])
    got = log_cap_fraction_numpy(c, dim)
    assert np.isfinite(got).all()
    # Leading term: I_s(a, 1/2) ~ s^a / (a B(a, 1/2)) with s ~ c^2, so F ~ c^{M-1} / (2 a B).
    a = (dim - 1) / 2
    leading = (dim - 1) * np.log(c) - math.log(a) - sps.betaln(a, 0.5) - math.log(2)
    np.testing.assert_allclose(got[:3], leading[:3], rtol=1e-9)


def test_landmarks() -> None:
    for dim in DIMS:
        c = torch.tensor([0.0, math.sqrt(2), 2.0], dtype=torch.float64)
        got = log_cap_fraction(c, dim)
        assert got[0] == -math.inf
        assert math.isclose(float(got[1]), math.log(0.5), rel_tol=1e-12)  # a hemisphere
        assert float(got[2]) == 0.0  # the whole sphere


@pytest.mark.parametrize("dim", DIMS)
def test_gradcheck(dim: int) -> None:
    c = torch.tensor([0.01, 0.2, 0.9, 1.3, 1.5, 1.9], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: log_cap_fraction(t, dim), (c,))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(dim=st.integers(2, 600), c=st.floats(1e-3, 1.999))
def test_derivative_is_positive_and_matches_differences(dim: int, c: float) -> None:
    x = torch.tensor([c], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_cap_fraction(x, dim).sum(), x)
    h = 1e-6 * c
    numeric = (
        log_cap_fraction_numpy(np.array([c + h]), dim)
        - log_cap_fraction_numpy(np.array([c - h]), dim)
    )[0] / (2 * h)
    # A bigger cap always covers more; near the antipode in high dimension the true slope
    # (~ sin^(M-2) theta) is below the smallest float64 and rounds to 0 on both sides.
    assert float(grad) > 0 or (float(grad) == 0.0 and numeric == 0.0)
    # Central differences have O(h^2) truncation error (1e-5 relative is ample) and an absolute
    # rounding error of about 1e-16 / h < 1e-9 (it matters where F ~ 1 and the slope is ~1e-6).
    assert math.isclose(float(grad), numeric, rel_tol=1e-5, abs_tol=1e-9)


def test_float32_keeps_dtype_and_gradient() -> None:
    c = torch.tensor([0.5, 1.0, 1.6], dtype=torch.float32, requires_grad=True)
    out = log_cap_fraction(c, 64)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert c.grad is not None and c.grad.dtype == torch.float32
    assert torch.isfinite(c.grad).all()


def test_rejects_bad_dims() -> None:
    with pytest.raises(ValueError, match="dim >= 2"):
        log_cap_fraction(torch.tensor([0.5]), 1)
    with pytest.raises(TypeError):
        log_cap_fraction(torch.tensor([1]), 3)
