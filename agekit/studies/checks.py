"""A study's value checks: every distinct component of the planned runs is built once with its
options, and what a run needs that no single component can see (the divergence's smallest batch,
the prior's support, the training split's size, the device) is checked before any training."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from agekit.config import ConfigError, ExperimentConfig
from agekit.games.adversary import check_adaptive_adversary

if TYPE_CHECKING:
    from agekit.studies.spec import PlannedRun


def check_runs(runs: Sequence[PlannedRun], source: str) -> None:
    """Build every distinct component of ``runs`` with its options, and check what a run needs
    that no single component can see (the divergence's smallest batch, the prior's support, the
    training split's size, the device); raises ConfigError naming the study file, the run (with
    its axis values) and the key. Each distinct component is built once."""
    checker = Checker(source)
    for run in runs:
        checker.check(run)


def describe_run(source: str, run_id: str, axis_values: Sequence[tuple[str, Any]]) -> str:
    axes = "; ".join(f"{key} = {json.dumps(value)}" for key, value in axis_values)
    return f"{source}: run {run_id}" + (f" ({axes})" if axes else "")


@dataclass
class Checker:
    """Builds each distinct component once and remembers it (or why it failed)."""

    source: str
    built: dict[str, Any] = field(default_factory=dict)

    def build(
        self,
        where: str,
        key: str,
        cache_key: tuple[Any, ...],
        make: Callable[[], Any],
    ) -> Any:
        from agekit.components import ComponentInputError
        from agekit.registry import RegistryError

        token = json.dumps(cache_key, sort_keys=True, default=str)
        if token not in self.built:
            try:
                self.built[token] = make()
            except (RegistryError, ComponentInputError, ValueError, TypeError, OSError) as exc:
                message = str(exc) or type(exc).__name__
                self.built[token] = ConfigError(f"{key}: {message}")
        value = self.built[token]
        if isinstance(value, ConfigError):
            raise ConfigError(f"{where}: {value}") from None
        return value

    def dataset(self, where: str, config: ExperimentConfig) -> Any:
        from agekit.registry import create

        d = config.data
        return self.build(
            where,
            "data",
            ("dataset", d.name, d.options),
            lambda: create("dataset", d.name, **d.options),
        )

    def check(self, run: PlannedRun) -> None:
        from agekit.registry import create

        config = run.config
        where = describe_run(self.source, run.run_id, run.axis_values)
        if config.game.adaptive_adversary is not None:
            check_adaptive_adversary(config, where)
        data = self.dataset(where, config)
        p = config.prior
        prior = self.build(
            where,
            "prior",
            ("prior", p.name, p.dim, p.options),
            lambda: create("prior", p.name, dim=p.dim, **p.options),
        )
        d = config.divergence
        divergence = self.build(
            where,
            "divergence",
            ("divergence", d.name, d.options),
            lambda: create("divergence", d.name, **d.options),
        )
        for key, loss in (
            ("game.data_loss", config.game.data_loss),
            ("game.latent_loss", config.game.latent_loss),
        ):
            self.build(
                where,
                key,
                ("loss", loss.name, loss.options),
                partial(create, "loss", loss.name, **loss.options),
            )
        b = config.backbone
        backbone = self.build(
            where,
            "backbone",
            ("backbone", b.name, b.options),
            lambda: create("backbone", b.name, **b.options),
        )
        self.build(
            where,
            "backbone",
            ("build", b.name, b.options, config.data.name, config.data.options, p.name, p.dim),
            lambda: _build_pair(backbone, data, prior),
        )
        for metric in run.metrics:
            self.build(
                where,
                f"metrics ({metric.name})",
                ("metric", metric.name, metric.options),
                partial(create, "metric", metric.name, **metric.options),
            )
        supports = getattr(getattr(divergence, "guarantees", None), "supports", None)
        support = getattr(prior, "support", None)
        if supports is not None and support is not None and support not in supports:
            raise ConfigError(
                f"{where}: divergence: {d.name!r} cannot serve prior {p.name!r} "
                f"({support} support); it supports: {', '.join(supports)}"
            )
        batch = config.data.batch_size
        smallest = divergence.min_batch() if hasattr(divergence, "min_batch") else 2
        if smallest > batch:
            raise ConfigError(
                f"{where}: divergence: {d.name!r} with options {d.options} needs batches of at "
                f"least {smallest} codes; data.batch_size is {batch}"
            )
        size = self.build(
            where,
            "data",
            ("size", config.data.name, config.data.options),
            lambda: _train_size(data),
        )
        if size is not None and batch > size:
            raise ConfigError(
                f"{where}: data.batch_size = {batch} exceeds the training split's {size} samples"
            )
        t = config.train
        self.build(
            where,
            "train.device",
            ("device", t.device, t.precision, t.compile),
            lambda: _check_device(t.device, t.precision, t.compile),
        )


def _build_pair(backbone: Any, data: Any, prior: Any) -> None:
    condition_shape = data.condition_shape
    if condition_shape is None:
        backbone.build(data.shape, prior.dim, prior)
    else:
        backbone.build(data.shape, prior.dim, prior, condition_shape=condition_shape)


def _train_size(data: Any) -> int | None:
    tensors = data.tensors("train")
    if tensors is not None:
        return int(tensors[0].shape[0])
    split = data.split("train")
    return len(split) if hasattr(split, "__len__") else None


def _check_device(device: str, precision: str, compile: bool) -> None:
    from agekit.model import DeviceUnavailable, resolve_device

    try:
        resolved = resolve_device(device)
    except DeviceUnavailable as exc:
        raise ValueError(str(exc).removeprefix("train.device: ")) from None
    if precision == "bf16" and resolved.type != "cuda":
        raise ValueError(f"train.precision = 'bf16' needs a CUDA device, not {device!r}")
    if compile and resolved.type != "cuda":
        raise ValueError(f"train.compile = true is supported on CUDA devices only, not {device!r}")
