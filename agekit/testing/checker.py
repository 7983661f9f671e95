"""What every check of one divergence against one prior shares: evaluating it under the kit's
seed and output contract, drawing codes, turning failures into labelled assertion errors, and
recording what passed in the :class:`ConformanceReport`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from agekit.components import ComponentInputError, Divergence, DivergenceGuarantees, Prior

#: Seed of torch's global RNG for every evaluation the kit makes (see Checker.call).
CALL_SEED = 20180101


@dataclass
class ConformanceReport:
    """What ran: ``passed`` lists ``"<prior>: <property>"`` for every check that held."""

    divergence: str
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class Checker:
    """One divergence checked against one prior; the checks themselves are its subclasses'."""

    def __init__(
        self, divergence: Divergence, prior: Prior, report: ConformanceReport, per_dimension: bool
    ) -> None:
        self.divergence = divergence
        self.prior = prior
        self.report = report
        self.guarantees: DivergenceGuarantees = divergence.guarantees
        self.label = f"[{divergence!r} | {prior!r}]"
        #: Total nats per unit of the value: M for a per-dimension estimate (see agekit.testing).
        self.to_total = prior.dim if per_dimension else 1
        population = self.guarantees.zero_at_equality == "population"
        #: The declared tolerance in total nats.
        self.total_tolerance = self.guarantees.tolerance * (self.to_total if population else 1)

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
                torch.manual_seed(CALL_SEED)
                value = self.divergence(codes, self.prior)
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
        return max(wanted, self.divergence.min_batch())

    def average(self, prop: str, make: Callable[[int], Tensor], batches: int, what: str) -> Any:
        """Mean, its standard error and the values over ``batches`` batches, in total nats."""
        values = np.array([float(self.call(prop, make(s), what)) for s in range(batches)])
        values = values * self.to_total
        return values.mean(), values.std(ddof=1) / math.sqrt(batches), values

    def in_total(self) -> str:
        return f" (D x M, M = {self.to_total})" if self.to_total != 1 else ""
