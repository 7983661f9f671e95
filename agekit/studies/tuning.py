"""Tuning a setting per cell on a validation split before the test split judges it.

A setting with a ``[settings.tuning]`` table gives every cell (every combination of the study's
axes) the same declared grid and the same tuning seeds::

    [settings.tuning]
    grid = { "game.latent_weight" = [125.0, 500.0], "game.fake_margin" = [0.5, 1.0] }
    metric = "sample-quality.fd_classifier"   # 'metric.key' of the evaluation record
    goal = "min"
    seeds = [1000]                           # disjoint from the study's seeds
    at_most = { "reconstruction.recon_mse" = 0.03 }   # optional limits on other keys

Each grid point trains once per tuning seed with ``data.heldout = "validation"``: the metrics score
it on images held out of the train split, never on the test split. Per cell, the grid point with
the best mean ``metric`` over the tuning seeds, among those whose means respect ``at_most``,
becomes the configuration of that cell's runs at the study's seeds, which are scored on the test
split as usual. A cell's runs wait until all its tuning runs are evaluated; the report shows the
whole grid per cell and what was chosen.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from agekit.config import Strict
from agekit.studies.statistics import flatten

#: The part of a tuning run's id and cell that separates it from the cell it tunes.
TUNE_MARK = "__tune__"


def require_values(table: dict[str, list[Any]], what: str) -> dict[str, list[Any]]:
    """``table`` itself when every key has at least one value (axes and grids cross them)."""
    for key, values in table.items():
        if not values:
            raise ValueError(f"{what} {key!r} has no values")
    return table


class Tuning(Strict):
    #: Dotted configuration keys and the values to try, crossed.
    grid: dict[str, list[Any]] = Field(min_length=1)
    #: 'metric.key' of the evaluation record to select by (e.g. "sample-quality.fd_classifier").
    metric: str = Field(pattern=r"^[^.]+\..+$")
    goal: Literal["min", "max"]
    #: Training seeds of the tuning runs; they must differ from the study's seeds.
    seeds: list[int] = Field(default_factory=lambda: [1000], min_length=1)
    #: 'metric.key' -> the largest mean a grid point may have to be chosen.
    at_most: dict[str, float] = Field(default_factory=dict)
    #: Share of the train split held out as the validation split.
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)

    @field_validator("grid")
    @classmethod
    def _non_empty_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return require_values(grid, "grid key")

    def points(self) -> list[tuple[tuple[str, Any], ...]]:
        """Every grid point as ((key, value), ...), in the grid's order."""
        keys = list(self.grid)
        return [
            tuple(zip(keys, combo, strict=True))
            for combo in itertools.product(*(self.grid[k] for k in keys))
        ]


@dataclass(frozen=True)
class Choice:
    """What a cell's tuning chose, with the evidence."""

    values: tuple[tuple[str, Any], ...]
    #: Per grid point (its label): mean of the metric, n seeds, and whether it met ``at_most``.
    table: dict[str, dict[str, Any]]
    #: False when no grid point met ``at_most`` and the best by the metric alone was taken.
    within_limits: bool


def point_label(values: Sequence[tuple[str, Any]], label: Any) -> str:
    """A grid point as a folder-safe text: latent_weight=125.0__fake_margin=0.5."""
    return "__".join(f"{key.split('.')[-1]}={label(value)}" for key, value in values)


def grid_scores(
    tuning: Tuning, records: dict[str, list[dict[str, Any] | None]]
) -> dict[str, dict[str, Any]]:
    """Per grid point label: the mean ``metric`` over its evaluated tuning runs, their number
    ``n``, the means of the ``at_most`` keys and whether they are ``within_limits``."""
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


def choose(
    tuning: Tuning, records: dict[str, list[dict[str, Any] | None]], labels: dict[str, Any]
) -> Choice | None:
    """The chosen grid point of one cell, or None while any tuning run has no evaluation.

    ``records`` maps each grid point's label to its tuning runs' evaluation records (None for a
    run not evaluated yet); ``labels`` maps the label to the point's ((key, value), ...).
    """
    if any(record is None for runs in records.values() for record in runs):
        return None
    table = grid_scores(tuning, records)
    scored = {label: row for label, row in table.items() if math.isfinite(row["mean"])}
    if not scored:
        return None
    allowed = {label: row for label, row in scored.items() if row["within_limits"]}
    pool = allowed or scored
    sign = 1.0 if tuning.goal == "min" else -1.0
    # the grid's order breaks ties, so the choice does not depend on dict order
    best = min(pool, key=lambda label: (sign * pool[label]["mean"], list(records).index(label)))
    for label, row in table.items():
        row["chosen"] = label == best
    return Choice(labels[best], table, within_limits=bool(allowed))


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if len(finite) == len(values) and finite else math.nan


def tuning_lines(study: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """The report's tuning section: per tuned cell, every grid point's validation scores and the
    choice (empty when the study tunes nothing)."""
    settings = {s["name"]: s for s in study.get("settings", []) if s.get("tuning")}
    if not settings:
        return []
    lines = [
        "## Tuning on the validation split",
        "",
        "Each tuned cell tried every grid point at the tuning seeds, scored on a validation split "
        "held out of the train split (the test split never took part); the chosen point, marked, "
        "is what the cell's runs above used.",
        "",
    ]
    for name, setting in settings.items():
        tuning = Tuning.model_validate(setting["tuning"])
        limits = "".join(f", mean {k} at most {v:g}" for k, v in tuning.at_most.items())
        lines += [
            f"### {name}",
            "",
            f"Grid: {', '.join(f'`{k}` in {v}' for k, v in tuning.grid.items())}; tuning seeds "
            f"{tuning.seeds}; chosen by the {tuning.goal}imum mean `{tuning.metric}`{limits}; "
            f"validation fraction {tuning.validation_fraction:g}.",
            "",
        ]
        cells = sorted({r["tunes"] for r in records if r.get("setting") == name and r.get("tunes")})
        for cell in cells:
            mine = [r for r in records if r.get("tunes") == cell]
            by_point: dict[str, list[dict[str, Any] | None]] = {}
            values: dict[str, tuple[tuple[str, Any], ...]] = {}
            for point in tuning.points():
                label = point_label(point, str)
                found: list[dict[str, Any] | None] = [
                    r for r in mine if _same_point(r.get("grid", {}), point)
                ]
                by_point[label] = found + [None] * (len(tuning.seeds) - len(found))
                values[label] = point
            choice = choose(tuning, by_point, values)
            header = ["grid point", f"{tuning.metric} (mean, n)", *tuning.at_most, "chosen"]
            lines += [
                f"**{cell.removeprefix(name + '__')}**"
                + ("" if choice else " (not every tuning run is evaluated yet)"),
                "",
                "| " + " | ".join(header) + " |",
                "|---" * len(header) + "|",
            ]
            for label, scores in (
                choice.table if choice else grid_scores(tuning, by_point)
            ).items():
                row = [label.replace("__", ", "), f"{scores['mean']:.4g} (n={scores['n']})"]
                row += [f"{scores['limits'][k]:.4g}" for k in tuning.at_most]
                row.append("**yes**" if scores.get("chosen") else "")
                lines.append("| " + " | ".join(row) + " |")
            if choice and not choice.within_limits:
                lines.append("")
                lines.append("No grid point met the limits; the best by the metric alone was used.")
            lines.append("")
    return lines


def _same_point(grid: dict[str, Any], point: tuple[tuple[str, Any], ...]) -> bool:
    return all(key in grid and grid[key] == value for key, value in point)
