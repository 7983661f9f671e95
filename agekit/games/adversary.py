"""The adaptive adversary's threshold: its default in the configured divergence's units, and the
check that codes drawn from the prior do not already exceed it.

The controller itself is :class:`agekit.games.age.AdaptiveAdversaryWeight`; its settings are
``game.adaptive_adversary`` (:class:`agekit.config.AdaptiveAdversary`). It comes from the
``cAGE`` branch of the reference code (DmitryUlyanov/AGE, commit 058cdf9, never merged into the
master branch that the README runs; see docs/method.md). There the threshold is ``th`` (1.05)
times the "ideal KL", the value of the code's KL formula for codes distributed like the sphere
prior, so it is in that formula's units. Here the threshold is likewise in the units of the
configured divergence, whatever its formula (per dimension or summed), and a threshold that the
divergence exceeds at the prior is refused: there the weight would be driven to 0 whatever the
networks did.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch

from agekit.components import ComponentInputError, Divergence, Prior
from agekit.config.sections import (
    REFERENCE_TH,
    AdaptiveAdversary,
    ConfigError,
    ExperimentConfig,
    reference_adversary_threshold,
)
from agekit.divergences import GaussianKL, KozachenkoLeonenko, ReferenceCodeGaussianKL
from agekit.registry import RegistryError, create

__all__ = [
    "PriorLevel",
    "check_adaptive_adversary",
    "default_threshold",
    "prior_level",
    "resolve_threshold",
    "units",
]

# Batches drawn to estimate the divergence at the prior: enough for a 97.5% quantile at the usual
# batch sizes, and a bounded number of codes (a kNN estimator costs O(B^2) per batch).
_MAX_BATCHES = 256
_MIN_BATCHES = 32
_CODES = 1 << 16
_SEED = 0


def default_threshold(divergence: Divergence, prior: Prior) -> float:
    """``threshold = None``: the branch's threshold in ``divergence``'s units, on the sphere.

    The reference code's formula gets the branch's own rule, 1.05 x its value at the prior's
    moments; ``gaussian-kl`` and ``kozachenko-leonenko`` (both 0 at the prior) get
    :func:`reference_adversary_threshold` per dimension, times M for the summed KL. Any other
    divergence has no known translation: ValueError.
    """
    if isinstance(divergence, ReferenceCodeGaussianKL):
        v, m = prior.variance(), prior.mean()
        ideal = float(((v * v + m * m) / 2 - torch.log(v) - 0.5).mean())
        return REFERENCE_TH * ideal
    per_dimension = reference_adversary_threshold(prior.dim)
    if isinstance(divergence, GaussianKL):
        return per_dimension
    if isinstance(divergence, KozachenkoLeonenko):
        return per_dimension if divergence.per_dimension else per_dimension * prior.dim
    raise ValueError(
        f"no default for divergence {type(divergence).__name__}; set a number in its units"
    )


def units(divergence: Divergence) -> str:
    """How ``divergence`` reports its value, for messages."""
    if isinstance(divergence, ReferenceCodeGaussianKL):
        return "the reference code's KL formula, averaged over dimensions"
    if isinstance(divergence, KozachenkoLeonenko) and not divergence.per_dimension:
        return "nats, summed over dimensions"
    if isinstance(divergence, GaussianKL | KozachenkoLeonenko):
        return "nats per latent dimension"
    return f"{type(divergence).__name__}'s own units"


@dataclass(frozen=True)
class PriorLevel:
    """The divergence's value for batches of codes drawn from the prior."""

    #: Its mean over the batches drawn.
    mean: float
    #: The smallest threshold at which the weight does not fall on average at the prior (the
    #: ``quantile`` quantile of the values); -inf when the weight never falls on average.
    needed: float
    quantile: float
    batches: int


def prior_level(
    prior: Prior, divergence: Divergence, batch_size: int, increase: float, decrease: float
) -> PriorLevel:
    """Where ``divergence`` stands at the prior, and the threshold the controller needs there.

    Each iteration the weight gains ``increase`` and loses ``decrease`` when D(e(x)) or
    D(e(g(z))) exceeds the threshold t (both scaled alike by the learning rate). With both code
    batches from the prior, independent, each below t with probability F(t), the weight's expected
    change is increase - decrease (1 - F(t)^2): non-negative iff F(t) >= sqrt(1 - increase /
    decrease), which is ``needed``'s quantile (0.975 for the branch's 0.001 and 0.02). Estimated
    from batches drawn with a fixed seed on the CPU, so the same configuration always gets the
    same answer.
    """
    batches = max(_MIN_BATCHES, min(_MAX_BATCHES, _CODES // batch_size))
    generator = torch.Generator().manual_seed(_SEED)
    with torch.no_grad():
        values = torch.tensor(
            [float(divergence(prior.sample(batch_size, generator), prior)) for _ in range(batches)],
            dtype=torch.float64,
        )
    if decrease <= increase:  # the weight grows even when every iteration exceeds t
        quantile = 0.0
        needed = -math.inf
    else:
        quantile = math.sqrt(1.0 - increase / decrease)
        needed = float(torch.quantile(values, quantile))
    return PriorLevel(float(values.mean()), needed, quantile, batches)


def resolve_threshold(config: ExperimentConfig, prior: Prior, divergence: Divergence) -> float:
    """The threshold ``config`` sets, its default computed for ``prior`` and ``divergence``."""
    adaptive = config.game.adaptive_adversary
    if adaptive is None:
        raise ValueError("game.adaptive_adversary is not set")
    if adaptive.threshold is not None:
        return adaptive.threshold
    return default_threshold(divergence, prior)


_LEVELS: dict[str, PriorLevel] = {}


def _cached_level(config: ExperimentConfig, prior: Prior, divergence: Divergence) -> PriorLevel:
    adaptive = config.game.adaptive_adversary
    assert adaptive is not None
    key = json.dumps(
        [
            config.prior.model_dump(mode="json"),
            config.divergence.model_dump(mode="json"),
            config.data.batch_size,
            adaptive.increase,
            adaptive.decrease,
        ],
        sort_keys=True,
    )
    if key not in _LEVELS:
        _LEVELS[key] = prior_level(
            prior, divergence, config.data.batch_size, adaptive.increase, adaptive.decrease
        )
    return _LEVELS[key]


def check_adaptive_adversary(config: ExperimentConfig, source: str) -> None:
    """Refuse a threshold that the configured divergence exceeds at the prior (ConfigError).

    Checked at ``data.batch_size``, the global batch (with ``distributed.divergence =
    "per-rank"`` the logged value is a mean of smaller-batch estimates, which for a biased
    estimator lies higher). Components that cannot be built, or a batch the divergence cannot
    take, are left to the checks that report them.
    """
    adaptive = config.game.adaptive_adversary
    if adaptive is None or config.game.game_name != "age":  # only the age game plays it
        return
    key = "game.adaptive_adversary.threshold"
    try:
        prior = create("prior", config.prior.name, dim=config.prior.dim, **config.prior.options)
        divergence = create("divergence", config.divergence.name, **config.divergence.options)
    except (RegistryError, ValueError, TypeError):
        return
    try:
        threshold = resolve_threshold(config, prior, divergence)
    except ValueError as exc:
        raise ConfigError(f"{source}: {key}: {exc}") from None
    try:
        level = _cached_level(config, prior, divergence)
    except ComponentInputError:
        return
    if threshold >= level.needed:
        return
    shown = _describe(adaptive, threshold)
    raise ConfigError(
        f"{source}: {key}: {shown} is exceeded at the prior: divergence {config.divergence.name!r}"
        f" gives {level.mean:.4g} on average for batches of {config.data.batch_size} codes drawn "
        f"from prior {config.prior.name!r} (M = {config.prior.dim}) and {level.needed:.4g} at its "
        f"{level.quantile:.1%} quantile, so the adversary weight would be driven to 0; expected "
        f"a threshold of at least {_rounded_up(level.needed)} ({units(divergence)})"
    )


def _rounded_up(value: float) -> str:
    """``value`` to 4 significant digits, rounded up: a threshold copied from the message passes."""
    if value == 0 or not math.isfinite(value):
        return f"{value:.4g}"
    step = 10.0 ** (math.floor(math.log10(abs(value))) - 3)
    return f"{math.ceil(value / step) * step:.4g}"


def _describe(adaptive: AdaptiveAdversary, threshold: float) -> str:
    if adaptive.threshold is None:
        return f"the default for this divergence, {threshold:.4g},"
    return f"{threshold:g}"
