"""L1, squared L2 and cosine reconstruction losses against float64 hand computations."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import agekit
from agekit.components import ComponentInputError, ReconstructionLoss
from agekit.losses import CosineLoss, L1Loss, L2Loss
from agekit.registry import ComponentOptionsError

T = torch.tensor


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny tensors: intra-op threads only add spin-wait overhead on a shared 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_l1_l2_hand_computed() -> None:
    target = T([[1.0, -2.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    recon = T([[0.0, 1.0, 0.5, -1.0], [2.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    # |diffs| row 0: 1, 3, 0, 1; row 1: 2, 0, 0, 0.
    torch.testing.assert_close(L1Loss().per_sample(target, recon), T([5 / 4, 2 / 4]).double())
    torch.testing.assert_close(
        L1Loss(reduction="sum").per_sample(target, recon), T([5.0, 2.0]).double()
    )
    torch.testing.assert_close(L2Loss().per_sample(target, recon), T([11 / 4, 4 / 4]).double())
    torch.testing.assert_close(
        L2Loss(reduction="sum").per_sample(target, recon), T([11.0, 4.0]).double()
    )
    # __call__ is the batch mean of the per-sample values.
    torch.testing.assert_close(L1Loss()(target, recon), T((5 / 4 + 2 / 4) / 2).double())


def test_images_are_flattened_per_sample() -> None:
    torch.manual_seed(0)
    a, b = (
        torch.randn(3, 2, 4, 4, dtype=torch.float64),
        torch.randn(3, 2, 4, 4, dtype=torch.float64),
    )
    expected_l1 = torch.stack([(a[i] - b[i]).abs().mean() for i in range(3)])
    expected_l2 = torch.stack([((a[i] - b[i]) ** 2).sum() for i in range(3)])
    torch.testing.assert_close(L1Loss().per_sample(a, b), expected_l1)
    torch.testing.assert_close(L2Loss(reduction="sum").per_sample(a, b), expected_l2)
    cos = torch.stack(
        [a[i].flatten() @ b[i].flatten() / (a[i].norm() * b[i].norm()) for i in range(3)]
    )
    torch.testing.assert_close(CosineLoss().per_sample(a, b), 1 - cos)


def test_cosine_hand_computed() -> None:
    target = T([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    recon = T([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0], [1.0, 1.0]], dtype=torch.float64)
    expected = T([1.0, 0.0, 2.0, 1 - 1 / math.sqrt(2)], dtype=torch.float64)
    torch.testing.assert_close(CosineLoss().per_sample(target, recon), expected)


def test_cosine_is_half_squared_l2_on_the_sphere() -> None:
    torch.manual_seed(1)
    z1 = torch.nn.functional.normalize(torch.randn(16, 8, dtype=torch.float64), dim=1)
    z2 = torch.nn.functional.normalize(torch.randn(16, 8, dtype=torch.float64), dim=1)
    torch.testing.assert_close(
        CosineLoss().per_sample(z1, z2), 0.5 * L2Loss(reduction="sum").per_sample(z1, z2)
    )


LOSSES: list[ReconstructionLoss] = [
    L1Loss(),
    L1Loss(reduction="sum"),
    L2Loss(),
    L2Loss(reduction="sum"),
    CosineLoss(),
]


@pytest.mark.parametrize("loss", LOSSES, ids=repr)
def test_zero_at_equality_and_per_sample_shape(loss: ReconstructionLoss) -> None:
    torch.manual_seed(2)
    for shape in [(5,), (5, 3), (5, 1, 8, 8)]:
        x = torch.randn(*shape)
        values = loss.per_sample(x, x.clone())
        assert values.shape == (5,)
        torch.testing.assert_close(values, torch.zeros(5), atol=1e-6, rtol=0)
        assert loss(x, x).ndim == 0


@pytest.mark.parametrize("loss", LOSSES, ids=repr)
def test_shape_mismatch_is_rejected(loss: ReconstructionLoss) -> None:
    with pytest.raises(ComponentInputError, match="differs"):
        loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ComponentInputError, match="differs"):
        loss.per_sample(torch.zeros(4, 3), torch.zeros(3, 3))
    with pytest.raises(ComponentInputError, match="batch"):
        loss.per_sample(torch.tensor(1.0), torch.tensor(2.0))


finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda n: st.tuples(
            st.lists(st.lists(finite, min_size=n, max_size=n), min_size=1, max_size=4),
            st.lists(st.lists(finite, min_size=n, max_size=n), min_size=1, max_size=4),
        )
    )
)
def test_nonnegative(pair: tuple[list[list[float]], list[list[float]]]) -> None:
    rows = min(len(pair[0]), len(pair[1]))
    a, b = T(pair[0][:rows]), T(pair[1][:rows])
    for loss in LOSSES:
        values = loss.per_sample(a, b)
        assert values.shape == (rows,)
        assert bool((values >= 0).all()), (loss, a, b, values)
        assert bool(torch.isfinite(values).all())
    cos = CosineLoss().per_sample(a, b)
    assert bool((cos <= 2 + 1e-6).all())
    # Positive rescaling leaves the cosine loss unchanged, for vectors longer than eps (shorter ones
    # are divided by eps instead of their norm, by design).
    long = (a.norm(dim=1) > 1e-6) & (b.norm(dim=1) > 1e-6)
    rescaled = CosineLoss().per_sample(a * 3, b)
    torch.testing.assert_close(rescaled[long], cos[long], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cosine_zero_vectors_have_finite_values_and_gradients(dtype: torch.dtype) -> None:
    target = torch.zeros(3, 4, dtype=dtype, requires_grad=True)
    recon = T([[0.0] * 4, [1.0, 2.0, 3.0, 4.0], [1e-12, 0.0, 0.0, 0.0]], dtype=dtype)
    recon.requires_grad_(True)
    values = CosineLoss().per_sample(target, recon)
    torch.testing.assert_close(values, torch.ones(3, dtype=dtype))
    values.sum().backward()
    assert target.grad is not None and recon.grad is not None
    assert bool(torch.isfinite(target.grad).all()) and bool(torch.isfinite(recon.grad).all())


def test_l1_l2_gradients_finite_at_equality() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    (L1Loss()(x, x.detach()) + L2Loss()(x, x.detach())).backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_registry_creation_and_options() -> None:
    assert isinstance(agekit.create("loss", "l1"), L1Loss)
    assert agekit.create("loss", "l2", reduction="sum").reduction == "sum"
    assert agekit.create("loss", "cosine", eps=1e-6).eps == 1e-6
    with pytest.raises(ComponentOptionsError):
        agekit.create("loss", "l1", reduction="max")
    with pytest.raises(ComponentOptionsError):
        agekit.create("loss", "cosine", eps=0.0)
    with pytest.raises(ComponentOptionsError):
        agekit.create("loss", "cosine", reduction="sum")
