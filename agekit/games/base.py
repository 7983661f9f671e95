"""The contract of the ``game`` kind: which networks a game trains, with which optimisers, and the
losses it turns a batch into, update by update.

A :class:`Game` is what a configuration's ``[game]`` table names: its options and the rules it
plays by, checked against the prior and divergence before any training. :meth:`Game.bind` gives
the :class:`Play`: the same rules bound to built networks, a prior, a divergence and the
reconstruction losses. The trainer runs any play without knowing which game it is: for every
:class:`Phase` of an iteration it lets the phase's optimiser's networks learn, asks the phase for
its losses, and steps that optimiser.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from agekit.components import (
    Backbone,
    ComponentInputError,
    Divergence,
    Encoder,
    EncoderGenerator,
    Generator,
    Prior,
    ReconstructionLoss,
)

#: Checkpoint keys a network may not be named after (they hold the loop's own state).
RESERVED_NETWORK_NAMES = frozenset(
    {
        "format",
        "step",
        "epoch",
        "elapsed",
        "lr_scale",
        "stream",
        "rng",
        "config",
        "provenance",
        "batchnorm_statistics",
        "adversary_weight",
    }
)


@dataclass
class StepLosses:
    """A phase's loss to minimise and its terms (the trainer logs them as detached floats)."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class GameBatch:
    """One iteration's data: the real batch, its conditions (None for unconditional data), and
    the prior's sampler (each call draws ``size`` fresh codes, in the trainer's seeded order)."""

    x: Tensor
    condition: Tensor | None
    sample_z: Callable[[int], Tensor]
    #: How many codes a phase draws for the batch (the process's share of ``data.batch_size``);
    #: None: as many as ``x`` holds.
    batch_size: int | None = None

    @property
    def size(self) -> int:
        return int(self.x.shape[0]) if self.batch_size is None else self.batch_size


@dataclass(frozen=True)
class Phase:
    """One update of an iteration: the optimiser it steps and the losses it minimises, repeated
    ``repeat`` times (each repetition on fresh codes)."""

    optimiser: str
    losses: Callable[[GameBatch], StepLosses]
    repeat: int = 1
    #: The terms it computes, as the non-finite guard's error names them.
    label: str = ""


@dataclass
class GameParts:
    """What a play is bound to: the built networks (at least ``encoder`` and ``generator``), the
    prior, the divergence and the two reconstruction losses of the configuration."""

    networks: Mapping[str, nn.Module]
    prior: Prior
    divergence: Divergence
    data_loss: ReconstructionLoss
    latent_loss: ReconstructionLoss
    #: Applied to codes before the divergence: a multi-process trainer passes an all-gather, so
    #: that a batch statistic sees the global batch. None is the identity.
    gather: Callable[[Tensor], Tensor] | None = None

    @property
    def encoder(self) -> Encoder:
        encoder = self.networks["encoder"]
        assert isinstance(encoder, Encoder)
        return encoder

    @property
    def generator(self) -> Generator:
        generator = self.networks["generator"]
        assert isinstance(generator, Generator)
        return generator


class Play(ABC):
    """A game bound to its networks: the phases of one iteration."""

    @abstractmethod
    def phases(self) -> Sequence[Phase]: ...

    def after_iteration(self, record: dict[str, float], lr_ratio: float) -> None:  # noqa: B027
        """Called with the iteration's logged terms; a game with state between iterations (the
        adaptive adversary's weight) updates it here and may add to ``record``. Most games have
        none, so this is not abstract."""

    def state_dict(self) -> dict[str, Any]:
        """State a checkpoint keeps beyond the networks and optimisers."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        del state


class Game(ABC):
    """A training game, registered under the ``agekit.games`` entry-point group. Its options are
    its ``__init__``'s keyword arguments, as for every component."""

    #: The training log's names of the game's terms -> their labels, in the order progress lines
    #: and study figures show them.
    term_labels: ClassVar[Mapping[str, str]] = {}
    #: Whether the game scores codes with the configured divergence (a VAE does not).
    uses_divergence: ClassVar[bool] = True

    def check(self, prior: Prior, divergence: Divergence) -> None:
        """Raise :class:`ComponentInputError`, in one line, for a prior or divergence this game
        cannot play with. The default accepts all."""
        del prior, divergence

    def networks(
        self,
        backbone: Backbone,
        data_shape: Sequence[int],
        prior: Prior,
        condition_shape: Sequence[int] | None,
    ) -> dict[str, nn.Module]:
        """The networks the game trains, built from the configuration's backbone: ``encoder``
        (data -> the prior's space, its forward the code a user gets) and ``generator``, plus any
        the game adds (a discriminator)."""
        pair = build_pair(backbone, data_shape, prior, condition_shape)
        return {"encoder": pair.encoder, "generator": pair.generator}

    def optimisers(self) -> dict[str, tuple[str, ...]]:
        """Each optimiser's name -> the networks whose parameters it updates."""
        return {"encoder": ("encoder",), "generator": ("generator",)}

    @abstractmethod
    def bind(self, parts: GameParts) -> Play: ...


def build_pair(
    backbone: Backbone,
    data_shape: Sequence[int],
    prior: Prior,
    condition_shape: Sequence[int] | None,
) -> EncoderGenerator:
    """``backbone``'s pair at ``prior.dim``; a condition is passed only when there is one
    (unconditional backbones refuse the keyword)."""
    if condition_shape is None:
        return backbone.build(data_shape, prior.dim, prior)
    return backbone.build(data_shape, prior.dim, prior, condition_shape=condition_shape)


def check_networks(
    game: str, networks: Mapping[str, nn.Module], optimisers: Mapping[str, Sequence[str]]
) -> None:
    """A game's networks and optimisers fit the trainer and the checkpoint (ValueError, naming
    the game, when not)."""
    missing = {"encoder", "generator"} - set(networks)
    reserved = sorted(
        name for name in networks if name in RESERVED_NETWORK_NAMES or name.startswith("opt_")
    )
    unknown = sorted({net for nets in optimisers.values() for net in nets} - set(networks))
    stepped = [net for nets in optimisers.values() for net in nets]
    twice = sorted({net for net in stepped if stepped.count(net) > 1})
    for problem, names in (
        ("builds no", sorted(missing)),
        ("names networks after the checkpoint's own keys:", reserved),
        ("has optimisers over networks it does not build:", unknown),
        ("steps networks with two optimisers:", twice),
    ):
        if names:
            raise ValueError(f"game {game} {problem} {', '.join(names)}")


def refuse_sphere(game: str, prior: Prior) -> None:
    """For games whose objective is defined against a Euclidean prior only."""
    if prior.support == "sphere":
        raise ComponentInputError(
            f"game {game!r} needs a prior on R^M (prior 'gaussian'); its objective has no "
            f"sphere form here, and prior {type(prior).__name__} lives on the sphere"
        )
