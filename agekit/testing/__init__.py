"""Conformance kit for divergence plugins.

One call checks that a divergence keeps the :class:`~agekit.components.Divergence` contract and the
promises it declares in ``guarantees``::

    from agekit.testing import check_divergence

    def test_my_divergence():
        check_divergence(MyDivergence)          # a class, a factory, an instance or a registry name

    # or, equivalently, at module level:
    test_my_divergence = conformance_test("my-divergence")

Every failure is an ``AssertionError`` whose message starts with
``[<divergence> | <prior>] <property>:`` and describes the input that broke it; properties checked
over random inputs run under hypothesis, which adds the falsifying example to the report.

Values are judged in total nats. A divergence that reports KL / M (``"kl-per-dim"`` among its
closed-form families, below) has its value and standard errors multiplied by M first, in every
statistical check, so that a bias of a fraction of a nat per dimension, M-fold in the KL, cannot
hide under a tolerance meant for the KL: at M = 16 a tolerance of 0.15 read per dimension would be
2.4 nats. The declared ``tolerance`` is read in total nats, except for a ``"population"`` zero at
equality: that bias vanishes only as B grows and accrues per coordinate (a moment fit's is ~1/B in
each), so it is declared on the value's own scale, tolerance x M nats for a per-dimension value. A
divergence without closed-form families is judged on its value as it is.

Closed-form checks run only for the families a divergence declares it estimates, through the class
attribute ``closed_form_families`` (or the ``closed_forms`` argument): a mapping from
``"vmf"`` (von Mises-Fisher codes vs the uniform sphere) and/or ``"diagonal-gaussian"`` (codes
N(mu, diag s^2) vs a Gaussian prior) to ``"kl"`` (the value estimates KL) or ``"kl-per-dim"``
(it estimates KL / M). The diagonal Gaussian's KL is :data:`CLOSED_FORM_KL` nats.

The checks, by module: :mod:`.contract_checks` (output, gradients, input errors, random inputs),
:mod:`.statistical_checks` (zero at equality, nonnegativity in expectation, closed forms),
:mod:`.closed_forms` (the reference KLs), :mod:`.tolerances` (what the checks allow),
:mod:`.checker` (what every check shares) and :mod:`.conformance` (the entry points).
"""

from agekit.testing.closed_forms import (
    CLOSED_FORM_KL,
    VMF_CONCENTRATIONS,
    diagonal_gaussian_kl,
    diagonal_gaussian_offsets,
    vmf_kappa,
    vmf_kl,
)
from agekit.testing.conformance import (
    ConformanceReport,
    DivergenceSource,
    check_divergence,
    conformance_test,
    default_priors,
)
from agekit.testing.tolerances import CLOSED_FORM_RELATIVE, FD_RATIO, FD_STEP, SIGMAS

__all__ = [
    "CLOSED_FORM_KL",
    "CLOSED_FORM_RELATIVE",
    "FD_RATIO",
    "FD_STEP",
    "SIGMAS",
    "VMF_CONCENTRATIONS",
    "ConformanceReport",
    "DivergenceSource",
    "check_divergence",
    "conformance_test",
    "default_priors",
    "diagonal_gaussian_kl",
    "diagonal_gaussian_offsets",
    "vmf_kappa",
    "vmf_kl",
]
