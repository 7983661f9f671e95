"""Test doubles for the whole-metric tests: tensor data sets, hand-built networks and contexts.

Imported by the metric test modules (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from agekit.components import (
    ClassifierSource,
    DataSource,
    Divergence,
    Encoder,
    EvaluationContext,
    Generator,
    Prior,
)
from agekit.metrics.classifier import DigitCNN

#: The eight unit-circle modes of ring8, in float64.
RING_MODES = torch.stack(
    [
        torch.cos(2 * math.pi * torch.arange(8) / 8),
        torch.sin(2 * math.pi * torch.arange(8) / 8),
    ],
    dim=1,
).double()


class TensorData(DataSource):
    def __init__(self, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor]) -> None:
        self._splits = {"train": train, "test": test}

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._splits["train"][0].shape[1:])

    def split(self, name: Any) -> Dataset[Any]:
        return TensorDataset(*self._splits[name])

    def tensors(self, name: Any) -> tuple[Tensor, Tensor]:
        return self._splits[name]


class FlattenEncoder(Encoder):
    """e(x) = flattened x through a batch norm, so eval/train modes give different codes."""

    def __init__(self, prior: Prior, dim: int) -> None:
        super().__init__(prior)
        self.norm = nn.BatchNorm1d(dim, affine=False)  # running stats (0, 1): eval ~ identity

    def raw(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.norm(x.flatten(1))


class ReshapeGenerator(Generator):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return z.reshape(-1, *self.shape)


class ConstantGenerator(Generator):
    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.value.expand(z.shape[0], *self.value.shape).clone()


def toy_context(
    data: DataSource,
    encoder: Encoder,
    generator: Generator,
    prior: Prior,
    name: str = "toy",
    cache_dir: Any = None,
    divergences: dict[str, Divergence] | None = None,
) -> EvaluationContext:
    return EvaluationContext(
        encoder=encoder,
        generator=generator,
        prior=prior,
        data=data,
        dataset_name=name,
        device=torch.device("cpu"),
        seed=0,
        cache_dir=cache_dir,
        divergences=divergences or {},
    )


def toy_images(seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    train = torch.rand(64, 1, 4, 4, generator=g) * 2 - 1
    test = torch.rand(32, 1, 4, 4, generator=g) * 2 - 1
    return TensorData((train, torch.zeros(64)), (test, torch.zeros(32)))


class StackedPairs(TensorData):
    """Two-channel images under a name no table knows: only the declarations tell the metrics."""

    evaluation_classifier = ClassifierSource("mnist5k", per_channel=True)
    known_modes = "classifier"


class OwnDigits(TensorData):
    evaluation_classifier = ClassifierSource("own-digits")


def fake_load_or_train(calls: list[dict[str, Any]]) -> Any:
    """A stand-in for ``load_or_train`` that records its calls and returns an untrained CNN."""

    def load(source: str, cache_dir: Any, image_size: int = 32, data: Any = None) -> Any:
        calls.append({"source": source, "image_size": image_size, "data": data})
        torch.manual_seed(0)
        return DigitCNN().eval(), {"dataset": source}

    return load
