"""The statistical checks: zero at equality, nonnegativity in expectation and the closed forms.

Each averages ``n_batches`` batches of ``batch_size`` codes and allows :data:`SIGMAS` standard
errors of that mean beyond the tolerance: the allowance is the estimator's own spread at the tested
size, measured on every run. Values are judged in total nats (see :mod:`agekit.testing`).

Closed-form checks run only for the families a divergence declares. Each mean estimate must be
within tolerance + :data:`CLOSED_FORM_RELATIVE` of the KL + SIGMAS standard errors of it. The
von Mises-Fisher family has two members, concentrated (:data:`VMF_CONCENTRATIONS`) so that a kNN
estimate's bias no longer depends on the concentration, and the rise of the estimate from one to
the other must match the rise of the KL within tolerance + SIGMAS standard errors, nothing
relative: a rescaled estimate c x D keeps nonnegativity and zero at equality, and one KL cannot
tell c = 1.15 from a kNN estimator's bias (-12 nats at M = 64), but the rise can.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from agekit.testing.checker import Checker
from agekit.testing.closed_forms import (
    VMF_CONCENTRATIONS,
    diagonal_gaussian_kl,
    diagonal_gaussian_offsets,
    vmf_kl,
)
from agekit.testing.tolerances import CLOSED_FORM_RELATIVE, SIGMAS


class StatisticalChecks(Checker):
    """The checks of what a divergence's mean over many batches converges to."""

    def nonnegative_in_expectation(self, batch: int, batches: int) -> None:
        if self.guarantees.nonnegative != "expectation":
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
        mode, tol = self.guarantees.zero_at_equality, self.total_tolerance
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
        tol = self.guarantees.tolerance
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
        from scipy.stats import vonmises_fisher  # slow to import; only this check needs it

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
            tolerance = self.guarantees.tolerance
            allowed = tolerance + SIGMAS * rise_se
            if abs(rise - true_rise) > allowed:
                raise self.fail(
                    prop,
                    f"from kappa = {kappa_a:.4g} to {kappa_b:.4g} the mean estimate over {batches} "
                    f"batches of {batch} vMF codes rises by {rise:.4g} nats of KL, the closed form "
                    f"by {true_rise:.4g}: {rise / true_rise:.3f} times the KL's rise, off by "
                    f"{rise - true_rise:+.3g}, allowed +-{allowed:.3g} (tolerance "
                    f"{tolerance:g} + {SIGMAS:g} standard errors of {rise_se:.2g}), in "
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
