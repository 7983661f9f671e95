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

The statistical checks (zero at equality, nonnegativity in expectation, closed forms) average
``n_batches`` batches of ``batch_size`` codes and allow :data:`SIGMAS` standard errors of that mean
beyond the tolerance: the allowance is the estimator's own spread at the tested size, measured on
every run.

Closed-form checks run only for the families a divergence declares it estimates, through the class
attribute ``closed_form_families`` (or the ``closed_forms`` argument): a mapping from
``"vmf"`` (von Mises-Fisher codes vs the uniform sphere) and/or ``"diagonal-gaussian"`` (codes
N(mu, diag s^2) vs a Gaussian prior) to ``"kl"`` (the value estimates KL) or ``"kl-per-dim"``
(it estimates KL / M). Each mean estimate must be within tolerance + :data:`CLOSED_FORM_RELATIVE`
of the KL + SIGMAS standard errors of it. The diagonal Gaussian's KL is :data:`CLOSED_FORM_KL`
nats. The von Mises-Fisher family has two members, concentrated (:data:`VMF_CONCENTRATIONS`)
so that a kNN estimate's bias no longer depends on the concentration, and the rise of the estimate
from one to the other must match the rise of the KL within tolerance + SIGMAS standard errors,
nothing relative: a rescaled estimate c x D keeps nonnegativity and zero at equality, and one
KL cannot tell c = 1.15 from a kNN estimator's bias (-12 nats at M = 64), but the rise can.

Gradients are checked for existence and finiteness, and against a central finite difference of
the value along the gradient, which catches a sign error, a missing factor or a zero gradient in
a hand-written backward.

One module although longer than ~400 lines: it is one public contract (what a divergence plugin
must satisfy), and its checks, tolerances and closed forms are read and changed together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.special as sps
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from torch import Tensor

from agekit.components import (
    ComponentInputError,
    Divergence,
    DivergenceGuarantees,
    Prior,
    log_sphere_area,
)
from agekit.priors import GaussianPrior, SpherePrior

#: Seed of torch's global RNG for every evaluation the kit makes (see Checker.call).
_CALL_SEED = 20180101

__all__ = [
    "CLOSED_FORM_KL",
    "CLOSED_FORM_RELATIVE",
    "SIGMAS",
    "VMF_CONCENTRATIONS",
    "ConformanceReport",
    "check_divergence",
    "conformance_test",
    "default_priors",
    "diagonal_gaussian_kl",
    "diagonal_gaussian_offsets",
    "vmf_kappa",
    "vmf_kl",
]

DivergenceSource = Divergence | Callable[[], Divergence] | str

#: Standard errors allowed on top of the declared tolerance when a property holds "in expectation":
#: with the kit's fixed seeds a correct estimator fails a 4-sigma bound with probability ~6e-5.
#: The standard error is measured on every run, in total nats: for kozachenko-leonenko at B = 128
#: one batch's KL has sd 0.04-0.09 nats at the default priors and at M = 64, so 16 batches allow
#: tolerance + 0.04-0.09 nats at equality (4 standard errors of a 16-batch mean are one sd), and a
#: bias of 0.05 nats per dimension (0.8 nats at M = 16) is far outside.
SIGMAS = 4.0

#: Total KL, in nats, of the diagonal-Gaussian closed form, the same in every dimension. Far above
#: the built-ins' tolerances (0.04, 0.15): an estimator scaled by 0.5, 2 or 1e-3 misses by 1.25
#: nats or more, beyond the allowance tolerance + 10% of the value + SIGMAS standard errors
#: (~0.4 + 4 x 0.03-0.1 for the built-ins at B = 128, 16 batches) that the built-ins' finite-B
#: biases need at M <= 4 (kNN: +0.03 to +0.09 nats).
CLOSED_FORM_KL = 2.5

#: Share of the true value allowed on top of the declared tolerance when one estimate is compared
#: with its closed form: kNN estimators underestimate concentrated distributions by a number of
#: nats that grows with M (the first vMF member at B = 128, k = 3: -1.1 nats of 52 at M = 16, -12
#: of 218 at M = 64, -30 of 440 at M = 128, 6.8%; k = 1 and 5 within 0.3 points of k = 3), and
#: parametric ones carry an O(1/B) bias. The vMF scale check has no such share: it is what catches
#: a factor within 10% of 1.
CLOSED_FORM_RELATIVE = 0.1

#: Concentrations of the two von Mises-Fisher members, as kappa / (M - 1): a member's codes lie at a
#: mean squared distance of about 1/c from its mean direction ((M - 1)/kappa for kappa >> M). There
#: the vMF is a Gaussian on the tangent plane up to O(1/c), and a kNN estimate's bias is that of
#: a Euclidean kNN estimate, which does not change with the scale: at the kit's sizes and seeds
#: (B = 128, 16 batches, k = 1, 3, 5, M from 2 to 128) the rise of the estimate from one member to
#: the other matched the rise of the KL (1.15 nats at M = 2, 17.3 at M = 16, 72.5 at M = 64) within
#: 0.021 nats, against a bias of -12.2 nats in each at M = 64. At moderate concentrations it does
#: not: for the KL = 2.5 vMF the bias is -11% at M = 16 and -45% at M = 64, and -27% still at
#: KL = 30. Not more concentrated than 1e4: at M = 3 the 3rd neighbour's squared distance (5e-6
#: typically, 6e-7 at the least) stays far above the estimators' distance floors (1e-12).
VMF_CONCENTRATIONS = (1e3, 1e4)

#: Step of the finite-difference gradient check, times the prior's scale sqrt(sum var). The step
#: is a unit direction over all B x M coordinates, so a code moves ~1e-5 on average at B = 128;
#: float64 rounding in the difference quotient is ~1e-16 |D| / 1e-4, truncation O(step^2).
FD_STEP = 1e-4

#: How far the slope measured by finite differences along the gradient may be from |gradient|:
#: within a factor FD_RATIO either way. Exact gradients agree to ~1e-4 relative; a divergence that
#: computes a data-dependent scale without gradient (agekit-mmd's rbf median bandwidth, by design)
#: was measured between 0.58x and 1.9x. A sign error, a zero gradient or a missing 1/B factor
#: is far outside.
FD_RATIO = 4.0


def vmf_kl(dim: int, kappa: float) -> float:
    """KL( vMF(mu, kappa) || uniform on S^{dim-1} ) in nats (any mean direction mu).

    -H(vMF) + log|S^{M-1}| with log C_M(kappa) = nu log kappa - (M/2) log 2 pi - log I_nu(kappa),
    nu = M/2 - 1, and E[mu . x] = I_{M/2}(kappa) / I_nu(kappa); Bessel functions in their
    exponentially scaled form (ive), so that large kappa cannot overflow.

    Raises:
        ValueError: where I_nu(kappa) e^-kappa underflows (nu in the hundreds and kappa far
            below it, e.g. M = 1000 at a KL of a few nats).
    """
    nu = dim / 2 - 1
    scaled_bessel = float(sps.ive(nu, kappa))
    if not (scaled_bessel > 0.0 and math.isfinite(scaled_bessel)):
        raise ValueError(f"vMF closed form out of float64 range at dim={dim}, kappa={kappa:g}")
    mean_cosine = float(sps.ive(dim / 2, kappa)) / scaled_bessel
    log_normaliser = (
        nu * math.log(kappa) - (dim / 2) * math.log(2 * math.pi) - math.log(scaled_bessel) - kappa
    )
    return log_normaliser + kappa * mean_cosine + log_sphere_area(dim)


def vmf_kappa(dim: int, kl: float = CLOSED_FORM_KL) -> float:
    """The concentration kappa at which :func:`vmf_kl` equals ``kl`` on S^{dim-1}."""
    # d KL / d kappa = kappa A'(kappa) <= kappa / M (A is concave with A'(0) = 1/M), so
    # KL(kappa) <= kappa^2 / (2M): kappa = sqrt(2 M kl) is at or below the root.
    low = math.sqrt(2 * dim * kl)
    while vmf_kl(dim, low) > kl:  # never taken if the bound holds; cheap insurance for brentq
        low /= 2
    high = 2 * low
    while vmf_kl(dim, high) < kl:
        low, high = high, 2 * high
    return float(brentq(lambda k: vmf_kl(dim, k) - kl, low, high, xtol=1e-12))


def diagonal_gaussian_kl(shift: Tensor, log_ratio: Tensor) -> float:
    """KL( N(mean + shift sd, diag (e^log_ratio sd)^2) || N(mean, diag sd^2) ), float64 nats.

    Shift and log-ratio are per coordinate, in units of the reference's standard deviations.
    """
    ratio = torch.exp(2 * log_ratio.double())
    return float(0.5 * (ratio + shift.double() ** 2 - 1 - 2 * log_ratio.double()).sum())


def diagonal_gaussian_offsets(dim: int, kl: float = CLOSED_FORM_KL) -> tuple[Tensor, Tensor]:
    """Shift and log-ratio (see :func:`diagonal_gaussian_kl`) of the kit's test Gaussian.

    Both are t * linspace(-1, 1, M), t chosen so that the KL is ``kl``: coordinates are moved by
    up to t standard deviations either way and narrowed or widened by up to e^t. KL grows with t.
    """
    pattern = torch.linspace(-1.0, 1.0, dim, dtype=torch.float64)

    def excess(t: float) -> float:
        return diagonal_gaussian_kl(t * pattern, t * pattern) - kl

    high = 1.0
    while excess(high) < 0:
        high *= 2
    t = float(brentq(excess, 0.0, high, xtol=1e-12))
    return t * pattern, t * pattern


def default_priors() -> tuple[Prior, ...]:
    """Low and moderate dimensions for each support; small enough to keep the kit fast.

    Euclidean dimensions stay small because kNN-type estimators have a finite-sample bias in R^M
    that grows with M; a divergence's declared tolerance is read at these sizes.
    """
    return (SpherePrior(3), SpherePrior(16), GaussianPrior(2), GaussianPrior(4))


@dataclass
class ConformanceReport:
    """What ran: ``passed`` lists ``"<prior>: <property>"`` for every check that held."""

    divergence: str
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class _Checker:
    def __init__(
        self, divergence: Divergence, prior: Prior, report: ConformanceReport, per_dimension: bool
    ) -> None:
        self.div = divergence
        self.prior = prior
        self.report = report
        self.g: DivergenceGuarantees = divergence.guarantees
        self.label = f"[{divergence!r} | {prior!r}]"
        #: Total nats per unit of the value: M for a per-dimension estimate (see the module doc).
        self.to_total = prior.dim if per_dimension else 1
        population = self.g.zero_at_equality == "population"
        #: The declared tolerance in total nats.
        self.total_tolerance = self.g.tolerance * (self.to_total if population else 1)

    # helpers -------------------------------------------------------------------------------------
    def fail(self, prop: str, message: str) -> AssertionError:
        return AssertionError(f"{self.label} {prop}: {message}")

    @contextmanager
    def property(self, prop: str) -> Iterator[None]:
        try:
            yield
        except AssertionError:
            raise
        except Exception as exc:  # a crash is a failure of the property being checked
            raise self.fail(prop, f"raised {type(exc).__name__}: {exc}") from exc
        self.report.passed.append(f"{self.prior!r}: {prop}")

    def call(self, prop: str, codes: Tensor, what: str) -> Tensor:
        """Evaluate on valid codes and check the output contract (0-dim, dtype, device, finite)."""
        try:
            # Estimators that draw from the prior (MMD, sliced distances) use torch's global RNG;
            # the same draws for every call make a shuffled batch comparable with the original.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_CALL_SEED)
                value = self.div(codes, self.prior)
        except ComponentInputError as exc:
            raise self.fail(prop, f"rejected valid input ({what}): {exc}") from exc
        if not isinstance(value, Tensor):
            raise self.fail(prop, f"returned {type(value).__name__}, not a torch.Tensor ({what})")
        if value.ndim != 0:
            raise self.fail(
                prop, f"result is not a scalar: shape {tuple(value.shape)} ({what}); return a 0-dim"
            )
        if value.dtype != codes.dtype:
            raise self.fail(prop, f"result dtype {value.dtype} differs from codes' {codes.dtype}")
        if value.device != codes.device:
            raise self.fail(prop, f"result on {value.device}, codes on {codes.device} ({what})")
        if not bool(torch.isfinite(value)):
            raise self.fail(prop, f"result is not finite: {float(value)} ({what})")
        return value

    def sample(self, n: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return self.prior.sample(n, gen, dtype=dtype)

    def distorted(
        self, n: int, seed: int, shift: float, log_scale: float, dtype: torch.dtype = torch.float64
    ) -> Tensor:
        """Codes from a distribution unlike the prior: shifted along e_1 and rescaled."""
        gen = torch.Generator().manual_seed(seed)
        std = self.prior.variance().sqrt().to(dtype)
        mean = self.prior.mean().to(dtype)
        raw = torch.randn(n, self.prior.dim, generator=gen, dtype=dtype) * math.exp(log_scale)
        raw[:, 0] += shift
        if self.prior.support == "sphere":
            return self.prior.project(raw)
        return mean + std * raw

    def batch_size(self, wanted: int) -> int:
        return max(wanted, self.div.min_batch())

    # properties ----------------------------------------------------------------------------------
    def output_contract(self, batch: int) -> None:
        for dtype in (torch.float32, torch.float64):
            with self.property(f"output ({dtype})"):
                self.call(f"output ({dtype})", self.sample(batch, 1, dtype), f"{dtype} prior codes")
        with self.property("defined at min_batch"):
            n = self.div.min_batch()
            self.call("defined at min_batch", self.sample(n, 2), f"B = min_batch() = {n}")

    def gradients(self, batch: int) -> None:
        for prop, duplicate in (
            ("grad path", False),
            ("finite gradient with duplicate codes", True),
        ):
            with self.property(prop):
                codes = self.distorted(batch, 3, 0.5, -0.5)
                if duplicate:
                    codes[1] = codes[0]
                codes.requires_grad_(True)
                what = "codes with rows 0 and 1 equal" if duplicate else "codes requiring grad"
                value = self.call(prop, codes, what)
                if not value.requires_grad:
                    raise self.fail(
                        "grad path",
                        "result.requires_grad is False although the codes require grad: the "
                        "value is detached from the codes (no .item()/.numpy()/.detach() inside)",
                    )
                (grad,) = torch.autograd.grad(value, codes, allow_unused=True)
                if grad is None:
                    raise self.fail(prop, "the result does not depend on the codes (grad is None)")
                if not bool(torch.isfinite(grad).all()):
                    bad = int((~torch.isfinite(grad)).any(dim=1).sum())
                    raise self.fail(prop, f"gradient has NaN/inf in {bad} row(s) ({what})")

    def gradient_matches_finite_differences(self, batch: int) -> None:
        """The value must change along the gradient at the rate the gradient claims.

        One batch of distorted codes is moved both ways along a unit direction and projected back
        onto the support; the central difference of the value must agree with the slope autograd
        claims within a factor FD_RATIO. On the sphere only the gradient's tangent part moves the
        codes, so that part is used. The direction is the gradient itself, where the claimed
        slope is |g|, as large as it gets, so that rounding cannot mask a wrong gradient; a zero
        gradient is tested along a fixed random direction, where it claims a slope of 0.
        """
        prop = "gradient matches finite differences"
        with self.property(prop):
            codes = self.distorted(batch, 3, 0.5, -0.5).requires_grad_(True)
            what = f"{batch} codes shifted by 0.5 and scaled by e^-0.5"
            value = self.call(prop, codes, what)
            if not value.requires_grad:
                raise self.fail(prop, f"the result does not require grad ({what})")
            (grad,) = torch.autograd.grad(value, codes, allow_unused=True)
            codes = codes.detach()
            grad = torch.zeros_like(codes) if grad is None else grad.detach()
            if self.prior.support == "sphere":
                grad = grad - (grad * codes).sum(dim=1, keepdim=True) * codes
            norm = float(grad.norm())
            if norm > 0.0:
                direction = grad / norm
            else:
                gen = torch.Generator().manual_seed(6)
                direction = torch.randn(codes.shape, generator=gen, dtype=codes.dtype)
                if self.prior.support == "sphere":
                    direction -= (direction * codes).sum(dim=1, keepdim=True) * codes
                direction /= direction.norm()
            claimed = float((grad * direction).sum())  # = |g| unless the gradient is zero
            step = FD_STEP * math.sqrt(float(self.prior.variance().sum()))

            def at(offset: float) -> float:
                moved = self.prior.project(codes + offset * direction)
                return float(self.call(prop, moved, what + ", moved along the gradient"))

            measured = (at(step) - at(-step)) / (2 * step)
            # Rounding in the quotient is ~1e-16 |D| / step; allow far more before the ratio test.
            slack = 1e-10 * max(1.0, abs(float(value.detach()))) / step
            if abs(measured - claimed) <= slack:
                return
            if not (claimed > 0 and claimed / FD_RATIO <= measured <= FD_RATIO * claimed):
                along = "the gradient" if norm > 0 else "a random direction (the gradient is 0)"
                raise self.fail(
                    prop,
                    f"along {along} the value changes at {measured:.6g} per unit length (central "
                    f"difference, step {step:g}) but the gradient claims {claimed:.6g} ({what}); "
                    f"a wrong sign, a missing factor or a detached part in the backward?",
                )

    def input_errors(self) -> None:
        prior, dim, n = self.prior, self.prior.dim, self.batch_size(8)
        good = self.sample(n, 4)
        cases: list[tuple[str, Any]] = [
            ("1-D codes", good[0]),
            ("3-D codes", good[None]),
            (f"codes with {dim + 1} dimensions", torch.cat([good, good[:, :1]], dim=1)),
            ("integer codes", good.round().to(torch.int64)),
            ("NaN codes", good.clone().index_fill_(0, torch.tensor([0]), math.nan)),
            ("inf codes", good.clone().index_fill_(0, torch.tensor([0]), math.inf)),
        ]
        if self.div.min_batch() > 1:
            small = self.div.min_batch() - 1
            cases.append((f"batch of {small} < min_batch() = {small + 1}", good[:small]))
        if prior.support == "sphere":
            cases.append(("codes off the sphere (norm 1.5)", good * 1.5))
        for what, codes in cases:
            prop = f"input error: {what}"
            with self.property(prop):
                try:
                    self.div(codes, prior)
                except ComponentInputError:
                    continue
                except Exception as exc:
                    raise self.fail(
                        prop, f"raised {type(exc).__name__} instead of ComponentInputError: {exc}"
                    ) from exc
                raise self.fail(prop, "accepted the input; expected ComponentInputError")

    def random_input_properties(self, batch: int, max_examples: int) -> None:
        min_b = self.div.min_batch()
        exact_nonneg = self.g.nonnegative == "exact"
        cfg = settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            derandomize=True,
            # No shrinking: the failure message already names the input, and shrinking floats
            # would spend seconds per broken plugin.
            phases=(Phase.explicit, Phase.reuse, Phase.generate),
            suppress_health_check=[HealthCheck.too_slow],
        )
        batches = st.integers(min_b, max(min_b, batch))
        shifts = st.floats(-2.0, 2.0)
        log_scales = st.floats(-3.0, 1.0)

        @cfg
        @given(seed=st.integers(0, 2**31 - 1), n=batches, shift=shifts, log_scale=log_scales)
        def permutation_and_sign(seed: int, n: int, shift: float, log_scale: float) -> None:
            codes = self.distorted(n, seed, shift, log_scale)
            what = f"B={n}, seed={seed}, shift={shift:g}, log_scale={log_scale:g}"
            value = self.call("permutation invariance", codes, what)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
            permuted = self.call("permutation invariance", codes[perm], what + ", permuted")
            # float64 sums in another order differ by rounding only.
            if not math.isclose(float(value), float(permuted), rel_tol=1e-7, abs_tol=1e-9):
                raise self.fail(
                    "permutation invariance",
                    f"D = {float(value):.10g} but {float(permuted):.10g} after shuffling the batch "
                    f"({what})",
                )
            if exact_nonneg and float(value) < -1e-9 * max(1.0, abs(float(value))):
                raise self.fail(
                    "nonnegative (exact)",
                    f"D = {float(value):.6g} < 0 on a single batch although guarantees declare "
                    f"nonnegative='exact' ({what})",
                )

        prop = "permutation invariance" + (" + exact nonnegativity" if exact_nonneg else "")
        with self.property(prop):
            permutation_and_sign()

    def average(self, prop: str, make: Callable[[int], Tensor], batches: int, what: str) -> Any:
        """Mean, its standard error and the values over ``batches`` batches, in total nats."""
        values = np.array([float(self.call(prop, make(s), what)) for s in range(batches)])
        values = values * self.to_total
        return values.mean(), values.std(ddof=1) / math.sqrt(batches), values

    def in_total(self) -> str:
        return f" (D x M, M = {self.to_total})" if self.to_total != 1 else ""

    def nonnegative_in_expectation(self, batch: int, batches: int) -> None:
        if self.g.nonnegative != "expectation":
            return
        prop = "nonnegative (expectation)"
        tol = self.total_tolerance
        with self.property(prop):
            # On the sphere only the shift relative to the scale survives the projection (a
            # centred Gaussian of any scale projects to the uniform prior), so codes there are
            # concentrated around e_1.
            around = 1.0 if self.prior.support == "sphere" else 0.0
            makers: list[tuple[str, Callable[[int], Tensor]]] = [
                ("codes from the prior", lambda s: self.sample(batch, 1000 + s)),
                ("shifted codes", lambda s: self.distorted(batch, 2000 + s, 1.0, 0.0)),
                ("concentrated codes", lambda s: self.distorted(batch, 3000 + s, around, -1.5)),
            ]
            for what, make in makers:
                mean, se, _ = self.average(prop, make, batches, what)
                if mean < -tol - SIGMAS * se:
                    raise self.fail(
                        prop,
                        f"mean over {batches} batches of {batch} {what} is {mean:.4g}"
                        f"{self.in_total()} (standard error {se:.2g}), below -tolerance = {-tol:g} "
                        f"by more than {SIGMAS:g} standard errors",
                    )

    def zero_at_equality(self, batch: int, batches: int) -> None:
        mode, tol = self.g.zero_at_equality, self.total_tolerance
        if mode == "none":
            self.report.skipped.append(f"{self.prior!r}: zero at equality (declared 'none')")
            return
        prop = f"zero at equality ({mode})"
        with self.property(prop):
            what = f"batches of {batch} codes drawn from the prior"
            mean, se, values = self.average(
                prop, lambda s: self.sample(batch, 5000 + s), batches, what
            )
            if mode == "exact":
                worst = float(np.abs(values).max())
                if worst > tol + 1e-9:
                    raise self.fail(
                        prop, f"|D| = {worst:.4g}{self.in_total()} > tolerance {tol:g} on {what}"
                    )
            elif abs(mean) > tol + SIGMAS * se:
                raise self.fail(
                    prop,
                    f"mean D over {batches} {what} is {mean:.4g}{self.in_total()} (standard error "
                    f"{se:.2g}); declared tolerance {tol:g} (+{SIGMAS:g} standard errors)",
                )

    def closed_forms(self, families: Mapping[str, str], batch: int, batches: int) -> None:
        prior = self.prior
        if prior.support == "sphere" and "vmf" in families:
            self._vmf(families["vmf"], batch, batches)
        if prior.support == "euclidean" and "diagonal-gaussian" in families:
            self._diagonal_gaussian(families["diagonal-gaussian"], batch, batches)

    def _compare(
        self,
        prop: str,
        scale: str,
        truth: float,
        make: Callable[[int], Tensor],
        batches: int,
        what: str,
    ) -> np.ndarray:
        """Compare the mean estimate with the closed-form KL ``truth``, in total nats.

        Returns the estimates of KL, batch by batch, in total nats.
        """
        if scale not in ("kl", "kl-per-dim"):
            raise self.fail(prop, f"unknown closed-form scale {scale!r}; use 'kl' or 'kl-per-dim'")
        total, total_se, values = self.average(prop, make, batches, what)
        tol = self.g.tolerance
        allowed = tol + CLOSED_FORM_RELATIVE * abs(truth) + SIGMAS * total_se
        if abs(total - truth) > allowed:
            dim = self.prior.dim
            per_dim = (
                f" (KL / M: {total / dim:.4g} vs {truth / dim:.4g})" if self.to_total != 1 else ""
            )
            raise self.fail(
                prop,
                f"mean estimate over {batches} batches of {what} is {total:.4g} nats of KL, the "
                f"closed form {truth:.4g}{per_dim}; off by {total - truth:+.3g}, allowed +-"
                f"{allowed:.3g} (tolerance {tol:g} + {CLOSED_FORM_RELATIVE:g} x KL + "
                f"{SIGMAS:g} standard errors of {total_se:.2g}), in total nats",
            )
        return values

    def _vmf(self, scale: str, batch: int, batches: int) -> None:
        from scipy.stats import vonmises_fisher

        dim = self.prior.dim
        mu = np.zeros(dim)
        mu[0] = 1.0
        # (kappa, KL, estimates batch by batch) of each member, in total nats
        members: list[tuple[float, float, np.ndarray]] = []
        for c in VMF_CONCENTRATIONS:
            kappa = c * (dim - 1)
            try:
                truth = vmf_kl(dim, kappa)
            except ValueError as exc:  # no reference value, so no check (said so)
                self.report.skipped.append(f"{self.prior!r}: closed form: von Mises-Fisher ({exc})")
                return
            dist = vonmises_fisher(mu, kappa)
            prop = f"closed form: von Mises-Fisher (kappa={kappa:.3g}, KL={truth:.4g})"

            def make(s: int, dist: Any = dist) -> Tensor:
                x = dist.rvs(batch, random_state=np.random.default_rng(7000 + s))
                return self.prior.project(torch.as_tensor(x, dtype=torch.float64))

            with self.property(prop):
                values = self._compare(prop, scale, truth, make, batches, f"{batch} vMF codes")
            members.append((kappa, truth, values))
        (kappa_a, truth_a, values_a), (kappa_b, truth_b, values_b) = members
        true_rise = truth_b - truth_a
        prop = f"closed form: von Mises-Fisher scale (KL rises by {true_rise:.4g})"
        with self.property(prop):
            # Batch s of both members comes from seed 7000 + s, so the rises are paired, one per
            # seed, independent across seeds: their spread is the rise's own. (scipy's sampler
            # draws the same directions for both and moves them closer to the mean, so most of
            # the batch-to-batch spread of either member cancels.)
            rises = values_b - values_a
            rise = float(rises.mean())
            rise_se = float(rises.std(ddof=1)) / math.sqrt(batches)
            allowed = self.g.tolerance + SIGMAS * rise_se
            if abs(rise - true_rise) > allowed:
                raise self.fail(
                    prop,
                    f"from kappa = {kappa_a:.4g} to {kappa_b:.4g} the mean estimate over {batches} "
                    f"batches of {batch} vMF codes rises by {rise:.4g} nats of KL, the closed form "
                    f"by {true_rise:.4g}: {rise / true_rise:.3f} times the KL's rise, off by "
                    f"{rise - true_rise:+.3g}, allowed +-{allowed:.3g} (tolerance "
                    f"{self.g.tolerance:g} + {SIGMAS:g} standard errors of {rise_se:.2g}), in "
                    f"total nats; a value rescaled by a constant factor?",
                )

    def _diagonal_gaussian(self, scale: str, batch: int, batches: int) -> None:
        dim = self.prior.dim
        p_mean, p_sd = self.prior.mean(), self.prior.variance().sqrt()
        # Every coordinate shifted and rescaled (but the middle one of an odd M), together worth
        # CLOSED_FORM_KL nats: KL is invariant to the affine map to the prior's units.
        shift, log_ratio = diagonal_gaussian_offsets(dim)
        mu = p_mean + shift * p_sd
        sd = p_sd * torch.exp(log_ratio)
        truth = diagonal_gaussian_kl(shift, log_ratio)
        prop = f"closed form: diagonal Gaussian (KL={truth:.3g})"

        def make(s: int) -> Tensor:
            gen = torch.Generator().manual_seed(8000 + s)
            return mu + sd * torch.randn(batch, dim, generator=gen, dtype=torch.float64)

        with self.property(prop):
            self._compare(prop, scale, truth, make, batches, f"{batch} N(mu, diag s^2) codes")


@contextmanager
def _single_threaded() -> Iterator[None]:
    # The kit evaluates hundreds of small batches; there torch's intra-op thread start-up costs more
    # than the work (10x slower on a loaded 2-core machine). Restored on exit.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _resolve(source: DivergenceSource) -> Divergence:
    if isinstance(source, Divergence):
        return source
    if isinstance(source, str):
        from agekit.registry import create

        made = create("divergence", source)
    else:
        made = source()
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
        closed_forms: which closed-form families to compare against (see the module docstring);
            default: the divergence's ``closed_form_families`` attribute, or none.

    Returns:
        a :class:`ConformanceReport` of the checks that ran.

    Raises:
        AssertionError: naming the property that failed, the prior and the input.
    """
    divergence = _resolve(divergence_or_factory)
    report = ConformanceReport(repr(divergence))
    g = getattr(divergence, "guarantees", None)
    if not isinstance(g, DivergenceGuarantees):
        raise AssertionError(f"[{divergence!r}] declaration: guarantees is {g!r}")
    if not (g.tolerance >= 0 and math.isfinite(g.tolerance)):
        raise AssertionError(f"[{divergence!r}] declaration: tolerance {g.tolerance!r} is not >= 0")
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
            checker = _Checker(divergence, prior, report, per_dimension)
            _check_prior(checker, families, max_examples, batch_size, n_batches)
    return report


def _check_prior(
    checker: _Checker,
    families: Mapping[str, str],
    max_examples: int,
    batch_size: int,
    n_batches: int,
) -> None:
    divergence, prior, g = checker.div, checker.prior, checker.g
    if prior.support not in g.supports:
        prop = "refuses an unsupported prior"
        with checker.property(prop):
            try:
                divergence(checker.sample(checker.batch_size(8), 0), prior)
            except ComponentInputError:
                return
            raise checker.fail(prop, f"accepted codes although supports={g.supports}")
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
