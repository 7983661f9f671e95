"""The tables of a study file, validated: the study, its settings, profiles and references.

:mod:`agekit.studies.spec` reads a study file into a :class:`StudySpec` and plans its runs.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from agekit.config import Component, Strict
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
