"""A planned run: one training run of a study, its configuration and metrics, and the names that
make its folder (:func:`cell_name`, :func:`run_id`).

Everything that plans, runs, checks or lays out a study's runs reads this type; it depends on the
configuration alone, so that none of those modules has to import another to name a run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agekit.config import Component, ExperimentConfig


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    cell: str
    setting: str
    seed: int
    axis_values: tuple[tuple[str, Any], ...]
    config: ExperimentConfig
    metrics: tuple[Component, ...]
    #: "tune": a grid point of a setting's tuning, scored on the validation split; "final": a run
    #: at one of the study's seeds, scored on the test split.
    phase: str = "final"
    #: The grid point: a tuning run's own, or the one a final run's cell chose.
    grid_values: tuple[tuple[str, Any], ...] = ()
    #: The cell a tuning run tunes.
    tunes: str | None = None
    #: A final run whose cell's tuning has not finished: its configuration lacks the choice.
    awaiting_tuning: bool = False
    #: A tuning run's rung under successive halving: SHORT_RUNG_MARK for rung 0, "" otherwise.
    rung: str = ""


def value_label(value: Any) -> str:
    """A value as a folder-safe part of a run's name: ``true``, ``125.0``, ``gaussian-kl``."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)


def cell_name(setting: str, axis_values: Sequence[tuple[str, Any]]) -> str:
    """``setting__divergence=gaussian-kl__k=3``: a component axis is named by its section, any
    other axis by its last key."""
    parts = [
        f"{key.split('.')[-2] if key.endswith('.name') else key.split('.')[-1]}"
        f"={value_label(value)}"
        for key, value in axis_values
    ]
    return "__".join([setting, *parts])


def run_id(cell: str, seed: int) -> str:
    return f"{cell}__seed{seed}"
