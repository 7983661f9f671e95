"""A model built from a configuration, and a trained one rebuilt from its checkpoint.

:func:`build_model` resolves every component a configuration names (prior, data, backbone,
divergence, losses) and assembles the single-process game; :func:`load_trained` does the same
from a checkpoint's saved configuration and loads the trained weights and the batch-norm statistics
every consumer evaluates and samples with (:func:`use_evaluation_statistics`). The trainer,
evaluation and the commands that sample, reconstruct or interpolate all start here; none of them
needs the training loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from agekit.components import DataSource, EncoderGenerator, Generator, Prior
from agekit.config import ExperimentConfig, parse_config
from agekit.datasets.validation import hold_out_validation
from agekit.evaluation.batchnorm import EvaluationStatistics, estimate_statistics
from agekit.games.adversary import check_adaptive_adversary
from agekit.games.base import Game, GameParts, Play
from agekit.resolve import Resolver, built_networks
from agekit.runs import checkpoint as ckpt
from agekit.training.devices import DeviceUnavailable, resolve_device

__all__ = [
    "STATISTICS_KEY",
    "DeviceUnavailable",
    "Model",
    "build_model",
    "load_trained",
    "resolve_device",
    "use_evaluation_statistics",
]

#: The note a checkpoint without stored batch-norm statistics gets (agekit's commands print it).
log = logging.getLogger(__name__)

#: The checkpoint key of the statistics :func:`use_evaluation_statistics` loads.
STATISTICS_KEY = "batchnorm_statistics"


@dataclass
class Model:
    """Everything built from a configuration: what a checkpoint restores."""

    config: ExperimentConfig
    prior: Prior
    data: DataSource
    pair: EncoderGenerator
    #: The game the configuration names: its rules and options (:class:`Game`).
    rules: Game
    #: The game bound to the bare networks, for a single process (a trainer binds its own, to
    #: its wrapped networks).
    game: Play
    #: Every network the game trains, by name: ``encoder``, ``generator`` and any the game adds.
    networks: dict[str, nn.Module]
    #: What the game is bound to: the networks, prior, divergence and losses.
    parts: GameParts
    #: The batch-norm statistics the networks are evaluated and sampled with, once
    #: :func:`use_evaluation_statistics` gave them (None: the running statistics of training).
    statistics: EvaluationStatistics | None = None
    #: The checkpoint file :func:`load_trained` read (a run folder's newest that loads).
    checkpoint: Path | None = None

    def generator_for(self, inputs: Literal["prior", "codes"]) -> Generator:
        """The generator, with the batch-norm statistics for decoding ``inputs`` (prior samples
        or codes of real data) loaded when the model has evaluation statistics."""
        if self.statistics is not None:
            self.statistics.generator.load(self.pair.generator, inputs)
        return self.pair.generator


def build_model(
    config: ExperimentConfig, device: torch.device, check_adversary: bool = True
) -> Model:
    """The configuration's components, assembled on ``device``. ``check_adversary`` refuses an
    adaptive-adversary threshold that the divergence exceeds at the prior (training would drive
    its weight to 0); a trained run's saved configuration is rebuilt without that check."""
    if check_adversary:
        check_adaptive_adversary(config, "configuration")
    torch.manual_seed(config.train.seed)
    resolver = Resolver()
    prior = resolver.component(config, "prior")
    data = resolver.component(config, "data")
    if config.data.heldout == "validation":
        data = hold_out_validation(data, config.data.validation_fraction)
    game = resolver.component(config, "game")
    networks = built_networks(game, resolver.component(config, "backbone"), data, prior)
    for network in networks.values():
        network.to(device)
    parts = GameParts(
        networks,
        prior,
        resolver.component(config, "divergence"),
        resolver.component(config, "game.data_loss"),
        resolver.component(config, "game.latent_loss"),
    )
    pair = EncoderGenerator(parts.encoder, parts.generator)
    return Model(config, prior, data, pair, game, game.bind(parts), networks, parts)


def use_evaluation_statistics(
    model: Model, stored: Mapping[str, Any] | None = None
) -> EvaluationStatistics | None:
    """Give ``model``'s networks the batch-norm statistics that evaluation, the image commands and
    :mod:`agekit.evaluation.inference` all use, and keep them as ``model.statistics``.

    ``stored`` is what a checkpoint holds under ``"batchnorm_statistics"`` (the trainer writes
    it: :func:`agekit.evaluation.batchnorm.estimate_statistics`); without it they are estimated
    now, with
    the same protocol, from the model's data. Conditional models keep the running statistics of
    training (nothing is re-estimated for them) and get None. The generator is left with the
    prior-sample statistics loaded; :meth:`Model.generator_for` switches.
    """
    if model.data.condition_shape is not None:
        model.statistics = None
        return None
    if stored is not None:
        statistics = EvaluationStatistics.from_state(stored)
        statistics.protocol["source"] = "stored in the checkpoint when it was written"
    else:
        estimated = estimate_statistics(
            model.pair.encoder, model.pair.generator, model.prior, model.data
        )
        assert estimated is not None  # unconditional data
        statistics = estimated
        statistics.protocol["source"] = "estimated when the model was loaded"
    statistics.load(model.pair.encoder, model.pair.generator, "prior")
    model.statistics = statistics
    return statistics


def load_trained(
    path: str | Path,
    device: str = "auto",
    batchnorm: Literal["evaluation", "running"] = "evaluation",
) -> tuple[Model, dict[str, Any]]:
    """Rebuild the model of a checkpoint (file or run folder) for sampling and evaluation.

    ``batchnorm = "evaluation"`` gives the networks the statistics every agekit consumer uses
    (:func:`use_evaluation_statistics`); a checkpoint that does not store them gets them estimated
    from the run's data, with a warning. ``"running"`` keeps the running statistics of training.
    """
    if batchnorm not in ("evaluation", "running"):
        raise ValueError(f"batchnorm must be 'evaluation' or 'running', got {batchnorm!r}")
    target = resolve_device(device)
    path, state = ckpt.load_resolved(path, map_location=target)
    config = parse_config(state["config"], f"{path} (saved configuration)")
    model = build_model(config, target, check_adversary=False)
    model.checkpoint = path
    model.pair.encoder.load_state_dict(state["encoder"])
    model.pair.generator.load_state_dict(state["generator"])
    if batchnorm == "evaluation":
        stored = state.get(STATISTICS_KEY)
        if stored is None and model.data.condition_shape is None:
            log.warning(
                "%s holds no batch-norm statistics for evaluation; estimating them from the "
                "run's training data (%s)",
                path,
                config.data.name,
            )
        use_evaluation_statistics(model, stored)
    return model, state
