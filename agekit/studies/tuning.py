"""Tuning a setting per cell on a validation split before the test split judges it.

A setting with a ``[settings.tuning]`` table gives every cell (every combination of the study's
axes) the same trials at the same tuning seeds: a ``grid`` of listed values is crossed, and a
``space`` of continuous ranges is sampled by optuna's quasi-Monte-Carlo ``QMCSampler`` (scrambled
Sobol points; optuna draws the first trial with its seeded independent sampler, the rest from the
Sobol sequence). Neither looks at results, so every cell, whatever its divergence, gets the very
same trials: an equal, paired budget::

    [settings.tuning]
    space = { "game.latent_weight" = { low = 30.0, high = 500.0, log = true },
              "optim.lr" = { low = 5e-5, high = 1e-3, log = true } }
    trials = 8
    metric = "sample-quality.fd_classifier"   # 'metric.key' of the evaluation record
    goal = "min"
    seeds = [100, 101]                       # disjoint from the study's seeds
    at_most = { "reconstruction.recon_mse" = 0.03 }   # optional limits on other keys
    halving = { steps = 500, keep = 0.25 }   # optional: successive halving, two rungs

Each trial trains once per tuning seed with ``data.heldout = "validation"``: the metrics score it
on images held out of the train split, never on the test split. With ``halving``, every trial
first trains ``steps`` iterations (rung 0); the best ``keep`` share of them by their mean score
(those within ``at_most`` first) trains the setting's full budget (rung 1), and only rung 1
chooses. Per cell, the trial with the best mean ``metric`` over the tuning seeds, among those
whose means respect ``at_most``, becomes the configuration of that cell's runs at the study's
seeds, which are scored on the test split as usual.

The validation split shortens an epoch, so a schedule counted in epochs would differ between
tuning and final runs: a tuned setting must count in iterations (``train.steps``, no
``optim.lr_drop_every``), which the planner checks.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agekit.config import Strict
from agekit.studies.statistics import flatten

#: The part of a tuning run's id and cell that separates it from the cell it tunes.
TUNE_MARK = "__tune__"
#: The suffix of a rung-0 (short budget) tuning run's cell under successive halving.
SHORT_RUNG_MARK = "__rung0"
#: A chosen value in the outer share of its range (on the range's own scale) is flagged as being
#: at the edge: the optimum may lie outside what was searched.
EDGE_SHARE = 0.1
#: Significant digits of a sampled value, so that a trial's configuration reads and reproduces.
SIGNIFICANT_DIGITS = 3

Point = tuple[tuple[str, Any], ...]


def require_values(table: dict[str, list[Any]], what: str) -> dict[str, list[Any]]:
    """``table`` itself when every key has at least one value (axes and grids cross them)."""
    for key, values in table.items():
        if not values:
            raise ValueError(f"{what} {key!r} has no values")
    return table


class Range(Strict):
    """A continuous range to search; ``log`` samples it uniformly on a log scale."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"expected finite low < high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self

    def position(self, value: float) -> float:
        """Where ``value`` lies in the range, 0 at low and 1 at high, on the range's scale."""
        if self.log:
            return math.log(value / self.low) / math.log(self.high / self.low)
        return (value - self.low) / (self.high - self.low)


class Halving(Strict):
    """Successive halving with two rungs: every trial at ``steps`` iterations, then the best
    ``keep`` share of them at the setting's full budget."""

    steps: int = Field(ge=1)
    keep: float = Field(gt=0.0, lt=1.0)


class Tuning(Strict):
    #: Dotted configuration keys and the values to try, crossed.
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    #: Dotted configuration keys and continuous ranges (optuna's QMCSampler, scrambled Sobol).
    space: dict[str, Range] = Field(default_factory=dict)
    #: Trials drawn from ``space`` (a grid has one trial per point).
    trials: int | None = Field(None, ge=1)
    #: Seed of the sampler's scrambling: the trials are a pure function of the table.
    sampler_seed: int = Field(0, ge=0)
    #: 'metric.key' of the evaluation record to select by (e.g. "sample-quality.fd_classifier").
    metric: str = Field(pattern=r"^[^.]+\..+$")
    goal: Literal["min", "max"]
    #: Training seeds of the tuning runs; they must differ from the study's seeds.
    seeds: list[int] = Field(default_factory=lambda: [1000], min_length=1)
    #: 'metric.key' -> the largest mean a trial may have to be chosen.
    at_most: dict[str, float] = Field(default_factory=dict)
    #: Share of the train split held out as the validation split.
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    halving: Halving | None = None
    #: Dotted key -> why a chosen value at the edge of its range is accepted (shown in the report).
    edge_notes: dict[str, str] = Field(default_factory=dict)

    @field_validator("grid")
    @classmethod
    def _non_empty_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return require_values(grid, "grid key")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"tuning seeds repeat: {seeds}")
        return seeds

    @model_validator(mode="after")
    def _one_search(self) -> Tuning:
        if bool(self.grid) == bool(self.space):
            raise ValueError("give either `grid` (listed values) or `space` (ranges), not both")
        if self.space and self.trials is None:
            raise ValueError("a `space` needs `trials`: how many points to draw from it")
        if self.grid and self.trials is not None:
            raise ValueError("a `grid` tries every point; `trials` applies to a `space` only")
        return self

    @property
    def keys(self) -> list[str]:
        return list(self.grid or self.space)

    def points(self) -> list[tuple[str, Point]]:
        """Every trial as (label, ((key, value), ...)), the same for every cell."""
        return list(_trials(self.model_dump_json()))

    def promoted_count(self) -> int:
        """How many trials rung 1 trains under successive halving (at least one)."""
        total = len(self.points())
        return total if self.halving is None else max(1, math.ceil(total * self.halving.keep))


@lru_cache(maxsize=64)
def _trials(table: str) -> tuple[tuple[str, Point], ...]:
    """A tuning table's trials, cached by its JSON: optuna's sampler is drawn once per table."""
    tuning = Tuning.model_validate_json(table)
    if tuning.grid:
        keys = list(tuning.grid)
        crossed = (
            tuple(zip(keys, combo, strict=True))
            for combo in itertools.product(*(tuning.grid[k] for k in keys))
        )
        return tuple((point_label(point, str), point) for point in crossed)
    return tuple((f"trial{index:02d}", point) for index, point in enumerate(_sampled(tuning)))


def _sampled(tuning: Tuning) -> list[Point]:
    """``tuning.trials`` points of its space from optuna's seeded scrambled-Sobol sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        key: optuna.distributions.FloatDistribution(r.low, r.high, log=r.log)
        for key, r in tuning.space.items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.QMCSampler(
            qmc_type="sobol", scramble=True, seed=tuning.sampler_seed
        )
    study = optuna.create_study(sampler=sampler)
    points = []
    for _ in range(tuning.trials or 0):
        params = study.ask(distributions).params
        points.append(tuple((key, _round(params[key], tuning.space[key])) for key in tuning.space))
    return points


def _round(value: float, bounds: Range) -> float:
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return min(max(rounded, bounds.low), bounds.high)


@dataclass(frozen=True)
class Choice:
    """What a cell's tuning chose, with the evidence."""

    label: str
    values: Point
    #: Per trial label: mean of the metric, n seeds, and whether it met ``at_most``.
    table: dict[str, dict[str, Any]]
    #: False when no trial met ``at_most`` and the best by the metric alone was taken.
    within_limits: bool
    #: Dotted keys whose chosen value lies in the outer EDGE_SHARE of their range.
    edges: tuple[str, ...] = ()


def point_label(values: Sequence[tuple[str, Any]], label: Any) -> str:
    """A grid point as a folder-safe text: latent_weight=125.0__fake_margin=0.5."""
    return "__".join(f"{key.split('.')[-1]}={label(value)}" for key, value in values)


def trial_scores(
    tuning: Tuning, records: dict[str, list[dict[str, Any] | None]]
) -> dict[str, dict[str, Any]]:
    """Per trial label: the mean ``metric`` over its evaluated tuning runs, their number ``n``,
    the means of the ``at_most`` keys and whether they are ``within_limits``."""
    table: dict[str, dict[str, Any]] = {}
    for label, runs in records.items():
        flat = [flatten(record) for record in runs if record is not None]
        means = {key: _mean([f.get(key, math.nan) for f in flat]) for key in tuning.at_most}
        table[label] = {
            "mean": _mean([f.get(tuning.metric, math.nan) for f in flat]),
            "n": len(flat),
            "limits": means,
            "within_limits": all(
                math.isfinite(v) and v <= tuning.at_most[k] for k, v in means.items()
            ),
        }
    return table


def ranked(tuning: Tuning, records: dict[str, list[dict[str, Any] | None]]) -> list[str] | None:
    """Trial labels best first (those within ``at_most`` before the rest; unscored trials left
    out), or None while any of the trials' runs has no evaluation."""
    if any(record is None for runs in records.values() for record in runs):
        return None
    table = trial_scores(tuning, records)
    sign = 1.0 if tuning.goal == "min" else -1.0
    order = list(records)
    scored = [label for label, row in table.items() if math.isfinite(row["mean"])]
    # the trials' order breaks ties, so the result does not depend on dict order
    return sorted(
        scored,
        key=lambda label: (
            not table[label]["within_limits"],
            sign * table[label]["mean"],
            order.index(label),
        ),
    )


def promoted(tuning: Tuning, short: dict[str, list[dict[str, Any] | None]]) -> list[str] | None:
    """The trials rung 1 trains, in the trials' order, from rung 0's records (``short``: label ->
    its runs' records); None while rung 0 is not evaluated. The planner and the report both ask
    this, so they agree on which trials went on."""
    order = ranked(tuning, short)
    if order is None:
        return None
    best = set(order[: tuning.promoted_count()])
    return [label for label in short if label in best]


def _at_edge(tuning: Tuning, key: str, value: Any) -> bool:
    """Whether a chosen value lies at the edge of what was searched for its key: in the outer
    EDGE_SHARE of a range, or the smallest or largest of three or more listed numbers."""
    if key in tuning.space:
        position = tuning.space[key].position(value)
        return min(position, 1 - position) < EDGE_SHARE
    listed = [v for v in tuning.grid.get(key, []) if isinstance(v, int | float)]
    return len(set(listed)) >= 3 and value in (min(listed), max(listed))


def choose(
    tuning: Tuning, records: dict[str, list[dict[str, Any] | None]], labels: dict[str, Point]
) -> Choice | None:
    """The chosen trial of one cell, or None while any of its tuning runs has no evaluation.

    ``records`` maps each deciding trial's label (rung 1 under halving) to its tuning runs'
    evaluation records (None for a run not evaluated yet); ``labels`` maps the label to the
    trial's ((key, value), ...).
    """
    order = ranked(tuning, records)
    if not order:
        return None
    table = trial_scores(tuning, records)
    best = order[0]
    for label, row in table.items():
        row["chosen"] = label == best
    edges = tuple(key for key, value in labels[best] if _at_edge(tuning, key, value))
    return Choice(best, labels[best], table, table[best]["within_limits"], edges)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if len(finite) == len(values) and finite else math.nan
