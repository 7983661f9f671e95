"""Stacked MNIST under the published protocol (``stacked-mnist-local``): stacks of the full MNIST
read from a local folder, counted by a classifier trained on that folder's train split.

A fake MNIST (200 train / 100 test digits whose labels a classifier learns in seconds) stands in
for the real one, which this machine does not have.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fake_mnist import write_fake_mnist
from metric_doubles import FlattenEncoder, ReshapeGenerator, toy_context

import agekit
from agekit.config import Component, parse_config
from agekit.datasets import DatasetNotFoundError
from agekit.datasets.validation import hold_out_validation
from agekit.evaluation.scoring import default_metrics, evaluate
from agekit.metrics.classifier import TrainingProtocol, classifier_for
from agekit.priors import GaussianPrior
from agekit.registry import REGISTRY
from agekit.training.trainer import Trainer


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A fake MNIST folder and a classifier cache shared by this module's tests (the classifier
    trains once: about a second)."""
    root = tmp_path_factory.mktemp("mnist")
    return {
        "root": root,
        "written": write_fake_mnist(root, train=200, test=100),
        "cache": tmp_path_factory.mktemp("cache"),
    }


def _stacked(root: Path, **options: Any) -> Any:
    return agekit.create("dataset", "stacked-mnist-local", root=str(root), **options)


def _as_bytes(digits: torch.Tensor) -> set[bytes]:
    return {d.numpy().tobytes() for d in digits}


def test_stacks_come_from_the_matching_split_and_spell_their_labels(fake: dict[str, Any]) -> None:
    source = _stacked(fake["root"], size=300, test_size=50, seed=3)
    assert source.shape == (3, 32, 32)
    for split, count in (("train", 300), ("test", 50)):
        x, labels = source.tensors(split)
        assert x.shape == (count, 3, 32, 32) and labels.shape == (count,)
        assert len(source.split(split)) == count
        triples, _ = source._stacks_of(split)
        digit_labels = fake["written"][split][1].astype(np.int64)  # as written to the folder
        d = digit_labels[triples.numpy()]
        assert labels.tolist() == (100 * d[:, 0] + 10 * d[:, 1] + d[:, 2]).tolist()
        # every channel is the padded 28x28 digit the triple names, from this split's file
        written = torch.from_numpy(fake["written"][split][0] / 127.5 - 1).float()
        for i in (0, 7, count - 1):
            for c in range(3):
                assert torch.allclose(x[i, c, 2:30, 2:30], written[triples[i, c]], atol=1e-6)
        item, label = source.split(split)[5]
        assert torch.equal(item, x[5]) and int(label) == int(labels[5])
    train_digits = _as_bytes(source.digits.tensors("train")[0][:, 0])
    test_digits = _as_bytes(source.digits.tensors("test")[0][:, 0])
    assert len(train_digits) == 200 and len(test_digits) == 100  # the whole folder, both splits
    test_channels = _as_bytes(source.tensors("test")[0].flatten(0, 1))
    assert test_channels <= test_digits and not test_channels & train_digits
    assert _as_bytes(source.tensors("train")[0].flatten(0, 1)) <= train_digits
    assert (
        _stacked(fake["root"], size=300, test_size=50, seed=3)
        .tensors("test")[1]
        .equal(source.tensors("test")[1])
    )


def test_defaults_and_declarations() -> None:
    cls = REGISTRY.load("dataset", "stacked-mnist-local")
    assert cls.known_modes == "classifier" and cls.evaluation_classifier.per_channel
    assert "mode-coverage" in default_metrics("stacked-mnist-local")
    metric = agekit.create("metric", "mode-coverage")
    assert metric.n_samples_stacked == 26000  # PacGAN's count, as for stacked-mnist


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    root = tmp_path / "no-mnist-here"
    with pytest.raises(DatasetNotFoundError) as info:
        _stacked(root)
    message = str(info.value)
    assert str(root) in message and "MNIST/raw/" in message and "never downloads" in message


def test_a_relative_root_is_made_absolute(
    fake: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(fake["root"].parent)
    source = _stacked(Path(fake["root"].name), size=10, test_size=10)
    assert str(fake["root"]) in repr(source) and str(fake["root"]) in repr(source.digits)


def test_the_classifier_learns_the_folders_train_split(fake: dict[str, Any]) -> None:
    source = _stacked(fake["root"], size=40, test_size=20)
    prior = GaussianPrior(8)
    context = toy_context(
        source,
        FlattenEncoder(prior, 8),
        ReshapeGenerator((3, 32, 32)),
        prior,
        "stacked-mnist-local",
        fake["cache"],
    )
    classifier = classifier_for(context)
    record = classifier.protocol
    assert record["dataset"] == "mnist" and record["per_channel"] is True
    assert (record["train_size"], record["test_size"]) == (200, 100)  # the folder's splits
    assert record["epochs"] == TrainingProtocol("mnist", 32).epochs  # the default protocol
    assert record["instance"] == repr(source.digits) and str(fake["root"]) in record["instance"]
    assert record["key"] != TrainingProtocol("mnist", 32).key()  # the folder is in the key
    # Chance is 0.1; the bars that spell the labels are learnt (1.0 measured).
    assert record["test_accuracy"] >= 0.9
    cached = sorted(p.name for p in (fake["cache"] / "classifiers").iterdir())
    assert cached == [f"mnist-32px-{record['key']}.json", f"mnist-32px-{record['key']}.pt"]
    # A run scored on a validation split held out of train is judged by the same classifier.
    held = hold_out_validation(source, 0.25)
    again = classifier_for(
        toy_context(
            held, context.encoder, context.generator, prior, context.dataset_name, fake["cache"]
        )
    )
    assert again.protocol["key"] == record["key"] and again.protocol["train_size"] == 200


def test_mode_coverage_on_a_tiny_trained_run(fake: dict[str, Any], tmp_path: Path) -> None:
    raw = {
        "name": "tiny",
        "data": {
            "name": "stacked-mnist-local",
            "batch_size": 16,
            "options": {"root": str(fake["root"]), "size": 64, "test_size": 32},
        },
        "prior": {"name": "sphere", "dim": 8},
        "backbone": {"name": "dcgan", "options": {"width": 4}},
        "train": {"steps": 2, "checkpoint_every": 2, "image_every": 10**6, "device": "cpu"},
    }
    Trainer(parse_config(raw), tmp_path / "run").fit()
    metric = Component(name="mode-coverage", options={"n_samples_stacked": 300})
    stored = evaluate(tmp_path / "run", [metric], device="cpu", cache_dir=fake["cache"])
    scores = stored["metrics"]["mode-coverage"]
    protocol = scores["protocol"]
    assert protocol["dataset"] == "stacked-mnist-local" and protocol["n_samples"] == 300
    assert protocol["protocol"] == "Stacked MNIST, per-channel classifier"
    assert protocol["classifier"]["train_size"] == 200
    assert str(fake["root"]) in protocol["classifier"]["instance"]
    assert scores["num_modes"] == 1000 and 1 <= scores["modes_captured"] <= 300
    assert 0.0 <= scores["reverse_kl"] <= math.log(1000)
