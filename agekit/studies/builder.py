"""One planned run's configuration and metrics, built and validated, and a cell's tuning runs.

A run's configuration is the study's base, then its setting's, then its axis values, then the
profile's keys and (for a tuned cell) the tuning's choice, each applied in that order. A tuned
cell's runs are planned as far as the study folder's evaluations allow: under successive halving,
rung 1 once rung 0 is evaluated, and the cell's choice once every deciding run is
(:mod:`agekit.studies.tuning`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agekit.config import (
    Component,
    ConfigError,
    ExperimentConfig,
    deep_merge,
    parse_config,
    set_dotted,
)
from agekit.runs.layout import RUNS
from agekit.studies.checks import Checker, describe_run
from agekit.studies.layout import EVAL_FILE, is_complete, read_json, run_dir
from agekit.studies.planned import PlannedRun, run_id, value_label
from agekit.studies.schema import Setting, StudySpec
from agekit.studies.tuning import (
    SHORT_RUNG_MARK,
    TUNE_MARK,
    Choice,
    Tuning,
    choose,
    point_label,
    promoted,
)

#: Per trial label, its tuning runs' evaluation records (None for a run not evaluated yet).
Evaluations = dict[str, list[dict[str, Any] | None]]


@dataclass
class RunBuilder:
    """Builds and validates one planned run's configuration and metrics."""

    spec: StudySpec
    source: str
    out_dir: Path
    checker: Checker
    #: Per cell, its tuning runs and choice: a ``tuned_by`` setting reads its lender's cells,
    #: which the lender's own planning has already built.
    _tunings: dict[str, tuple[list[PlannedRun], Choice | None]] = field(
        default_factory=dict, init=False, repr=False
    )

    def run(
        self,
        setting: Setting,
        cell: str,
        seed: int,
        axis_values: tuple[tuple[str, Any], ...],
        keys: Sequence[tuple[str, Any]],
        **fields: Any,
    ) -> PlannedRun:
        """The run of ``cell`` at ``seed``: base, setting, axis values, then ``keys`` in order."""
        from agekit.evaluation.scoring import default_metrics
        from agekit.registry import REGISTRY, RegistryError, validate_options

        name = run_id(cell, seed)
        raw = deep_merge(self.spec.base, setting.config)
        for key, value in [*axis_values, *keys]:
            set_dotted(raw, key, value)
        set_dotted(raw, "train.seed", seed)
        raw["name"] = name
        raw["out_dir"] = str(self.out_dir / RUNS)
        config = parse_config(raw, f"{self.source} (run {name})")
        metrics = _metrics(setting, config, self.checker, name, axis_values, default_metrics)
        for metric in metrics:
            try:
                factory = REGISTRY.load("metric", metric.name)
                validate_options(factory, metric.options, f"metric {metric.name!r}")
            except RegistryError as exc:
                raise ConfigError(f"{self.source}: settings {setting.name!r}: {exc}") from None
        return PlannedRun(name, cell, setting.name, seed, axis_values, config, metrics, **fields)

    def tuning(
        self,
        setting: Setting,
        tuning: Tuning,
        cell: str,
        axis_values: tuple[tuple[str, Any], ...],
        overrides: Sequence[tuple[str, Any]],
    ) -> tuple[list[PlannedRun], Choice | None]:
        """A cell's tuning runs planned so far (under halving, rung 1 once rung 0 is evaluated)
        and its choice (None until every deciding run is evaluated)."""
        if cell not in self._tunings:
            self._tunings[cell] = self._plan_tuning(setting, tuning, cell, axis_values, overrides)
        return self._tunings[cell]

    def _plan_tuning(
        self,
        setting: Setting,
        tuning: Tuning,
        cell: str,
        axis_values: tuple[tuple[str, Any], ...],
        overrides: Sequence[tuple[str, Any]],
    ) -> tuple[list[PlannedRun], Choice | None]:
        held_out = [
            ("data.heldout", "validation"),
            ("data.validation_fraction", tuning.validation_fraction),
        ]
        trials = dict(tuning.points())

        def group(label: str, rung: str, extra: Sequence[tuple[str, Any]]) -> list[PlannedRun]:
            point = trials[label]
            folder = point_label(point, value_label) if tuning.grid else label
            return [
                self.run(
                    setting,
                    f"{cell}{TUNE_MARK}{folder}{rung}",
                    seed,
                    axis_values,
                    [*overrides, *point, *held_out, *extra],
                    phase="tune",
                    grid_values=point,
                    tunes=cell,
                    rung=rung,
                )
                for seed in tuning.seeds
            ]

        # a deciding run's configuration is the final runs' schedule: check it before any rung
        self._check_tuning(setting, tuning, group(next(iter(trials)), "", [])[0])
        runs: list[PlannedRun] = []
        going_on = list(trials)
        if tuning.halving is not None:
            short = {
                label: group(label, SHORT_RUNG_MARK, [("train.steps", tuning.halving.steps)])
                for label in trials
            }
            runs += [run for runs_ in short.values() for run in runs_]
            advanced = promoted(tuning, self._evaluations(short))
            if not advanced:
                return runs, None
            going_on = advanced
        deciding = {label: group(label, "", []) for label in going_on}
        runs += [run for runs_ in deciding.values() for run in runs_]
        choice = choose(
            tuning, self._evaluations(deciding), {label: trials[label] for label in deciding}
        )
        return runs, choice

    def _evaluations(self, groups: dict[str, list[PlannedRun]]) -> Evaluations:
        return {label: [_evaluation(self.out_dir, run) for run in g] for label, g in groups.items()}

    def _check_tuning(self, setting: Setting, tuning: Tuning, run: PlannedRun) -> None:
        """The tuning's metrics are measured, and its schedule is the final runs' own."""
        where = f"{self.source}: settings {setting.name!r}"
        measured = {metric.name for metric in run.metrics}
        for role, key in [("metric", tuning.metric), *(("at_most", k) for k in tuning.at_most)]:
            if key.split(".", 1)[0] not in measured:
                raise ConfigError(
                    f"{where}: tuning.{role} {key!r} names a metric the setting does not run; its "
                    f"metrics: {', '.join(sorted(measured))} (keys are 'metric.key', e.g. "
                    "'reconstruction.recon_mse')"
                )
        config = run.config
        if (
            config.optim.lr_drop_every is not None
            or config.train.epochs is not None
            or config.train.max_minutes is not None
        ):
            raise ConfigError(
                f"{where}: a tuned setting counts its schedule in iterations (train.steps, no "
                "optim.lr_drop_every, train.epochs or train.max_minutes): the validation split "
                "shortens an epoch and the machine's load changes a wall-clock budget, so such "
                "a schedule would differ between its tuning and final runs"
            )
        full = config.train.steps
        if tuning.halving is not None and (full is None or tuning.halving.steps >= full):
            raise ConfigError(
                f"{where}: tuning.halving.steps ({tuning.halving.steps}) must be below the "
                f"setting's train.steps ({full}): rung 0 is the short budget"
            )


def _evaluation(out_dir: Path, run: PlannedRun) -> dict[str, Any] | None:
    """The run's evaluation record when it is complete for the planned science, else None."""
    if not is_complete(out_dir, run):
        return None
    record = read_json(run_dir(out_dir, run) / EVAL_FILE)
    return record if isinstance(record, dict) else None


def _metrics(
    setting: Setting,
    config: ExperimentConfig,
    checker: Checker,
    run_name: str,
    axis_values: Sequence[tuple[str, Any]],
    defaults: Callable[[str, str], Sequence[str]],
) -> tuple[Component, ...]:
    """The setting's metrics, or the defaults for the run's data set (its kind decides)."""
    if setting.metrics:
        return tuple(
            Component(name=m) if isinstance(m, str) else Component(name=m.name, options=m.options)
            for m in setting.metrics
        )
    data = checker.dataset(describe_run(checker.source, run_name, axis_values), config)
    return tuple(Component(name=name) for name in defaults(config.data.name, data.kind))
