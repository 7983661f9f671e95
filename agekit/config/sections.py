"""The sections of an experiment configuration: pydantic models in which an unknown key is an
error. :mod:`agekit.config.loading` reads them from TOML."""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration file or mapping is invalid; the message says where and why."""


class Strict(BaseModel):
    # No setting is meant to be infinite or NaN unless its field says so (game.fake_margin):
    # refused here, an inf learning rate or weight names its key instead of failing at step 1.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Component(Strict):
    """A registered component by name, with the options its ``__init__`` accepts."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class DataConfig(Component):
    name: str = "mnist5k"
    batch_size: int = Field(64, ge=2)
    #: DataLoader workers for data that does not live in memory.
    workers: int = Field(0, ge=0)
    #: What the metrics score against: the data set's test split, or a validation split held
    #: out of its train split (``validation_fraction`` of it, stratified by label, the same
    #: images for every seed), which training then never sees. Studies tune on "validation" so
    #: that the test split judges only the chosen settings.
    heldout: Literal["test", "validation"] = "test"
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)


class PriorConfig(Component):
    name: str = "sphere"
    #: The latent dimension M.
    dim: int = Field(64, ge=1)


class DivergenceConfig(Component):
    name: str = "gaussian-kl"


class BackboneConfig(Component):
    name: str = "dcgan"


class AdaptiveAdversary(Strict):
    """The adaptive weight on D(e(g(z))) in the encoder step, from an unmerged branch of the
    reference code.

    It is the ``--adaptive_advesary_weight`` option of ``age.py`` on the ``cAGE`` branch of
    DmitryUlyanov/AGE (commit 058cdf9), not of the master branch whose ``age.py`` the reference
    README runs (docs/method.md, "The adaptive adversary"). After every iteration the weight grows
    by ``increase`` times lr / start lr; then, when D(e(x)) or D(e(g(z))) of that iteration's
    encoder step exceeds ``threshold``, it drops by ``decrease`` times lr / start lr, floored at 0.
    There is no upper bound unless ``maximum`` is set (the branch has none). It keeps the encoder
    from driving the divergences far from the prior, which is how a plain implementation collapses
    the encoder.

    ``threshold`` is in the units of the configured divergence's formula (nats per latent
    dimension for ``gaussian-kl`` and the default ``kozachenko-leonenko``, total nats for the
    latter's ``per_dimension = false``, the reference formula's own value for
    ``reference_code_variance``). ``None`` is the branch's threshold in those units on the sphere
    prior (:func:`agekit.games.adversary.default_threshold`); set a number for any other prior or
    divergence. A threshold that the divergence exceeds for codes drawn from the prior, at
    ``data.batch_size``, is refused: there the weight would be driven to 0.
    """

    increase: float = Field(0.001, ge=0)
    decrease: float = Field(0.02, ge=0)
    threshold: float | None = Field(None, gt=0)
    initial: float = Field(1.0, ge=0)
    maximum: float | None = Field(None, gt=0)


#: The branch's ``--th``: its threshold is this multiple of the ideal KL.
REFERENCE_TH = 1.05


def reference_ideal_kl(latent_dim: int) -> float:
    """The branch's ``get_ideal_KL(nz)``: its KL formula, the mean over dimensions of
    (v^2 + m^2)/2 - log v - 1/2, at the sphere's per-coordinate moments m = 0, v = 1/M."""
    return math.log(latent_dim) - 0.5 + 0.5 / latent_dim**2


def reference_adversary_threshold(latent_dim: int) -> float:
    """The branch's threshold carried over to ``gaussian-kl`` (nats per latent dimension).

    The branch's threshold lies 5% of the ideal KL above the ideal KL. ``gaussian-kl`` is 0 at the
    prior and its log-variance term, -log(v')/2, is half the branch's -log v, so the same excess is
    0.05 x ideal / 2 here (0.057 at M = 16, 0.091 at M = 64, 0.109 at M = 128). A translation,
    not the branch's number: the two formulas differ in shape, not only by a constant.
    """
    return (REFERENCE_TH - 1.0) * reference_ideal_kl(latent_dim) / 2


class GameConfig(Strict):
    """The game (a registered component) and, for the ``age`` game, the weights of its two
    objectives (paper eq. 5 and 6) and its update plan.

    The ``age`` game takes its options as this table's own keys, as the paper's configurations
    spell them; every other game takes them under ``[game.options]``.
    """

    #: The registered game (``agekit list game``).
    name: str = "age"
    #: The options of a game other than ``age``.
    options: dict[str, Any] = Field(default_factory=dict)
    #: "regression" is another spelling of ``name = "regression"``: a baseline for conditional
    #: data that trains only the generator, minimising data_loss(x, g(z | condition)).
    objective: Literal["age", "regression"] = "age"

    #: lambda: latent reconstruction L_Z in the generator step.
    latent_weight: float = Field(1000.0, ge=0)
    #: mu: data reconstruction L_X in the encoder step.
    data_weight: float = Field(10.0, ge=0)
    #: Optional terms the paper leaves out (its figure 9 shows why the first one blurs samples).
    generator_data_weight: float = Field(0.0, ge=0)
    encoder_latent_weight: float = Field(0.0, ge=0)
    gen_steps_per_encoder_step: int = Field(2, ge=1)
    data_loss: Component = Field(default_factory=lambda: Component(name="l1"))
    latent_loss: Component = Field(default_factory=lambda: Component(name="l2"))
    #: Safeguard against encoder collapse: the encoder's reward for D(e(g(z))) stops growing
    #: beyond this value (in the divergence's units; the built-ins report nats per latent
    #: dimension). Without it the encoder can saturate, mapping every generated image to one
    #: point, and the generator gets no signal (see docs/method.md). ``inf`` turns it off, as
    #: in the paper's bare equations.
    fake_margin: float = Field(0.5, gt=0, allow_inf_nan=True)
    #: Low-pass applied to g(z) before the latent term L_Z of the generator step ('none' is the
    #: paper's game). Removes the generator's incentive to hide z in pixel-scale speckle.
    latent_filter: Literal["none", "gaussian", "median"] = "none"
    #: Standard deviation in pixels of the 'gaussian' latent filter.
    latent_filter_sigma: float = Field(1.0, gt=0)
    #: Safeguard: the reference code's adaptive weight on D(e(g(z))) in the encoder step.
    adaptive_adversary: AdaptiveAdversary | None = None

    @property
    def game_name(self) -> str:
        """The game played: ``name``, or ``regression`` when ``objective`` says so."""
        return "regression" if self.objective == "regression" else self.name

    @model_validator(mode="after")
    def _one_game(self) -> GameConfig:
        if self.objective == "regression" and self.name not in ("age", "regression"):
            raise ValueError(
                f"objective = 'regression' plays the regression game, but name is {self.name!r}: "
                "set one of them"
            )
        if self.game_name == "age" and self.options:
            raise ValueError(
                "the age game takes its options as [game]'s own keys (latent_weight, "
                f"data_weight, ...), not under [game.options]: got {sorted(self.options)}"
            )
        if self.game_name not in ("age", "regression"):
            # A key at its default says nothing (a saved configuration lists every default);
            # a key set to anything else would be silently ignored by another game.
            stray = sorted(
                key
                for key in AGE_KEYS
                if getattr(self, key) != type(self).model_fields[key].default
            )
            if stray:
                raise ValueError(
                    f"{', '.join(stray)} {'is an option' if len(stray) == 1 else 'are options'}"
                    f" of the age game; game {self.name!r} takes its options under "
                    "[game.options]"
                )
        return self


#: The keys of ``[game]`` that are the ``age`` game's options.
AGE_KEYS = frozenset(
    {
        "latent_weight",
        "data_weight",
        "generator_data_weight",
        "encoder_latent_weight",
        "gen_steps_per_encoder_step",
        "fake_margin",
        "latent_filter",
        "latent_filter_sigma",
        "adaptive_adversary",
    }
)


class OptimConfig(Strict):
    lr: float = Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    #: Multiply both learning rates by ``lr_drop_factor`` every ``lr_drop_every`` epochs.
    lr_drop_every: int | None = Field(None, ge=1)
    lr_drop_factor: float = Field(0.5, gt=0, le=1)
    #: "after": the first drop comes after ``lr_drop_every`` full epochs (factor^(epoch // n)).
    #: "reference": the reference code's, one epoch earlier: it drops at the start of every epoch
    #: with epoch % n == n - 1 (factor^((epoch + 1) // n)).
    lr_drop_timing: Literal["after", "reference"] = "after"

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        # Adam's running-average coefficients: 1 or more never forgets, below 0 is no average.
        for index, beta in enumerate(value):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"each beta must lie in [0, 1); betas[{index}] is {beta}")
        return value


class TrainConfig(Strict):
    #: Budget: iterations (one encoder update plus its generator updates) and/or epochs.
    steps: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    #: Optional wall-clock limit; the run checkpoints and stops when it is reached.
    max_minutes: float | None = Field(None, gt=0)
    device: str = "auto"
    #: Any seed torch accepts: a 64-bit integer, signed or unsigned.
    seed: int = Field(0, ge=-(2**63), le=2**64 - 1)
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    #: NHWC memory format for image networks, the layout convolution kernels prefer on CPUs and
    #: recent GPUs; it changes the layout only, never what a model computes.
    channels_last: bool = True
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    log_every: int = Field(25, ge=1)
    image_every: int = Field(500, ge=1)
    grid_size: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _budget(self) -> TrainConfig:
        if self.steps is None and self.epochs is None and self.max_minutes is None:
            raise ValueError("set a budget: train.steps, train.epochs or train.max_minutes")
        return self


class DistributedConfig(Strict):
    """Multi-process training under ``torchrun`` (ignored in a single process).

    The global batch is ``data.batch_size``; each of the N processes takes ``batch_size / N`` of
    it, so a run means the same thing on any number of processes.
    """

    #: ``global``: codes are gathered from every process (with gradients) before the divergence,
    #: so its value and every gradient equal those of the same global batch on one process.
    #: ``per-rank``: each process computes the divergence on its own codes only and the gradients
    #: are averaged: a different, cheaper estimator (a mean of N small-batch estimates, which for
    #: kNN and moment estimators is more biased than one estimate on the whole batch).
    divergence: Literal["global", "per-rank"] = "global"
    #: Convert BatchNorm layers to SyncBatchNorm (statistics over the global batch). Without it
    #: each process normalises with its own slice's statistics, so a network with batch norm
    #: computes a different forward pass than on one process.
    sync_batchnorm: bool = False


class ExperimentConfig(Strict):
    name: str = "age"
    #: A named recipe (see agekit.config.recipes) whose values the file's keys override.
    recipe: str | None = None
    out_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    prior: PriorConfig = Field(default_factory=PriorConfig)
    divergence: DivergenceConfig = Field(default_factory=DivergenceConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    game: GameConfig = Field(default_factory=GameConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=1000))
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    #: Experiment trackers the run's scalars and image grids are sent to, each a registered
    #: logger (``agekit list logger``) by name with its options: ``[[loggers]]`` tables. None by
    #: default; ``metrics.jsonl`` is written either way.
    loggers: list[Component] = Field(default_factory=list)

    @field_validator("loggers")
    @classmethod
    def _each_logger_once(cls, value: list[Component]) -> list[Component]:
        names = [logger.name for logger in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"{', '.join(map(repr, twice))} listed more than once")
        return value

    @field_validator("name")
    @classmethod
    def _name_stays_under_out_dir(cls, value: str) -> str:
        # The run folder is out_dir / name: an absolute name or ".." would put it elsewhere.
        path = PurePosixPath(value.replace("\\", "/"))
        if not value or path.is_absolute() or ".." in path.parts or PureWindowsPath(value).drive:
            raise ValueError(
                "must be a relative folder name inside out_dir (no leading '/', drive or '..')"
            )
        return value

    @model_validator(mode="after")
    def _reference_threshold_needs_the_sphere(self) -> ExperimentConfig:
        adaptive = self.game.adaptive_adversary
        if adaptive is not None and adaptive.threshold is None and self.prior.name != "sphere":
            raise ValueError(
                "game.adaptive_adversary.threshold: the reference threshold is defined for the "
                f"sphere prior only; set a number for prior {self.prior.name!r}"
            )
        return self

    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name
