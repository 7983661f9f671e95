"""The kit's entry points: :func:`check_divergence` runs every check of a divergence against each
prior, and :func:`conformance_test` wraps it as a pytest test."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from agekit.components import ComponentInputError, Divergence, DivergenceGuarantees, Prior
from agekit.priors import GaussianPrior, SpherePrior
from agekit.registry import create
from agekit.testing.checker import ConformanceReport
from agekit.testing.contract_checks import ContractChecks
from agekit.testing.statistical_checks import StatisticalChecks

DivergenceSource = Divergence | Callable[[], Divergence] | str


def default_priors() -> tuple[Prior, ...]:
    """Low and moderate dimensions for each support; small enough to keep the kit fast.

    Euclidean dimensions stay small because kNN-type estimators have a finite-sample bias in R^M
    that grows with M; a divergence's declared tolerance is read at these sizes.
    """
    return (SpherePrior(3), SpherePrior(16), GaussianPrior(2), GaussianPrior(4))


class DivergenceChecker(ContractChecks, StatisticalChecks):
    """Every check of one divergence against one prior."""


@contextmanager
def _single_threaded() -> Iterator[None]:
    # The kit evaluates hundreds of small batches, where starting torch's intra-op threads costs
    # more than the work itself. Restored on exit.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _resolve(source: DivergenceSource) -> Divergence:
    if isinstance(source, Divergence):
        return source
    made = create("divergence", source) if isinstance(source, str) else source()
    if not isinstance(made, Divergence):
        raise AssertionError(
            f"[{source!r}] declaration: the factory made {type(made).__name__}, not a Divergence"
        )
    return made


def check_divergence(
    divergence_or_factory: DivergenceSource,
    priors: Sequence[Prior] | None = None,
    *,
    max_examples: int = 10,
    batch_size: int = 128,
    n_batches: int = 16,
    closed_forms: Mapping[str, str] | None = None,
) -> ConformanceReport:
    """Check a divergence against the contract and its declared guarantees; raise on failure.

    Args:
        divergence_or_factory: an instance, a zero-argument factory (e.g. the class), or a
            registered name (created with default options).
        priors: the priors to check against (default :func:`default_priors`). Priors whose support
            the divergence does not declare are only checked to be refused.
        max_examples: hypothesis examples for the random-input properties.
        batch_size: batch size B of the statistical checks (zero at equality, nonnegativity in
            expectation, closed forms); declared tolerances are read at this B.
        n_batches: batches averaged in each statistical check.
        closed_forms: which closed-form families to compare against (see :mod:`agekit.testing`);
            default: the divergence's ``closed_form_families`` attribute, or none.

    Returns:
        a :class:`ConformanceReport` of the checks that ran.

    Raises:
        AssertionError: naming the property that failed, the prior and the input.
    """
    divergence = _resolve(divergence_or_factory)
    report = ConformanceReport(repr(divergence))
    guarantees = getattr(divergence, "guarantees", None)
    if not isinstance(guarantees, DivergenceGuarantees):
        raise AssertionError(f"[{divergence!r}] declaration: guarantees is {guarantees!r}")
    tolerance = guarantees.tolerance
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise AssertionError(f"[{divergence!r}] declaration: tolerance {tolerance!r} is not >= 0")
    families = (
        dict(getattr(divergence, "closed_form_families", {}))
        if closed_forms is None
        else dict(closed_forms)
    )
    scales = set(families.values())
    if len(scales) > 1:
        raise AssertionError(
            f"[{divergence!r}] declaration: closed_form_families {families} mix the scales "
            f"{sorted(scales)}; a value has one unit, KL or KL / M"
        )
    per_dimension = scales == {"kl-per-dim"}
    with _single_threaded():
        for prior in default_priors() if priors is None else priors:
            checker = DivergenceChecker(divergence, prior, report, per_dimension)
            _check_prior(checker, families, max_examples, batch_size, n_batches)
    return report


def _check_prior(
    checker: DivergenceChecker,
    families: Mapping[str, str],
    max_examples: int,
    batch_size: int,
    n_batches: int,
) -> None:
    divergence, prior, supports = checker.divergence, checker.prior, checker.guarantees.supports
    if prior.support not in supports:
        prop = "refuses an unsupported prior"
        with checker.property(prop):
            try:
                divergence(checker.sample(checker.batch_size(8), 0), prior)
            except ComponentInputError:
                return
            raise checker.fail(prop, f"accepted codes although supports={supports}")
    batch = checker.batch_size(batch_size)
    checker.output_contract(batch)
    checker.gradients(batch)
    checker.gradient_matches_finite_differences(batch)
    checker.input_errors()
    checker.random_input_properties(batch, max_examples)
    checker.nonnegative_in_expectation(batch, n_batches)
    checker.zero_at_equality(batch, n_batches)
    checker.closed_forms(families, batch, n_batches)


def conformance_test(divergence_or_factory: DivergenceSource, **options: Any) -> Callable[[], None]:
    """A pytest test running :func:`check_divergence`: ``test_x = conformance_test(X)``."""

    def test_divergence_conformance() -> None:
        check_divergence(divergence_or_factory, **options)

    return test_divergence_conformance
