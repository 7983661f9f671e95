"""A study's value checks: every run's configuration goes through the one resolver
(:class:`agekit.resolve.Resolver`), which builds each distinct component once, so that a study of
many runs fails in seconds, naming the run and the key, before any training."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from agekit.config import ConfigError, ExperimentConfig
from agekit.resolve import Resolver

if TYPE_CHECKING:
    from agekit.studies.planned import PlannedRun


def describe_run(source: str, run_id: str, axis_values: Sequence[tuple[str, Any]]) -> str:
    axes = "; ".join(f"{key} = {json.dumps(value)}" for key, value in axis_values)
    return f"{source}: run {run_id}" + (f" ({axes})" if axes else "")


@dataclass
class Checker:
    """The study file's runs, checked by one resolver (each distinct component built once)."""

    source: str
    resolver: Resolver = field(default_factory=Resolver)

    def dataset(self, where: str, config: ExperimentConfig) -> Any:
        return self.resolver.component(config, "data", where)

    def check(self, run: PlannedRun) -> None:
        """The run's components and networks build, fit together and fit the device
        (:meth:`Resolver.check`), and each of its metrics builds with its options."""
        where = describe_run(self.source, run.run_id, run.axis_values)
        self.resolver.check(run.config, where)
        data = self.dataset(where, run.config)
        for metric in run.metrics:
            built = self.resolver.build(
                where,
                f"metrics ({metric.name})",
                ("metric", metric.name, metric.options),
                partial(self.resolver.create, "metric", metric.name, metric.options),
            )
            reason = built.refuses(data)
            if reason is not None:
                raise ConfigError(f"{where}: metrics ({metric.name}): {reason}")
