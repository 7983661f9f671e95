"""The linear-probe metric on synthetic labelled blobs, against a scikit-learn oracle."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from agekit.components import DataSource, Encoder, EvaluationContext, Prior
from agekit.evaluation.scoring import score
from agekit.metrics.classifier import load_split
from agekit.metrics.linear_probe import LinearProbe, random_encoder
from agekit.priors import GaussianPrior
from agekit.registry import REGISTRY, create

CLASSES = 4
SHAPE = (1, 4, 4)
PIXELS = 16
CODE_DIM = 8


class Blobs(DataSource):
    """One Gaussian blob per class as (1, 4, 4) 'images'; every class equally often per split."""

    def __init__(self, noise: float = 0.05, per_class: tuple[int, int] = (40, 25)) -> None:
        g = torch.Generator().manual_seed(0)
        means = (torch.randint(0, 2, (CLASSES, PIXELS), generator=g) * 1.2 - 0.6).float()
        self._splits: dict[str, tuple[Tensor, Tensor]] = {}
        for name, count in zip(("train", "test"), per_class, strict=True):
            labels = torch.arange(CLASSES).repeat_interleave(count)
            x = means[labels] + noise * torch.randn(labels.shape[0], PIXELS, generator=g)
            self._splits[name] = (x.clamp(-1, 1).reshape(-1, *SHAPE), labels)

    @property
    def shape(self) -> tuple[int, ...]:
        return SHAPE

    def split(self, name: Any) -> Dataset[Any]:
        return TensorDataset(*self._splits[name])

    def tensors(self, name: Any) -> tuple[Tensor, Tensor]:
        return self._splits[name]


class Unlabelled(Blobs):
    def tensors(self, name: Any) -> tuple[Tensor, Tensor]:
        x, labels = self._splits[name]
        return x, torch.full_like(labels, -1)


class Conditional(Blobs):
    @property
    def condition_shape(self) -> tuple[int, ...] | None:
        return SHAPE


class LinearEncoder(Encoder):
    """Flattens and applies a fixed (seeded) linear map: the blobs stay linearly separable."""

    def __init__(self, prior: Prior, batchnorm: bool = False) -> None:
        super().__init__(prior)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            self.linear = nn.Linear(PIXELS, CODE_DIM)
        self.norm = nn.BatchNorm1d(CODE_DIM) if batchnorm else nn.Identity()

    def raw(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.norm(self.linear(x.flatten(1)))


class ConstantEncoder(Encoder):
    """The same code for every input, and no parameters at all."""

    def raw(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return torch.full((x.shape[0], CODE_DIM), 0.5, dtype=x.dtype, device=x.device)


def _context(data: DataSource, encoder: Encoder, name: str = "blobs") -> EvaluationContext:
    return EvaluationContext(
        encoder=encoder,
        generator=nn.Identity(),  # type: ignore[arg-type]  # the probe never decodes
        prior=GaussianPrior(CODE_DIM),
        data=data,
        dataset_name=name,
        device=torch.device("cpu"),
        seed=0,
        cache_dir=None,
        divergences={},
    )


def _oracle(data: DataSource, n_train: int | None) -> float:
    """Raw-pixel test error of a probe fitted here, independently of the metric's code."""
    x_train, y_train = load_split(data, "train", n_train, seed=0)
    x_test, y_test = data.tensors("test")  # type: ignore[misc]
    probe = Pipeline(
        [("scale", StandardScaler()), ("lr", LogisticRegression(C=1.0, max_iter=1000))]
    )
    probe.fit(x_train.flatten(1).double().numpy(), y_train.numpy())
    predicted = probe.predict(x_test.flatten(1).double().numpy())
    return float(np.mean(predicted != y_test.numpy())) * 100


def test_separable_codes_give_no_error() -> None:
    encoder = LinearEncoder(GaussianPrior(CODE_DIM))
    result = LinearProbe()(_context(Blobs(), encoder))
    assert result.values["error_percent"] == pytest.approx(0.0, abs=1.0)
    assert result.values["raw_pixels_error_percent"] == pytest.approx(0.0, abs=1.0)
    assert set(result.values) == set(LinearProbe.headline)
    assert result.protocol["n_train"] == 160 and result.protocol["n_test"] == 100
    assert result.protocol["n_classes"] == CLASSES and result.protocol["bn_mode"] == "eval"
    assert all(result.details["probe_converged"].values())


def test_constant_codes_are_at_chance() -> None:
    result = LinearProbe()(_context(Blobs(), ConstantEncoder(GaussianPrior(CODE_DIM))))
    chance = (1 - 1 / CLASSES) * 100
    assert result.values["error_percent"] == pytest.approx(chance, abs=1e-9)
    # a re-initialised constant encoder is still constant
    assert result.values["random_encoder_error_percent"] == pytest.approx(chance, abs=1e-9)


@pytest.mark.parametrize("n_train", [None, 60])
def test_raw_pixel_baseline_matches_a_direct_fit(n_train: int | None) -> None:
    data = Blobs(noise=0.9)  # overlapping blobs: the error is neither 0 nor chance
    result = LinearProbe(n_train=n_train)(_context(data, LinearEncoder(GaussianPrior(CODE_DIM))))
    expected = _oracle(data, n_train)
    assert 5.0 < expected < 60.0
    assert result.values["raw_pixels_error_percent"] == pytest.approx(expected, abs=1e-9)


def test_repeatable_and_leaves_the_encoder_alone() -> None:
    encoder = LinearEncoder(GaussianPrior(CODE_DIM), batchnorm=True)
    encoder.train()
    before = copy.deepcopy(encoder.state_dict())
    context = _context(Blobs(noise=0.9), encoder)
    first = score("linear-probe", LinearProbe(), context)
    second = score("linear-probe", LinearProbe(), context)
    assert first.to_record() == second.to_record()
    assert encoder.training and encoder.norm.training
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_random_encoder_is_reinitialised_with_real_data_statistics() -> None:
    encoder = LinearEncoder(GaussianPrior(CODE_DIM), batchnorm=True)
    x = Blobs().tensors("train")[0]
    one = random_encoder(encoder, x, seed=3, batch_size=1000, device=torch.device("cpu"))
    two = random_encoder(encoder, x, seed=3, batch_size=1000, device=torch.device("cpu"))
    other = random_encoder(encoder, x, seed=4, batch_size=1000, device=torch.device("cpu"))
    assert isinstance(one, LinearEncoder) and isinstance(other, LinearEncoder)
    assert isinstance(two, LinearEncoder)
    assert not torch.equal(one.linear.weight, encoder.linear.weight)
    assert torch.equal(one.linear.weight, two.linear.weight)
    assert not torch.equal(one.linear.weight, other.linear.weight)
    assert not one.training
    with torch.no_grad():
        features = one.linear(x.flatten(1))
    norm = one.norm
    assert isinstance(norm, nn.BatchNorm1d) and norm.running_mean is not None
    torch.testing.assert_close(norm.running_mean, features.mean(0))


def test_registered_as_a_metric() -> None:
    assert "linear-probe" in REGISTRY.available("metric")
    metric = create("metric", "linear-probe", n_train=100, C=0.5)
    assert isinstance(metric, LinearProbe) and metric.C == 0.5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (Unlabelled(), "unlabelled"),
        (Blobs(per_class=(0, 5)), "0 train samples"),
        (Blobs(per_class=(5, 0)), "0 test samples"),
        (Conditional(), "conditional"),
    ],
)
def test_data_it_cannot_probe_is_refused_by_name(data: DataSource, message: str) -> None:
    context = _context(data, LinearEncoder(GaussianPrior(CODE_DIM)), name="my-blobs")
    with pytest.raises(ValueError, match="my-blobs") as caught:
        LinearProbe()(context)
    assert message in str(caught.value)


def test_one_class_is_refused_by_name() -> None:
    data = Blobs()
    x, labels = data._splits["train"]
    data._splits["train"] = (x, torch.zeros_like(labels))
    with pytest.raises(ValueError, match="my-blobs' gives 160 train samples of 1 class"):
        LinearProbe()(_context(data, LinearEncoder(GaussianPrior(CODE_DIM)), name="my-blobs"))
