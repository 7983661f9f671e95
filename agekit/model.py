"""A model built from a configuration, and a trained one rebuilt from its checkpoint.

:func:`build_model` resolves every component a configuration names (prior, data, backbone,
divergence, losses) and assembles the single-process game; :func:`load_trained` does the same
from a checkpoint's saved configuration and loads the trained weights. The trainer, evaluation and
the commands that sample, reconstruct or interpolate all start here; none of them needs the
training loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agekit import checkpoint as ckpt
from agekit.components import DataSource, EncoderGenerator, Prior
from agekit.config import ExperimentConfig, parse_config, reference_adversary_threshold
from agekit.datasets.validation import hold_out_validation
from agekit.filters import low_pass
from agekit.game import AdaptiveAdversaryWeight, AGEGame, GameWeights, RegressionObjective
from agekit.registry import create

__all__ = [
    "DeviceUnavailable",
    "Model",
    "build_model",
    "load_trained",
    "resolve_device",
]


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


def build_model(config: ExperimentConfig, device: torch.device) -> Model:
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
    if settings["threshold"] is None:  # the config checked that the prior is the sphere
        settings["threshold"] = reference_adversary_threshold(config.prior.dim)
    return AdaptiveAdversaryWeight(**settings)


def load_trained(path: str | Path, device: str = "auto") -> tuple[Model, dict[str, Any]]:
    """Rebuild the model of a checkpoint (file or run folder) for sampling and evaluation."""
    path = ckpt.resolve(path)
    target = resolve_device(device)
    state = ckpt.load(path, map_location=target)
    config = parse_config(state["config"], f"{path} (saved configuration)")
    model = build_model(config, target)
    model.pair.encoder.load_state_dict(state["encoder"])
    model.pair.generator.load_state_dict(state["generator"])
    return model, state
