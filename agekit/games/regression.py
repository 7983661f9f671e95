"""The non-adversarial baseline of conditional models: regression of x given the condition."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

from torch import Tensor, nn

from agekit.components import Generator, ReconstructionLoss
from agekit.games.base import Game, GameBatch, GameParts, Phase, Play, StepLosses


class RegressionObjective(Play):
    """``data_loss(x, g(z | condition))``, minimised by the generator alone.

    The generator still receives z (e.g. the constant noise maps of a colorization net), but
    nothing asks it to use z, so it is free to ignore it (the regression-to-the-mean effect the
    paper's section 3.2 contrasts AGE with). No encoder, no divergence.
    """

    def __init__(self, generator: Generator, data_loss: ReconstructionLoss) -> None:
        self.generator = generator
        self.data_loss = data_loss

    def generator_step(self, z: Tensor, x: Tensor, condition: Tensor | None = None) -> StepLosses:
        data_rec = self.data_loss(x, self.generator(z, condition))
        return StepLosses(data_rec, {"regression_l1": data_rec})

    def phases(self) -> list[Phase]:
        return [Phase("generator", self._phase, label="regression_l1")]

    def with_networks(
        self,
        encoder: nn.Module,
        generator: nn.Module,
        trained_encoder: nn.Module | None = None,
        trained_generator: nn.Module | None = None,
        gather: Callable[[Tensor], Tensor] | None = None,
    ) -> RegressionObjective:
        """The same objective on a trainer's wrapped generator (DDP, compile)."""
        del encoder, trained_encoder, gather
        trained = generator if trained_generator is None else trained_generator
        return RegressionObjective(trained, self.data_loss)  # type: ignore[arg-type]

    def _phase(self, batch: GameBatch) -> StepLosses:
        return self.generator_step(batch.sample_z(batch.size), batch.x, batch.condition)


class Regression(Game):
    """Registered as ``regression`` (also spelled ``game.objective = "regression"``): trains the
    generator only, on ``game.data_loss``."""

    term_labels: ClassVar[Mapping[str, str]] = {"regression_l1": "L_X"}
    uses_divergence = False

    def optimisers(self) -> dict[str, tuple[str, ...]]:
        return {"generator": ("generator",)}

    def bind(self, parts: GameParts) -> RegressionObjective:
        return RegressionObjective(parts.generator, parts.data_loss)
