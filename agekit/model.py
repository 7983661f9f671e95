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
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from agekit.components import DataSource, EncoderGenerator, Generator, Prior
from agekit.config import ExperimentConfig, parse_config
from agekit.datasets.validation import hold_out_validation
from agekit.evaluation.batchnorm import EvaluationStatistics, estimate_statistics
from agekit.games.adversary import check_adaptive_adversary, resolve_threshold
from agekit.games.age import AdaptiveAdversaryWeight, AGEGame, GameWeights, RegressionObjective
from agekit.registry import create
from agekit.runs import checkpoint as ckpt
from agekit.util.filters import low_pass

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


class DeviceUnavailable(RuntimeError):
    pass


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit device that is not there is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DeviceUnavailable(
            f"train.device: {spec!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"train.device = {spec!r} but CUDA is not available on this machine "
                "(agekit never falls back to another device; use 'auto' or 'cpu')"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailable(
                f"train.device = {spec!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type != "cpu":
        raise DeviceUnavailable(f"train.device: unsupported device type {device.type!r}")
    return device


@dataclass
class Model:
    """Everything built from a configuration: what a checkpoint restores."""

    config: ExperimentConfig
    prior: Prior
    data: DataSource
    pair: EncoderGenerator
    #: The single-process game on the bare networks (a trainer derives its own from it, with its
    #: wrappers: :meth:`AGEGame.with_networks`).
    game: AGEGame
    #: Set when ``game.objective = "regression"``: the generator-only baseline.
    regression: RegressionObjective | None = None
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
    if check_adversary and config.game.adaptive_adversary is not None:
        check_adaptive_adversary(config, "configuration")
    torch.manual_seed(config.train.seed)
    prior = create("prior", config.prior.name, dim=config.prior.dim, **config.prior.options)
    data = create("dataset", config.data.name, **config.data.options)
    if config.data.heldout == "validation":
        data = hold_out_validation(data, config.data.validation_fraction)
    backbone = create("backbone", config.backbone.name, **config.backbone.options)
    condition_shape = data.condition_shape
    if condition_shape is None:
        pair = backbone.build(data.shape, prior.dim, prior)
    else:
        pair = backbone.build(data.shape, prior.dim, prior, condition_shape=condition_shape)
    pair.encoder.to(device)
    pair.generator.to(device)
    game = AGEGame(
        pair.encoder,
        pair.generator,
        prior,
        create("divergence", config.divergence.name, **config.divergence.options),
        create("loss", config.game.data_loss.name, **config.game.data_loss.options),
        create("loss", config.game.latent_loss.name, **config.game.latent_loss.options),
        GameWeights(
            latent_weight=config.game.latent_weight,
            data_weight=config.game.data_weight,
            generator_data_weight=config.game.generator_data_weight,
            encoder_latent_weight=config.game.encoder_latent_weight,
            fake_margin=None if math.isinf(config.game.fake_margin) else config.game.fake_margin,
        ),
        latent_filter=low_pass(config.game.latent_filter, config.game.latent_filter_sigma),
    )
    regression = None
    if config.game.objective == "regression":
        regression = RegressionObjective(pair.generator, game.data_loss)
    return Model(config, prior, data, pair, game, regression)


def build_adversary(config: ExperimentConfig) -> AdaptiveAdversaryWeight | None:
    """The adaptive adversary weight of ``game.adaptive_adversary``; None when it is off."""
    adaptive = config.game.adaptive_adversary
    if adaptive is None:
        return None
    settings = adaptive.model_dump()
    prior = create("prior", config.prior.name, dim=config.prior.dim, **config.prior.options)
    divergence = create("divergence", config.divergence.name, **config.divergence.options)
    settings["threshold"] = resolve_threshold(config, prior, divergence)
    return AdaptiveAdversaryWeight(**settings)


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
