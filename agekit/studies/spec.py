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
The file's tables are :mod:`agekit.studies.schema`'s; one run's configuration is built by
:mod:`agekit.studies.builder`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agekit.config import ConfigError, format_errors, load_toml
from agekit.registry import REGISTRY, SECTION_KINDS
from agekit.runs.layout import RUNS
from agekit.studies.builder import RunBuilder
from agekit.studies.checks import Checker
from agekit.studies.layout import STUDIES_DIR
from agekit.studies.planned import PlannedRun, cell_name, value_label
from agekit.studies.schema import SAFE_NAME, Profile, Setting, StudySpec
from agekit.studies.tuning import Choice, Tuning


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
            f"{path}: name {spec.name!r}: it names the study's folder "
            f"({RUNS}/{STUDIES_DIR}/NAME); use letters, digits and _ . + - only, starting with a "
            "letter or digit"
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
    metrics = spec.profiles[profile].metrics
    unknown = set(metrics) - {s.name for s in spec.settings}
    if unknown:
        raise ConfigError(f"{source}: profiles.{profile}.metrics: unknown {sorted(unknown)}")
    if not replacements and not metrics:
        return spec
    settings = []
    for setting in spec.settings:
        if setting.name in metrics:
            setting = setting.model_copy(update={"metrics": metrics[setting.name]})
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
    that values are checked too (:class:`agekit.studies.checks.Checker`); ``agekit run --list``
    skips that. A tuned setting's runs at the study's seeds carry their cell's choice once every
    tuning run of the cell is evaluated in ``out_dir`` (:mod:`agekit.studies.tuning`); until then
    they are ``awaiting_tuning``.
    """
    spec = effective_spec(spec, source, profile)
    chosen = spec.profiles[profile] if profile is not None else None
    settings = spec.settings or [_default_setting(spec, source)]
    if chosen:
        unknown = set(chosen.settings) - {s.name for s in settings}
        if unknown:
            raise ConfigError(f"{source}: profiles.{profile}.settings: unknown {sorted(unknown)}")
    axes = _available_axes(spec, source)
    for key, reference in spec.compare_to.items():
        if value_label(reference) not in {value_label(v) for v in axes[key]}:
            raise ConfigError(
                f"{source}: compare_to {key!r} = {reference!r}: that value is not in the study "
                "(an optional component that is not installed?); every comparison needs it"
            )
    _refuse_repeats(settings, axes, chosen, profile, spec, source)
    builder = RunBuilder(spec, source, out_dir, Checker(source))
    by_name = {setting.name: setting for setting in settings}
    runs: list[PlannedRun] = []
    for setting in settings:
        overrides = _profile_overrides(chosen, setting.name)
        seeds = chosen.seeds if chosen and chosen.seeds else setting.seeds or spec.seeds
        lender = None
        if setting.tuned_by is not None:
            lent = by_name[setting.tuned_by]
            lender = Lender(lent, _profile_overrides(chosen, lent.name))
        _refuse_tuning_seeds(setting, lender.setting if lender else setting, seeds, source)
        runs += _setting_runs(builder, setting, axes, seeds, overrides, lender)
    _refuse_unmeasured_primaries(settings, runs, source)
    ids = [r.run_id for r in runs]
    repeated = next((i for i in ids if ids.count(i) > 1), None)
    if repeated is not None:
        raise ConfigError(f"{source}: two runs share the id {repeated!r}; each names its folder")
    if check:
        for run in runs:
            builder.checker.check(run)
    return runs


def _setting_runs(
    builder: RunBuilder,
    setting: Setting,
    axes: dict[str, list[Any]],
    seeds: Sequence[int],
    overrides: Sequence[tuple[str, Any]],
    lender: Lender | None,
) -> list[PlannedRun]:
    """One setting's runs, cell by cell: a tuned cell's tuning runs, then its runs at ``seeds``
    (with the tuning's choice once it is made). A cell's arms add their keys after the axis
    values and before the profile's (``overrides``), and may replace its tuning's keys."""
    runs: list[PlannedRun] = []
    axis_keys = list(axes)
    for combo in itertools.product(*(axes[key] for key in axis_keys)):
        axis_values = tuple(zip(axis_keys, combo, strict=True))
        cell = cell_name(setting.name, axis_values)
        keys = [*builder.spec.arm_keys(setting.name, axis_values), *overrides]
        tune_runs, choice, tuned = _cell_choice(builder, setting, axis_values, keys, lender)
        runs += tune_runs
        chosen = choice.values if choice else ()
        for seed in seeds:
            runs.append(
                builder.run(
                    setting,
                    cell,
                    seed,
                    axis_values,
                    [*keys, *chosen],
                    grid_values=chosen,
                    awaiting_tuning=tuned and choice is None,
                )
            )
    return runs


@dataclass(frozen=True)
class Lender:
    """The setting whose tuning chooses a ``tuned_by`` setting's configuration, with the
    profile's keys for it."""

    setting: Setting
    overrides: Sequence[tuple[str, Any]]


def _cell_choice(
    builder: RunBuilder,
    setting: Setting,
    axis_values: tuple[tuple[str, Any], ...],
    keys: Sequence[tuple[str, Any]],
    lender: Lender | None,
) -> tuple[list[PlannedRun], Choice | None, bool]:
    """A cell's tuning runs, its choice (None until made) and whether it is tuned at all. A
    ``tuned_by`` setting's cell takes the choice of the same cell of its lender, whose own
    planning lists the tuning runs."""
    tuned = lender.setting if lender is not None else setting
    cell = cell_name(tuned.name, axis_values)
    try:
        tuning = builder.spec.cell_tuning(tuned, axis_values)
    except ValidationError as exc:
        where = f"{builder.source} (settings {tuned.name!r}, cell {cell!r}: its arms' tuning)"
        raise ConfigError(format_errors(exc, where)) from None
    if tuning is None:
        return [], None, False
    if lender is None:
        tune_runs, choice = builder.tuning(setting, tuning, cell, axis_values, keys)
        return tune_runs, choice, True
    lender_keys = [*builder.spec.arm_keys(tuned.name, axis_values), *lender.overrides]
    _, choice = builder.tuning(tuned, tuning, cell, axis_values, lender_keys)
    return [], choice, True


def _refuse_tuning_seeds(
    setting: Setting, tuned: Setting, seeds: Sequence[int], source: str
) -> None:
    """A tuning seed that is also a final seed would repeat a tuning run as a final one (or, for
    a ``tuned_by`` setting, judge a choice on the seed that made it)."""
    if tuned.tuning is None:
        return
    clash = sorted(set(tuned.tuning.seeds) & set(seeds))
    if clash:
        where = "" if tuned is setting else f"tuned_by {tuned.name!r}: "
        raise ConfigError(
            f"{source}: settings {setting.name!r}: {where}tuning.seeds {clash} are also the "
            "study's seeds; tuning seeds must differ so that no final run repeats a "
            "tuning run"
        )


def _refuse_unmeasured_primaries(
    settings: Sequence[Setting], runs: Sequence[PlannedRun], source: str
) -> None:
    for setting in settings:
        measured = {m.name for r in runs if r.setting == setting.name for m in r.metrics}
        if setting.primary is not None and setting.primary.split(".", 1)[0] not in measured:
            raise ConfigError(
                f"{source}: settings {setting.name!r}: primary {setting.primary!r} names a metric "
                f"the setting does not run; its metrics: {', '.join(sorted(measured))}"
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
            label = value_label(value)
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


def _available_axes(spec: StudySpec, source: str) -> dict[str, list[Any]]:
    axes = {key: list(values) for key, values in spec.axes.items()}
    for key in spec.optional:
        section = key.removesuffix(".name")
        if key not in axes or not key.endswith(".name") or section not in SECTION_KINDS:
            raise ConfigError(
                f"{source}: optional: {key!r} must be an axis over a component name "
                f"(one of {', '.join(k + '.name' for k in SECTION_KINDS)})"
            )
        kind = SECTION_KINDS[section]
        installed = set(REGISTRY.available(kind))
        missing = [v for v in axes[key] if v not in installed]
        if missing:
            from rich.console import Console

            Console(stderr=True).print(
                f"{source}: {key}: not installed, left out of this study: {', '.join(missing)} "
                f"(`agekit list {kind}` shows what is installed)"
            )
        axes[key] = [v for v in axes[key] if v in installed]
        if not axes[key]:
            raise ConfigError(f"{source}: axis {key!r}: none of its components is installed")
    return axes
