"""agekit's evaluation classifier: deterministic training, its cache, per-channel modes, and (slow)
its accuracy and the classifier metrics on real data.

The slow tests train the real classifier on mnist5k (tens of seconds on a CPU).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from metric_doubles import FlattenEncoder, TensorData, toy_context
from torch import Tensor

import agekit
from agekit.components import Generator
from agekit.metrics.classifier import (
    DigitCNN,
    EvaluationClassifier,
    TrainingProtocol,
    load_or_train,
    train_digit_classifier,
)
from agekit.metrics.mode_coverage import ModeCoverage
from agekit.metrics.sample_quality import SampleQuality
from agekit.priors import GaussianPrior


# Classifier --------------------------------------------------------------------------------------
def _pattern_digits(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Ten classes of 32x32 images: a bright square whose position encodes the class, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    x = -torch.ones(n, 1, 32, 32) + 0.2 * torch.rand(n, 1, 32, 32, generator=g)
    for i, label in enumerate(labels.tolist()):
        r, c = 4 + 6 * (label // 5) * 2, 3 + 6 * (label % 5)
        x[i, 0, r : r + 6, c : c + 5] = 1.0
    return x, labels


def test_classifier_training_is_deterministic_and_side_effect_free() -> None:
    x, y = _pattern_digits(128, 0)
    protocol = TrainingProtocol(dataset="toy", image_size=32, epochs=1)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng_state = torch.get_rng_state()
    first = train_digit_classifier(x, y, protocol).state_dict()
    second = train_digit_classifier(x, y, protocol).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det
    assert torch.equal(torch.get_rng_state(), rng_state)
    other = train_digit_classifier(x, y, TrainingProtocol("toy", 32, epochs=1, seed=1))
    assert not torch.equal(other.state_dict()["fc2.weight"], first["fc2.weight"])


def test_classifier_cache_round_trip(tmp_path: Path) -> None:
    data = TensorData(_pattern_digits(200, 1), _pattern_digits(50, 2))
    net, record = load_or_train("toy", tmp_path, 32, data=data, epochs=3)
    files = sorted(p.name for p in (tmp_path / "classifiers").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".pt")
    saved = json.loads((tmp_path / "classifiers" / files[0]).read_text())
    assert saved == record and saved["epochs"] == 3 and saved["train_split"] == "train"
    # Chance is 0.1; 3 short epochs on separable patterns get well above it (0.56 measured).
    assert record["test_accuracy"] > 0.3
    # A second call must load (not retrain): make training impossible by passing no data.
    started = time.perf_counter()
    again, again_record = load_or_train("toy", tmp_path, 32, data=None, epochs=3)
    assert time.perf_counter() - started < 5
    assert again_record == record
    assert all(
        torch.equal(a, b)
        for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_per_channel_classifier_composes_stacked_modes() -> None:
    torch.manual_seed(0)
    net = DigitCNN()
    single = EvaluationClassifier(net, {"architecture": DigitCNN.architecture})
    stacked = EvaluationClassifier(net, {}, per_channel=True)
    x = torch.rand(20, 3, 32, 32) * 2 - 1
    digits = [single.predict(x[:, c : c + 1]) for c in range(3)]
    assert torch.equal(stacked.predict(x), 100 * digits[0] + 10 * digits[1] + digits[2])
    feats = stacked.features(x)
    assert feats.shape == (20, 3 * DigitCNN.feature_dim)
    assert torch.allclose(feats[:, : DigitCNN.feature_dim], single.features(x[:, :1]))
    assert stacked.protocol["per_channel"] is True


# Slow: the real classifier and real data sets -----------------------------------------------------
@pytest.mark.slow
def test_classifier_accuracy_on_mnist5k(tmp_path: Path) -> None:
    started = time.perf_counter()
    _, record = load_or_train("mnist5k", tmp_path, 32)
    seconds = time.perf_counter() - started
    assert record["test_accuracy"] >= 0.97
    assert record["test_size"] == 1000
    print(f"mnist5k classifier: accuracy {record['test_accuracy']:.4f} in {seconds:.1f} s")


class SplitReplay(Generator):
    """Replays a fixed image set (ignoring z): a generator that is exactly the data distribution."""

    def __init__(self, images: Tensor) -> None:
        super().__init__()
        self.images = images
        self.cursor = 0

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        index = (torch.arange(z.shape[0]) + self.cursor) % self.images.shape[0]
        self.cursor += z.shape[0]
        return self.images[index]


@pytest.mark.slow
def test_sample_quality_and_stacked_modes_on_real_data(tmp_path: Path) -> None:
    mnist = agekit.create("dataset", "mnist5k", image_size=32)
    prior = GaussianPrior(8)
    encoder = FlattenEncoder(prior, 8)
    train_x, train_labels = mnist.tensors("train")
    # Splits are ordered by class: shuffle, or the replayed first 1,000 images hold 3 classes only.
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))
    train_x, train_labels = train_x[order], train_labels[order]
    good = SampleQuality(n_samples=1000)(
        toy_context(mnist, encoder, SplitReplay(train_x), prior, "mnist5k", tmp_path)
    )
    bad = SampleQuality(n_samples=1000)(
        toy_context(
            mnist,
            encoder,
            SplitReplay(train_x[train_labels == 1]),
            prior,
            "mnist5k",
            tmp_path,
        )
    )
    assert good.protocol["classifier"]["test_accuracy"] >= 0.97
    assert good.values["fd_classifier"] < bad.values["fd_classifier"]
    assert good.values["kid"] < bad.values["kid"]
    assert good.values["recall"] > 0.8 and bad.values["recall"] < 0.3
    assert good.values["coverage"] > 0.8 and bad.values["coverage"] < 0.3

    stacked = agekit.create("dataset", "stacked-mnist", image_size=32)
    test_x, test_labels = stacked.tensors("test")
    modes = ModeCoverage(n_samples_stacked=2000)(
        toy_context(stacked, encoder, SplitReplay(test_x), prior, "stacked-mnist", tmp_path)
    )
    assert modes.values["modes_captured"] == pytest.approx(len(set(test_labels.tolist())), rel=0.1)
    assert modes.protocol["classifier"]["per_channel"] is True
