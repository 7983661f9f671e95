"""The conformance kit passes the built-ins and catches broken divergences, naming the property."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import Tensor

from agekit.components import Divergence, DivergenceGuarantees, Prior
from agekit.divergences import GaussianKL, KozachenkoLeonenko
from agekit.priors import GaussianPrior, SpherePrior
from agekit.testing import check_divergence, conformance_test, default_priors

# Small, fast settings for the catching tests; every broken divergence below fails on these.
FAST = {"priors": (SpherePrior(3), GaussianPrior(2)), "max_examples": 5, "n_batches": 8}


@pytest.mark.parametrize("name", ["gaussian-kl", "kozachenko-leonenko"])
@pytest.mark.parametrize("prior", default_priors(), ids=repr)
def test_builtins_conform(name: str, prior: Prior) -> None:
    report = check_divergence(name, priors=(prior,))
    assert report.passed and not report.skipped


def test_closed_forms_ran_where_declared() -> None:
    report = check_divergence(KozachenkoLeonenko, **FAST)
    assert any("von Mises-Fisher" in p for p in report.passed)
    assert any("diagonal Gaussian" in p for p in report.passed)
    # gaussian-kl does not estimate KL on the sphere: no vMF check for it
    report = check_divergence(GaussianKL, **FAST)
    assert not any("von Mises-Fisher" in p for p in report.passed)
    assert any("diagonal Gaussian" in p for p in report.passed)


def test_reference_code_mode_conforms_to_its_none_guarantees() -> None:
    report = check_divergence(lambda: GaussianKL(reference_code_variance=True), **FAST)
    assert any("zero at equality" in s for s in report.skipped)


test_kl_k1_one_liner = conformance_test(lambda: KozachenkoLeonenko(k=1), **FAST)


# broken divergences -------------------------------------------------------------------------------
class Base(Divergence):
    guarantees: ClassVar[DivergenceGuarantees] = DivergenceGuarantees(
        nonnegative="exact", zero_at_equality="population", tolerance=0.05
    )

    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        return GaussianKL().compute(codes, prior)


class Negative(Base):
    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        return super().compute(codes, prior) - 1.0


class NegativeInExpectation(Base):
    guarantees: ClassVar[DivergenceGuarantees] = DivergenceGuarantees(
        nonnegative="expectation", zero_at_equality="none", tolerance=0.05
    )

    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        return super().compute(codes, prior) - 0.5


class NotScalar(Base):
    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        return codes.var(dim=0)


class NaN(Base):
    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        return super().compute(codes, prior) * torch.nan


class Detached(Base):
    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        return super().compute(codes, prior).detach()


class NoValidation(Base):
    def __call__(self, codes: Tensor, prior: Prior) -> Tensor:
        return self.compute(codes, prior)


class OrderDependent(Base):
    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        return super().compute(codes, prior) + 0.01 * codes[0].square().sum()


class Biased(Base):
    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        return super().compute(codes, prior) + 0.5


class WrongDtype(Base):
    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        return super().compute(codes, prior).to(torch.float16)


class HalfTheKL(KozachenkoLeonenko):
    def __init__(self) -> None:
        super().__init__(per_dimension=False)  # in total nats the halving is far beyond tolerance

    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        return 0.5 * super().compute(codes, prior)


class NanGradOnDuplicates(Base):
    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        # sqrt at 0 has an infinite slope: NaN gradient when rows 0 and 1 coincide
        d = torch.sqrt((codes[0] - codes[1]).square().sum())
        return super().compute(codes, prior) + 1e-3 * d


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (Negative, "nonnegative (exact)"),
        (NegativeInExpectation, "nonnegative (expectation)"),
        (NotScalar, "result is not a scalar"),
        (NaN, "result is not finite"),
        (Detached, "grad path"),
        (NoValidation, "input error: "),
        (OrderDependent, "permutation invariance"),
        (Biased, "zero at equality (population)"),
        (WrongDtype, "dtype"),
        (HalfTheKL, "closed form"),
        (NanGradOnDuplicates, "finite gradient with duplicate codes"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_kit_catches(broken: type[Divergence], message: str) -> None:
    with pytest.raises(AssertionError, match=r"^\[") as info:
        check_divergence(broken, **FAST)
    assert message in str(info.value), str(info.value)
