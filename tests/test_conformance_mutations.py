"""Mutation tests of the conformance kit: every deliberately broken built-in must be rejected.

Each mutant wraps a real divergence (``gaussian-kl``, ``kozachenko-leonenko`` per dimension and in
total nats), keeps its declared guarantees and closed-form families, and breaks one thing: its
scale, a constant bias, its sign, its gradient, its batch handling. The kit must raise an
``AssertionError`` naming a property that the breakage violates, at every default prior where that
property is checked. A control runs the unmutated wrapper through the same settings, so a
rejection is the mutation's doing, not the wrapper's.

Scale-type mutations (a positive factor, a constant, "always 0") can only be told from the truth
by a closed form: a positive multiple of a divergence is as good a divergence. They are required
to be rejected only where the base declares a closed-form family for the prior's support
(``gaussian-kl`` does not estimate KL on the sphere).

Small errors of the kNN estimate are checked where they are hardest to see: a bias of 0.05 nats
per dimension at M = 16 (inside the 0.15 tolerance were it read per dimension; 0.8 nats in total),
a factor 1.3 at M = 16 and 1.15 at M = 64 (inside the 10% slack of a single closed-form
comparison, once kNN's underestimation of a concentrated vMF is added). Their priors need not be
default priors; a control runs the unmutated base there too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

import agekit
from agekit.components import Divergence, Prior
from agekit.divergences import GaussianKL, KozachenkoLeonenko
from agekit.priors import SpherePrior
from agekit.testing import check_divergence, default_priors

# Fewer hypothesis examples than the default 10: no mutation here is about order or sign on single
# random batches, so the random-input property only needs to run (B, batch_size and n_batches stay
# at the kit's defaults, the sizes the declared tolerances are read at). ~0.1-0.5 s per run.
MAX_EXAMPLES = 3

NATS = 1.5  # the bias of the biased mutants, in total nats: psi(3) - psi(1) = 1 + 1/2 exactly
NATS_PER_DIM = 0.05  # a bias per dimension, 0.8 nats at M = 16


def _make_base(name: str) -> Divergence:
    if name == "kozachenko-leonenko/total":
        return KozachenkoLeonenko(per_dimension=False)
    made = agekit.create("divergence", name)
    assert isinstance(made, Divergence)
    return made


BASES = ("kozachenko-leonenko", "kozachenko-leonenko/total", "gaussian-kl")
KNN = ("kozachenko-leonenko", "kozachenko-leonenko/total")


def _nats_per_unit(inner: Divergence, dim: int) -> int:
    """How many total nats one unit of the inner divergence's value is: M for per-dim scales."""
    families = getattr(inner, "closed_form_families", {})
    return dim if "kl-per-dim" in families.values() else 1


def _with_gradient_times(value: Tensor, factor: float) -> Tensor:
    """The same value with its gradient multiplied by ``factor`` (a hand-written backward's bug)."""
    return value.detach() + factor * (value - value.detach())


Mutate = Callable[[Divergence, Tensor, Prior], Tensor]


@dataclass(frozen=True)
class Mutation:
    name: str
    mutate: Mutate
    #: The kit's properties (message prefixes) any of which may reject the mutant.
    caught_by: tuple[str, ...]
    #: Only a closed-form comparison can see it (a rescaled or shifted value).
    needs_closed_form: bool = False
    only: tuple[str, ...] = BASES
    #: Where it is checked: the kit's default priors unless named.
    priors: tuple[Prior, ...] | None = None


VALUE = ("nonnegative", "zero at equality", "closed form")
GRAD_PATH = ("grad path",)
FD = ("gradient matches finite differences",)


def _reference_formula(inner: Divergence, codes: Tensor, prior: Prior) -> Tensor:
    # The public reference code's KLN01Loss (variance where the standard deviation belongs),
    # presented under gaussian-kl's guarantees: the bug agekit keeps only as an opt-in mode.
    return GaussianKL(reference_code_variance=True).compute(codes, prior)


MUTATIONS = [
    Mutation("scaled x1e-3", lambda d, c, p: 1e-3 * d.compute(c, p), VALUE, True),
    Mutation("scaled x0.5", lambda d, c, p: 0.5 * d.compute(c, p), VALUE, True),
    Mutation("scaled x2", lambda d, c, p: 2.0 * d.compute(c, p), VALUE, True),
    Mutation(
        "biased +1.5 nats",
        lambda d, c, p: d.compute(c, p) + NATS / _nats_per_unit(d, p.dim),
        VALUE,
        True,
    ),
    # e.g. kNN's psi(k) - psi(N) written with k = 1 while the k = 3rd neighbour is used
    Mutation(
        "biased -1.5 nats",
        lambda d, c, p: d.compute(c, p) - NATS / _nats_per_unit(d, p.dim),
        VALUE,
        True,
    ),
    # per_dimension ignored: the total reported as KL / M, or KL / M as the total
    Mutation(
        "units confused",
        lambda d, c, p: d.compute(c, p) * (p.dim if _nats_per_unit(d, p.dim) > 1 else 1 / p.dim),
        VALUE,
        True,
    ),
    Mutation("always 0 (with a graph)", lambda d, c, p: 0.0 * d.compute(c, p), VALUE, True),
    Mutation("sign flipped", lambda d, c, p: -d.compute(c, p), ("nonnegative",)),
    # an off-by-one slice: the first code never counts (kept at min_batch, where the slice would
    # be refused outright, so that permutation invariance is what must catch it)
    Mutation(
        "drops a code",
        lambda d, c, p: d.compute(c[1:] if c.shape[0] > d.min_batch() else c, p),
        ("permutation invariance",),
    ),
    Mutation(
        "reference-code formula",
        _reference_formula,
        ("nonnegative", "zero at equality", "closed form"),
        only=("gaussian-kl",),
    ),
    Mutation("detached", lambda d, c, p: d.compute(c, p).detach(), GRAD_PATH),
    Mutation("item() round trip", lambda d, c, p: c.new_tensor(d.compute(c, p).item()), GRAD_PATH),
    Mutation(
        "rewrapped leaf",
        lambda d, c, p: torch.tensor(
            d.compute(c, p).item(), dtype=c.dtype, device=c.device, requires_grad=True
        ),
        GRAD_PATH,
    ),
    Mutation("constant, no grad", lambda d, c, p: c.new_zeros(()), GRAD_PATH),
    Mutation(
        "gradient sign flipped", lambda d, c, p: _with_gradient_times(d.compute(c, p), -1), FD
    ),
    Mutation("gradient zero", lambda d, c, p: _with_gradient_times(d.compute(c, p), 0.0), FD),
    # a written-out backward that forgets the mean's 1/B
    Mutation(
        "gradient x B",
        lambda d, c, p: _with_gradient_times(d.compute(c, p), c.shape[0]),
        FD,
    ),
    # Small enough to hide per dimension (0.05 < 0.15) and at M = 3 or 2 in total; 0.8 nats at
    # M = 16 is over 3 times the allowance there (0.15 + 4 standard errors of 0.02).
    Mutation(
        "biased +0.05 nats per dimension",
        lambda d, c, p: d.compute(c, p) + NATS_PER_DIM * p.dim / _nats_per_unit(d, p.dim),
        ("zero at equality",),
        only=KNN,
        priors=(SpherePrior(16),),
    ),
    Mutation(
        "scaled x1.3",
        lambda d, c, p: 1.3 * d.compute(c, p),
        ("closed form",),
        True,
        only=KNN,
        priors=(SpherePrior(16),),
    ),
    Mutation(
        "scaled x1.15",
        lambda d, c, p: 1.15 * d.compute(c, p),
        ("closed form: von Mises-Fisher scale",),
        True,
        only=KNN,
        priors=(SpherePrior(64),),
    ),
]


class Mutant(Divergence):
    """``inner`` with one breakage; declares exactly what ``inner`` declares."""

    def __init__(self, inner: Divergence, mutation: Mutation | None) -> None:
        self.inner = inner
        self.mutation = mutation
        self.guarantees = inner.guarantees  # type: ignore[misc]
        self.closed_form_families = dict(getattr(inner, "closed_form_families", {}))

    def min_batch(self) -> int:
        return self.inner.min_batch()

    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        if self.mutation is None:
            return self.inner.compute(codes, prior)
        return self.mutation.mutate(self.inner, codes, prior)

    def __repr__(self) -> str:
        what = "unmutated" if self.mutation is None else self.mutation.name
        return f"Mutant[{what}]({self.inner!r})"


def _has_closed_form(base: Divergence, prior: Prior) -> bool:
    family = "vmf" if prior.support == "sphere" else "diagonal-gaussian"
    return family in getattr(base, "closed_form_families", {})


def _cases() -> list[tuple[str, Mutation, Prior]]:
    cases = []
    for base in BASES:
        for mutation in MUTATIONS:
            for prior in default_priors() if mutation.priors is None else mutation.priors:
                if base not in mutation.only:
                    continue
                if mutation.needs_closed_form and not _has_closed_form(_make_base(base), prior):
                    continue
                cases.append((base, mutation, prior))
    return cases


def _property(message: str) -> str:
    """What follows the label of a kit failure, ``[<divergence> | <prior>] <property>: <details>``:
    the property first (which may itself hold a colon, as "closed form: <family>" does)."""
    assert message.startswith("["), message
    return message.split("] ", 1)[1]


@pytest.mark.parametrize(
    ("base", "mutation", "prior"),
    _cases(),
    ids=lambda v: v.name if isinstance(v, Mutation) else repr(v) if isinstance(v, Prior) else v,
)
def test_kit_rejects_mutant(base: str, mutation: Mutation, prior: Prior) -> None:
    mutant = Mutant(_make_base(base), mutation)
    with pytest.raises(AssertionError) as info:
        check_divergence(mutant, priors=(prior,), max_examples=MAX_EXAMPLES)
    prop = _property(str(info.value))
    assert prop.startswith(mutation.caught_by), str(info.value)


@pytest.mark.parametrize("base", BASES)
def test_unmutated_wrapper_passes(base: str) -> None:
    """Control: the wrapper itself breaks nothing, so each rejection above is its mutation's."""
    report = check_divergence(Mutant(_make_base(base), None), max_examples=MAX_EXAMPLES)
    assert any(p.endswith("gradient matches finite differences") for p in report.passed)
    closed = [p for p in report.passed if "closed form" in p]
    # kNN: two vMF members and their rise on each sphere prior, a diagonal Gaussian on each other
    assert len(closed) == (8 if base != "gaussian-kl" else 2), report.passed


def _own_priors() -> list[tuple[str, Prior]]:
    """(base, prior) pairs where a mutant is checked outside the default priors."""
    defaults = {repr(p) for p in default_priors()}
    pairs = {
        (base, repr(prior)): (base, prior)
        for base, mutation, prior in _cases()
        if mutation.priors is not None and repr(prior) not in defaults
    }
    return list(pairs.values())


@pytest.mark.parametrize(
    ("base", "prior"), _own_priors(), ids=lambda v: repr(v) if isinstance(v, Prior) else v
)
def test_unmutated_wrapper_passes_at_the_mutants_own_priors(base: str, prior: Prior) -> None:
    """Control at the priors named by mutations: the base passes there, every check running."""
    report = check_divergence(
        Mutant(_make_base(base), None), priors=(prior,), max_examples=MAX_EXAMPLES
    )
    assert any("von Mises-Fisher scale" in p for p in report.passed)
    assert not report.skipped


def test_every_mutation_is_exercised() -> None:
    exercised = {mutation.name for _, mutation, _ in _cases()}
    assert exercised == {mutation.name for mutation in MUTATIONS}
    # The scale-type mutants are checked where the issue found them slipping through.
    per_dim = {
        (m.name, repr(p))
        for b, m, p in _cases()
        if b == "kozachenko-leonenko" and m.needs_closed_form
    }
    for name in ("scaled x1e-3", "biased +1.5 nats"):
        assert {(name, "SpherePrior(dim=16)"), (name, "GaussianPrior(dim=4)")} <= per_dim
    knn = {(b, m.name, repr(p)) for b, m, p in _cases() if b == "kozachenko-leonenko"}
    assert {
        ("kozachenko-leonenko", "biased +0.05 nats per dimension", "SpherePrior(dim=16)"),
        ("kozachenko-leonenko", "scaled x1.3", "SpherePrior(dim=16)"),
        ("kozachenko-leonenko", "scaled x1.15", "SpherePrior(dim=64)"),
    } <= knn
