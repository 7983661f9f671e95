"""The contract every divergence keeps, whatever it estimates: its output (a finite 0-dim tensor
of the codes' dtype and device), a gradient that exists, is finite and matches a central finite
difference of the value (which catches a sign error, a missing factor or a zero gradient in a
hand-written backward), refusal of malformed input, and, under hypothesis on random inputs,
permutation invariance and any declared exact nonnegativity."""

from __future__ import annotations

import math
from typing import Any

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agekit.components import ComponentInputError
from agekit.testing.checker import Checker
from agekit.testing.tolerances import FD_RATIO, FD_STEP


class ContractChecks(Checker):
    """The checks that hold for every divergence, whatever it estimates."""

    def output_contract(self, batch: int) -> None:
        for dtype in (torch.float32, torch.float64):
            with self.property(f"output ({dtype})"):
                self.call(f"output ({dtype})", self.sample(batch, 1, dtype), f"{dtype} prior codes")
        with self.property("defined at min_batch"):
            n = self.divergence.min_batch()
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
        if self.divergence.min_batch() > 1:
            small = self.divergence.min_batch() - 1
            cases.append((f"batch of {small} < min_batch() = {small + 1}", good[:small]))
        if prior.support == "sphere":
            cases.append(("codes off the sphere (norm 1.5)", good * 1.5))
        for what, codes in cases:
            prop = f"input error: {what}"
            with self.property(prop):
                try:
                    self.divergence(codes, prior)
                except ComponentInputError:
                    continue
                except Exception as exc:
                    raise self.fail(
                        prop, f"raised {type(exc).__name__} instead of ComponentInputError: {exc}"
                    ) from exc
                raise self.fail(prop, "accepted the input; expected ComponentInputError")

    def random_input_properties(self, batch: int, max_examples: int) -> None:
        min_b = self.divergence.min_batch()
        exact_nonneg = self.guarantees.nonnegative == "exact"
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
