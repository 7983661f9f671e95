"""A study: one TOML file naming a base configuration, settings, axes and seeds.

    name = "kl_vs_kozachenko"
    question = "Do the parametric KL and the kNN estimator work equally well?"
    seeds = [0, 1, 2]

    [base]                      # an experiment configuration (agekit.config), recipe allowed
    ...
    [[settings]]                # named overrides of base, e.g. one per data set
    name = "mnist5k"
    metrics = ["reconstruction", "sample-quality"]   # default: by data set
    config = { data = { name = "mnist5k" } }

    [axes]                      # dotted configuration keys and the values to cross
    "divergence.name" = ["gaussian-kl", "kozachenko-leonenko"]

    [profiles.gpu]              # `agekit run STUDY --profile gpu`
    set = { "train.steps" = 20000 }
    settings.mnist5k = { "backbone.options.width" = 64 }

Runs = settings x product(axes) x seeds (a setting may name its own seeds); a *cell* is a run
without its seed. A setting with a ``[settings.tuning]`` grid first tunes each cell on a validation
split (:mod:`agekit.studies.tuning`). Every run's configuration is built and validated before
any training: types and names, and values too, by building each distinct component with its
options (``k = 0`` on an axis fails in a second, naming the study file, the run and the key, not
after the runs before it have trained); those value checks are :mod:`agekit.studies.checks`'.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from agekit.config import (
    Component,
    ConfigError,
    ExperimentConfig,
    Strict,
    deep_merge,
    format_errors,
    load_toml,
    parse_config,
    set_dotted,
)
from agekit.studies.checks import Checker, describe_run
from agekit.studies.checks import check_runs as check_runs  # re-exported for callers of spec
from agekit.studies.tuning import (
    SHORT_RUNG_MARK,
    TUNE_MARK,
    Choice,
    Tuning,
    choose,
    point_label,
    promoted,
    require_values,
)

#: A name that names a folder: no path separator, no leading dot (so neither ".." nor a hidden
#: folder), nothing a shell would need quoted.
SAFE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.+-]*"


class MetricSpec(Component):
    pass


class Setting(Strict):
    name: str
    config: dict[str, Any] = Field(default_factory=dict)
    #: Metric names or {name, options} tables; empty means the data set's defaults.
    metrics: list[str | MetricSpec] = Field(default_factory=list)
    #: A grid tried per cell on a validation split before the study's seeds run (.tuning).
    tuning: Tuning | None = None
    #: The pre-declared primary 'metric.key' of this setting: its comparisons between cells form
    #: the family of Holm's adjustment; every other metric is reported as descriptive.
    primary: str | None = Field(None, pattern=r"^[^.]+\..+$")
    #: This setting's training seeds, in place of the study's (a profile's seeds replace both):
    #: a setting whose single runs vary more needs more of them.
    seeds: list[int] | None = Field(None, min_length=1)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(SAFE_NAME, value):
            raise ValueError("use letters, digits and _ . + - only (it names folders)")
        return value


class Profile(Strict):
    #: Dotted keys applied to every run.
    set: dict[str, Any] = Field(default_factory=dict)
    #: Dotted keys per setting name.
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seeds: list[int] | None = None
    #: Per setting name, keys of its ``[settings.tuning]`` table to replace (e.g. more trials).
    tuning: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Reference(Strict):
    """A published number quoted beside the study's own, with its source."""

    source: str
    method: str
    setting: str
    values: dict[str, float | str]
    note: str = ""


class StudySpec(Strict):
    name: str
    question: str = ""
    description: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    base: dict[str, Any] = Field(default_factory=dict)
    settings: list[Setting] = Field(default_factory=list)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    profiles: dict[str, Profile] = Field(default_factory=dict)
    #: Seed of the evaluation (sample draws, subsets), the same for every run.
    eval_seed: int = 1234
    #: Runs trained at once when ``agekit run`` is not given --jobs (results do not depend on it).
    jobs: int = Field(1, ge=1)
    #: Axes (dotted keys ending in ``.name``) whose values may name components that are not
    #: installed: such values are left out, and said so, instead of failing the study.
    optional: list[str] = Field(default_factory=list)
    #: Published numbers to print beside the study's own.
    references: list[Reference] = Field(default_factory=list)

    @field_validator("axes")
    @classmethod
    def _non_empty_axes(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return require_values(axes, "axis")


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


def _label(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)


def load_study(path: str | Path) -> tuple[StudySpec, Path]:
    path = Path(path)
    raw = load_toml(path, "study file")
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, str(path))) from None
    if not re.fullmatch(SAFE_NAME, spec.name):
        # The name is the default study folder (runs/studies/NAME): "../x" or "/x" would write
        # the study's runs anywhere on disk.
        raise ConfigError(
            f"{path}: name {spec.name!r}: it names the study's folder (runs/studies/NAME); use "
            "letters, digits and _ . + - only, starting with a letter or digit"
        )
    return spec, path


def effective_spec(spec: StudySpec, source: str, profile: str | None) -> StudySpec:
    """``spec`` with the named profile's tuning replacements applied to its settings."""
    if profile is None:
        return spec
    if profile not in spec.profiles:
        known = ", ".join(sorted(spec.profiles)) or "(none)"
        raise ConfigError(f"{source}: no profile {profile!r}; profiles: {known}")
    replacements = spec.profiles[profile].tuning
    if not replacements:
        return spec
    settings = []
    for setting in spec.settings:
        changes = replacements.get(setting.name)
        if changes and setting.tuning is None:
            raise ConfigError(
                f"{source}: profiles.{profile}.tuning.{setting.name}: the setting has no "
                "[settings.tuning] table to change"
            )
        if changes and setting.tuning is not None:
            try:
                tuning = Tuning.model_validate({**setting.tuning.model_dump(), **changes})
            except ValidationError as exc:
                where = f"{source} (profiles.{profile}.tuning.{setting.name})"
                raise ConfigError(format_errors(exc, where)) from None
            setting = setting.model_copy(update={"tuning": tuning})
        settings.append(setting)
    unknown = set(replacements) - {s.name for s in spec.settings}
    if unknown:
        raise ConfigError(f"{source}: profiles.{profile}.tuning: unknown {sorted(unknown)}")
    return spec.model_copy(update={"settings": settings})


def plan(
    spec: StudySpec,
    source: str,
    out_dir: Path,
    profile: str | None = None,
    check: bool = True,
) -> list[PlannedRun]:
    """Expand and validate every run; raises ConfigError naming the run and key on any problem.

    With ``check`` (the default) every distinct component is also built with its options, so
    that values are checked too (see :func:`check_runs`); ``agekit run --list`` skips that.
    A tuned setting's runs at the study's seeds carry their cell's choice once every tuning run of
    the cell is evaluated in ``out_dir`` (:mod:`agekit.studies.tuning`); until then they are
    ``awaiting_tuning``.
    """
    spec = effective_spec(spec, source, profile)
    chosen = spec.profiles[profile] if profile is not None else None
    settings = spec.settings or [_default_setting(spec, source)]
    if chosen:
        unknown = set(chosen.settings) - {s.name for s in settings}
        if unknown:
            raise ConfigError(f"{source}: profiles.{profile}.settings: unknown {sorted(unknown)}")
    axes = _available_axes(spec, source)
    axis_keys = list(axes)
    _refuse_repeats(settings, axes, chosen, profile, spec, source)
    builder = _RunBuilder(spec, source, out_dir, Checker(source))
    runs: list[PlannedRun] = []
    for setting in settings:
        overrides = _profile_overrides(chosen, setting.name)
        seeds = chosen.seeds if chosen and chosen.seeds else setting.seeds or spec.seeds
        if setting.tuning is not None:
            clash = sorted(set(setting.tuning.seeds) & set(seeds))
            if clash:
                raise ConfigError(
                    f"{source}: settings {setting.name!r}: tuning.seeds {clash} are also the "
                    "study's seeds; tuning seeds must differ so that no final run repeats a "
                    "tuning run"
                )
        for combo in itertools.product(*(axes[key] for key in axis_keys)):
            axis_values = tuple(zip(axis_keys, combo, strict=True))
            cell = "__".join(
                [setting.name]
                + [
                    f"{key.split('.')[-2] if key.endswith('.name') else key.split('.')[-1]}"
                    f"={_label(value)}"
                    for key, value in axis_values
                ]
            )
            choice = None
            if setting.tuning is not None:
                tune_runs, choice = builder.tuning(
                    setting, setting.tuning, cell, axis_values, overrides
                )
                runs += tune_runs
            for seed in seeds:
                runs.append(
                    builder.run(
                        setting,
                        cell,
                        seed,
                        axis_values,
                        [*overrides, *(choice.values if choice else ())],
                        grid_values=choice.values if choice else (),
                        awaiting_tuning=setting.tuning is not None and choice is None,
                    )
                )
    for setting in settings:
        measured = {m.name for r in runs if r.setting == setting.name for m in r.metrics}
        if setting.primary is not None and setting.primary.split(".", 1)[0] not in measured:
            raise ConfigError(
                f"{source}: settings {setting.name!r}: primary {setting.primary!r} names a metric "
                f"the setting does not run; its metrics: {', '.join(sorted(measured))}"
            )
    ids = [r.run_id for r in runs]
    repeated = next((i for i in ids if ids.count(i) > 1), None)
    if repeated is not None:
        raise ConfigError(f"{source}: two runs share the id {repeated!r}; each names its folder")
    if check:
        for run in runs:
            builder.checker.check(run)
    return runs


@dataclass
class _RunBuilder:
    """Builds and validates one planned run's configuration and metrics."""

    spec: StudySpec
    source: str
    out_dir: Path
    checker: Checker

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

        run_id = f"{cell}__seed{seed}"
        raw = deep_merge(self.spec.base, setting.config)
        for key, value in [*axis_values, *keys]:
            set_dotted(raw, key, value)
        set_dotted(raw, "train.seed", seed)
        raw["name"] = run_id
        raw["out_dir"] = str(self.out_dir / "runs")
        config = parse_config(raw, f"{self.source} (run {run_id})")
        metrics = _metrics(setting, config, self.checker, run_id, axis_values, default_metrics)
        for metric in metrics:
            try:
                factory = REGISTRY.load("metric", metric.name)
                validate_options(factory, metric.options, f"metric {metric.name!r}")
            except RegistryError as exc:
                raise ConfigError(f"{self.source}: settings {setting.name!r}: {exc}") from None
        return PlannedRun(run_id, cell, setting.name, seed, axis_values, config, metrics, **fields)

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
        held_out = [
            ("data.heldout", "validation"),
            ("data.validation_fraction", tuning.validation_fraction),
        ]
        trials = dict(tuning.points())

        def group(label: str, rung: str, extra: Sequence[tuple[str, Any]]) -> list[PlannedRun]:
            point = trials[label]
            folder = point_label(point, _label) if tuning.grid else label
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

    def _evaluations(
        self, groups: dict[str, list[PlannedRun]]
    ) -> dict[str, list[dict[str, Any] | None]]:
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


def _refuse_repeats(
    settings: Sequence[Setting],
    axes: dict[str, list[Any]],
    chosen: Profile | None,
    profile: str | None,
    spec: StudySpec,
    source: str,
) -> None:
    """A setting name, seed or axis value given twice would plan two runs into one folder: the
    error names the list and the value, not the runs' ids."""
    names = [s.name for s in settings]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{source}: settings: two settings are named {name!r}")
    lists: list[tuple[str, Sequence[int]]] = [("seeds", spec.seeds)]
    if chosen is not None and chosen.seeds:
        lists.append((f"profiles.{profile}.seeds", chosen.seeds))
    for setting in settings:
        lists.append((f"settings {setting.name!r}: seeds", setting.seeds or []))
    for where, seeds in lists:
        twice = next((seed for seed in seeds if list(seeds).count(seed) > 1), None)
        if twice is not None:
            raise ConfigError(f"{source}: {where}: seed {twice} is listed twice")
    for key, values in axes.items():
        seen: dict[str, Any] = {}
        for value in values:
            label = _label(value)
            if label in seen:
                same = seen[label] == value and type(seen[label]) is type(value)
                what = (
                    f"value {value!r} is listed twice"
                    if same
                    else f"values {seen[label]!r} and {value!r} both name the folder part {label!r}"
                )
                raise ConfigError(f"{source}: axes {key!r}: {what}")
            seen[label] = value


def _profile_overrides(chosen: Profile | None, setting: str) -> list[tuple[str, Any]]:
    """A profile's dotted keys for one setting, in the order they apply."""
    if chosen is None:
        return []
    return [*chosen.set.items(), *chosen.settings.get(setting, {}).items()]


def _evaluation(out_dir: Path, run: PlannedRun) -> dict[str, Any] | None:
    """The run's evaluation record when it is complete for the planned science, else None."""
    from agekit.studies.layout import EVAL_FILE, is_complete, read_json, run_dir

    if not is_complete(out_dir, run):
        return None
    record = read_json(run_dir(out_dir, run) / EVAL_FILE)
    return record if isinstance(record, dict) else None


def _default_setting(spec: StudySpec, source: str) -> Setting:
    """A study without [[settings]] has one setting named after the study."""
    try:
        return Setting(name=spec.name)
    except ValidationError:
        raise ConfigError(
            f"{source}: name {spec.name!r}: a study without [[settings]] names its runs' folders "
            "after the study; use letters, digits and _ . + - only (or add a [[settings]] table "
            "with such a name)"
        ) from None


#: The configuration section of a component name -> its registry kind.
_SECTION_KINDS = {
    "data": "dataset",
    "prior": "prior",
    "divergence": "divergence",
    "backbone": "backbone",
}


def _available_axes(spec: StudySpec, source: str) -> dict[str, list[Any]]:
    from agekit.registry import REGISTRY

    axes = {key: list(values) for key, values in spec.axes.items()}
    for key in spec.optional:
        section = key.split(".")[0]
        if key not in axes or not key.endswith(".name") or section not in _SECTION_KINDS:
            raise ConfigError(
                f"{source}: optional: {key!r} must be an axis over a component name "
                f"(one of {', '.join(k + '.name' for k in _SECTION_KINDS)})"
            )
        installed = set(REGISTRY.available(_SECTION_KINDS[section]))
        missing = [v for v in axes[key] if v not in installed]
        if missing:
            from rich.console import Console

            Console(stderr=True).print(
                f"{source}: {key}: not installed, left out of this study: {', '.join(missing)} "
                f"(`agekit list {_SECTION_KINDS[section]}` shows what is installed)"
            )
        axes[key] = [v for v in axes[key] if v in installed]
        if not axes[key]:
            raise ConfigError(f"{source}: axis {key!r}: none of its components is installed")
    return axes


def _metrics(
    setting: Setting,
    config: ExperimentConfig,
    checker: Checker,
    run_id: str,
    axis_values: Sequence[tuple[str, Any]],
    defaults: Any,
) -> tuple[Component, ...]:
    if setting.metrics:
        return tuple(
            Component(name=m) if isinstance(m, str) else Component(name=m.name, options=m.options)
            for m in setting.metrics
        )
    data = checker.dataset(describe_run(checker.source, run_id, axis_values), config)
    return tuple(Component(name=name) for name in defaults(config.data.name, data.kind))
