"""One path from a configuration's tables to built, checked components.

Every caller that turns a configuration into components goes through :class:`Resolver`: reading a
configuration file (:meth:`Resolver.validate`, which imports components but builds only what a
cross-check needs), a study's checks before any training and :func:`agekit.model.build_model`
(:meth:`Resolver.check` and :meth:`Resolver.component`). Which table names which kind is the
registry's table of kinds (:data:`agekit.registry.SECTION_KINDS`); what a component cannot serve
it says itself (a divergence's supported priors and smallest batch, a game's
:meth:`~agekit.games.base.Game.check`, a backbone's refusal of a data shape).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from agekit.config.sections import AGE_KEYS, Component, ConfigError, ExperimentConfig
from agekit.registry import LIST_KINDS, REGISTRY, SECTION_KINDS, RegistryError, validate_options

if TYPE_CHECKING:
    from torch import nn

#: The tables a game's networks depend on.
NETWORK_SECTIONS = ("game", "backbone", "data", "prior")

#: What building a component may raise for a bad configuration (as opposed to a bug): caught and
#: reported with the key that named it.
BUILD_ERRORS: tuple[type[Exception], ...] = (RegistryError, ValueError, TypeError, OSError)


def section_options(config: ExperimentConfig, section: str) -> tuple[str, dict[str, Any]]:
    """The registered name and the options of the component that ``section`` names."""
    if section == "prior":
        return config.prior.name, {"dim": config.prior.dim, **config.prior.options}
    if section == "game":
        game = config.game
        if game.game_name == "age":
            options = game.model_dump(mode="python", include=set(AGE_KEYS))
            return "age", options
        return game.game_name, dict(game.options)
    table: Any = config
    for part in section.split("."):
        table = getattr(table, part)
    assert isinstance(table, Component)
    return table.name, dict(table.options)


class Resolver:
    """Builds each distinct component once (by kind, name and options) and remembers it, or the
    error it gave, so that a study of many runs builds each of its components once."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}

    def build(self, where: str, key: str, identity: Sequence[Any], make: Callable[[], Any]) -> Any:
        """``make()``, once per ``identity``; a configuration error names ``where`` and ``key``."""
        token = json.dumps(list(identity), sort_keys=True, default=str)
        if token not in self._built:
            try:
                self._built[token] = make()
            except BUILD_ERRORS as exc:
                self._built[token] = ConfigError(f"{key}: {str(exc) or type(exc).__name__}")
        value = self._built[token]
        if isinstance(value, ConfigError):
            raise ConfigError(f"{where}: {value}") from None
        return value

    @staticmethod
    def create(kind: str, name: str, options: dict[str, Any]) -> Any:
        """A component that no configuration table names (a study's metrics), by kind."""
        return REGISTRY.create(kind, name, **options)

    def component(self, config: ExperimentConfig, section: str, where: str = "") -> Any:
        """The component ``section`` names, built with its options."""
        kind = SECTION_KINDS[section]
        name, options = section_options(config, section)
        if section == "game" and name == "age" and config.game.adaptive_adversary is not None:
            options["adaptive_adversary"] = self._adversary(config, where)
        return self.build(
            where or "configuration",
            section,
            (kind, name, options),
            lambda: REGISTRY.create(kind, name, **options),
        )

    def _adversary(self, config: ExperimentConfig, where: str) -> dict[str, float]:
        """The adaptive adversary's settings with the threshold in the divergence's units."""
        # Imported here: the adversary's module imports torch, and reading a configuration
        # file (which imports this module) must not.
        from agekit.games.adversary import resolve_threshold

        adaptive = config.game.adaptive_adversary
        assert adaptive is not None
        settings = adaptive.model_dump()
        prior = self.component(config, "prior", where)
        divergence = self.component(config, "divergence", where)
        settings["threshold"] = resolve_threshold(config, prior, divergence)
        return settings

    def validate(self, config: ExperimentConfig, where: str) -> None:
        """Every named component exists, imports, and accepts its options; the divergence can
        take a batch. Builds only the divergence: reading a file stays quick."""
        for section, kind in SECTION_KINDS.items():
            name, options = section_options(config, section)
            try:
                factory = REGISTRY.load(kind, name)
                validate_options(factory, options, f"{kind} {name!r}")
            except RegistryError as exc:
                raise ConfigError(f"{where}: {section}: {exc}") from None
        self.listed(config, where)
        self._check_batch(config, where, quiet=True)

    def listed(self, config: ExperimentConfig, where: str) -> dict[str, list[Any]]:
        """The components the configuration's lists of tables name (``[[loggers]]``), built, by
        key: ConfigError naming the entry (``loggers[0]``) when its name is not registered, its
        options are refused or a library it declares is not installed (:func:`requirement_error`).
        Building one imports none of its libraries (the contract of these kinds)."""
        found: dict[str, list[Any]] = {}
        for key, kind in LIST_KINDS.items():
            found[key] = []
            for index, entry in enumerate(getattr(config, key)):
                try:
                    factory = REGISTRY.load(kind, entry.name)
                    validate_options(factory, entry.options, f"{kind} {entry.name!r}")
                    problem = requirement_error(kind, entry.name, factory)
                    if problem is None:
                        found[key].append(REGISTRY.create(kind, entry.name, **entry.options))
                except RegistryError as exc:
                    problem = str(exc)
                if problem is not None:
                    raise ConfigError(f"{where}: {key}[{index}]: {problem}")
        return found

    def loggers(self, config: ExperimentConfig, where: str = "configuration") -> list[Any]:
        """The configuration's loggers (``[[loggers]]``), built; none has imported its library."""
        return self.listed(config, where)["loggers"]

    def check(self, config: ExperimentConfig, where: str) -> None:
        """Build every component of ``config`` and its networks, and check what a run needs that
        no single component can see: the divergence against the prior and the batch, the game
        against both, the training split's size, the device. Raises ConfigError naming
        ``where`` and the key."""
        # torch, as in _adversary
        from agekit.games.adversary import check_adaptive_adversary
        from agekit.training.devices import check_device

        check_adaptive_adversary(config, where)
        built = {section: self.component(config, section, where) for section in SECTION_KINDS}
        prior, divergence, game, data = (
            built["prior"],
            built["divergence"],
            built["game"],
            built["data"],
        )
        self._check_support(config, where, prior, divergence, game)
        if game.uses_divergence:
            self._check_batch(config, where, quiet=False)
        self.build(
            where,
            "backbone",
            (
                "networks",
                *(section_options(config, s) for s in ("game", "backbone", "data", "prior")),
            ),
            lambda: game.networks(built["backbone"], data.shape, prior, data.condition_shape),
        )
        self._check_train_size(config, where, data)
        t = config.train
        self.build(
            where,
            "train.device",
            ("device", t.device, t.precision, t.compile),
            lambda: check_device(t.device, t.precision, t.compile),
        )

    def _check_support(
        self, config: ExperimentConfig, where: str, prior: Any, divergence: Any, game: Any
    ) -> None:
        if game.uses_divergence:
            supports = divergence.guarantees.supports
            if prior.support not in supports:
                raise ConfigError(
                    f"{where}: divergence: {config.divergence.name!r} cannot serve prior "
                    f"{config.prior.name!r} ({prior.support} support); it supports: "
                    f"{', '.join(supports)}"
                )
        self.build(
            where,
            "game",
            (
                "game check",
                section_options(config, "game"),
                *(section_options(config, s) for s in ("prior", "divergence")),
            ),
            lambda: game.check(prior, divergence),
        )

    def _check_batch(self, config: ExperimentConfig, where: str, quiet: bool) -> None:
        """A divergence that needs more codes than a batch holds (kozachenko-leonenko's k-th
        neighbour with k >= data.batch_size) would otherwise fail at the first step."""
        try:
            divergence = self.component(config, "divergence", where)
            needed = int(divergence.min_batch())
        except (ConfigError, RegistryError, ValueError, TypeError, OSError):
            if quiet:  # its options were checked; a plugin that cannot say is left to run time
                return
            raise
        batch = config.data.batch_size
        if needed <= batch:
            return
        k = getattr(divergence, "k", None)
        if isinstance(k, int):
            raise ConfigError(
                f"{where}: divergence.options.k = {k} needs k < data.batch_size ({batch}): lower "
                f"divergence.options.k or raise data.batch_size to at least {needed}"
            )
        raise ConfigError(
            f"{where}: divergence {config.divergence.name!r} needs at least {needed} codes a "
            f"batch; data.batch_size is {batch}: raise it to {needed}"
        )

    def _check_train_size(self, config: ExperimentConfig, where: str, data: Any) -> None:
        size = self.build(
            where,
            "data",
            ("size", *section_options(config, "data")),
            lambda: train_size(data),
        )
        batch = config.data.batch_size
        if size is not None and batch > size:
            raise ConfigError(
                f"{where}: data.batch_size = {batch} exceeds the training split's {size} samples"
            )


def requirement_error(kind: str, name: str, factory: Any) -> str | None:
    """One line naming the modules that component ``name`` declares it needs (its class's
    ``requires``, as a logger's tracking library) and that are not installed, with the command that
    installs them (its ``install``); None when all are. Found without importing them."""
    missing = []
    for module in getattr(factory, "requires", ()):
        try:
            installed = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            installed = False
        if not installed:
            missing.append(module)
    if not missing:
        return None
    verb = "is" if len(missing) == 1 else "are"
    install = getattr(factory, "install", None) or f"install {' and '.join(missing)}"
    return f"{kind} {name!r} needs {', '.join(missing)}, which {verb} not installed: {install}"


def train_size(data: Any) -> int | None:
    """The number of training samples, where the data set can say without loading them all."""
    tensors = data.tensors("train")
    if tensors is not None:
        return int(tensors[0].shape[0])
    split = data.split("train")
    return len(split) if hasattr(split, "__len__") else None


def built_networks(game: Any, backbone: Any, data: Any, prior: Any) -> dict[str, nn.Module]:
    """``game``'s networks for ``data`` and ``prior``, with its optimisers checked against them:
    every optimiser names networks the game builds, none is stepped by two optimisers, and no
    network takes a name the checkpoint keeps for the loop's own state."""
    from agekit.games.base import check_networks  # torch: see Resolver._adversary

    networks: dict[str, nn.Module] = game.networks(
        backbone, data.shape, prior, data.condition_shape
    )
    check_networks(type(game).__name__, networks, game.optimisers())
    return networks
