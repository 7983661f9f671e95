"""The tables of a study file, validated: the study, its settings, profiles and references.

:mod:`agekit.studies.spec` reads a study file into a :class:`StudySpec` and plans its runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field, field_validator, model_validator

from agekit.config import Component, Strict
from agekit.studies.planned import value_label
from agekit.studies.tuning import Tuning, require_values

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
    #: Another setting whose tuning chooses this one's configuration, cell by cell (the same axis
    #: values): the same trial at another budget (e.g. equal wall clock) without a second search.
    #: Its runs wait for that setting's choice.
    tuned_by: str | None = None

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
    #: Per setting name, the metrics that replace the setting's (e.g. a metric's full protocol).
    metrics: dict[str, list[str | MetricSpec]] = Field(default_factory=dict)


#: The keys of a setting's tuning table an arm may replace: its search, not its budget.
ARM_TUNING_KEYS = frozenset({"space", "grid", "edge_notes"})


class Arm(Strict):
    """What one value of an axis brings with it, beyond the value itself: the keys its runs set
    and, per tuned setting, the tuning keys it replaces. An arm is how a study crosses components
    that each need their own settings (a game's own options and its own search space)."""

    #: Dotted keys applied to every run of the arm, after the axis value.
    set: dict[str, Any] = Field(default_factory=dict)
    #: Dotted keys per setting name, after ``set``.
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: Per setting name, this arm's own search: ``space`` or ``grid`` (and ``edge_notes``) in
    #: place of the setting's. Trials, tuning seeds, halving and the selection stay the
    #: setting's, so that every arm gets the same budget and no tuning seed is a final seed.
    tuning: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("tuning")
    @classmethod
    def _search_only(cls, tuning: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for setting, changes in tuning.items():
            other = sorted(set(changes) - ARM_TUNING_KEYS)
            if other:
                raise ValueError(
                    f"tuning.{setting}: an arm replaces its search "
                    f"({', '.join(sorted(ARM_TUNING_KEYS))}) only, not {other}: trials, seeds, "
                    "halving and the selection are the setting's, the same for every arm"
                )
        return tuning


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
    #: Per axis key, per value (as written in the axis), that value's own keys and search space.
    arms: dict[str, dict[str, Arm]] = Field(default_factory=dict)
    #: Per axis key, the value every other value of that axis is compared with (a many-to-one
    #: design: k - 1 comparisons per setting instead of k (k - 1) / 2, so Holm's family is
    #: smaller). Without it every pair of cells is compared.
    compare_to: dict[str, Any] = Field(default_factory=dict)

    @field_validator("axes")
    @classmethod
    def _non_empty_axes(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return require_values(axes, "axis")

    @model_validator(mode="after")
    def _arms_name_axis_values(self) -> StudySpec:
        for where, keys in (("arms", self.arms), ("compare_to", self.compare_to)):
            unknown = sorted(set(keys) - set(self.axes))
            if unknown:
                raise ValueError(f"{where}: {unknown} are not axes; axes: {sorted(self.axes)}")
        for key, arms in self.arms.items():
            labels = {value_label(v) for v in self.axes[key]}
            strays = sorted(set(arms) - labels)
            if strays:
                raise ValueError(
                    f"arms.{key!r}: {strays} are not values of the axis; its values: "
                    f"{sorted(labels)}"
                )
        for key, value in self.compare_to.items():
            if value_label(value) not in {value_label(v) for v in self.axes[key]}:
                raise ValueError(
                    f"compare_to.{key!r}: {value!r} is not a value of the axis {self.axes[key]}"
                )
        settings = {s.name for s in self.settings} or {self.name}
        for key, arms in self.arms.items():
            for label, arm in arms.items():
                unknown = sorted((set(arm.settings) | set(arm.tuning)) - settings)
                if unknown:
                    raise ValueError(f"arms.{key!r}.{label}: unknown settings {unknown}")
                untuned = sorted(
                    s.name for s in self.settings if s.name in arm.tuning and s.tuning is None
                )
                if untuned:
                    raise ValueError(
                        f"arms.{key!r}.{label}.tuning: settings {untuned} have no "
                        "[settings.tuning] table to change"
                    )
        self._check_tuned_by()
        for setting in self.settings:
            for axis in self.arms:
                for value in self.axes[axis]:
                    self.cell_tuning(setting, ((axis, value),))  # the arm's space validates
        return self

    def _check_tuned_by(self) -> None:
        tuned = {s.name: s for s in self.settings if s.tuning is not None}
        for setting in self.settings:
            if setting.tuned_by is None:
                continue
            where = f"settings {setting.name!r}: tuned_by {setting.tuned_by!r}"
            if setting.tuning is not None:
                raise ValueError(f"{where}: a setting either tunes itself or borrows a choice")
            if setting.tuned_by not in tuned:
                raise ValueError(
                    f"{where}: expected the name of a setting with a [settings.tuning] table; "
                    f"tuned settings: {sorted(tuned) or 'none'}"
                )

    def _arm(self, axis: str, value: Any) -> Arm | None:
        return self.arms.get(axis, {}).get(value_label(value))

    def arm_keys(
        self, setting: str, axis_values: Sequence[tuple[str, Any]]
    ) -> list[tuple[str, Any]]:
        """The dotted keys a cell's arms set, in axis order (each arm's ``set``, then its keys
        for ``setting``)."""
        keys: list[tuple[str, Any]] = []
        for axis, value in axis_values:
            arm = self._arm(axis, value)
            if arm is not None:
                keys += [*arm.set.items(), *arm.settings.get(setting, {}).items()]
        return keys

    def cell_tuning(
        self, setting: Setting, axis_values: Sequence[tuple[str, Any]]
    ) -> Tuning | None:
        """``setting``'s tuning with the replacements of the cell's arms (ValidationError when a
        replacement is not a valid tuning table)."""
        tuning = setting.tuning
        for axis, value in axis_values:
            arm = self._arm(axis, value)
            changes = arm.tuning.get(setting.name) if arm is not None else None
            if changes and tuning is not None:
                tuning = Tuning.model_validate({**tuning.model_dump(), **changes})
        return tuning
