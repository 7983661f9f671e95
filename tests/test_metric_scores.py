"""The metric classes on toy contexts with known answers, and on a tiny trained run.

Each metric returns a MetricResult; what evaluation stores for it is checked in
test_a_run_is_scored_with_the_runs_divergence_options_and_stored_flat.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from metric_doubles import (
    RING_MODES,
    ConstantGenerator,
    FlattenEncoder,
    OwnDigits,
    ReshapeGenerator,
    StackedPairs,
    fake_load_or_train,
    toy_context,
    toy_images,
)
from torch import Tensor

import agekit
from agekit.components import Divergence, EvaluationContext, Generator, Prior
from agekit.config import Component, parse_config
from agekit.evaluation.scoring import evaluate
from agekit.metrics import classifier as classifier_module
from agekit.metrics.classifier import DigitCNN
from agekit.metrics.latent import LatentDivergence
from agekit.metrics.mode_coverage import ModeCoverage
from agekit.metrics.reconstruction import Reconstruction
from agekit.metrics.sample_quality import SampleQuality
from agekit.model import load_trained
from agekit.priors import GaussianPrior
from agekit.training.trainer import Trainer


# Reconstruction ----------------------------------------------------------------------------------
def test_perfect_autoencoder_reconstructs_with_zero_error() -> None:
    data = toy_images()
    prior = GaussianPrior(16)
    encoder, generator = FlattenEncoder(prior, 16), ReshapeGenerator((1, 4, 4))
    encoder.eval()  # eval-mode batch norm with fresh running stats is x / sqrt(1 + 1e-5)
    encoder.norm.eps = 0.0  # ... and exactly the identity with eps 0
    encoder.train()  # the metric must switch it to eval itself and then restore train mode
    out = Reconstruction(n_samples=20, batch_size=8)(toy_context(data, encoder, generator, prior))
    assert out.values["recon_l1"] == pytest.approx(0.0, abs=1e-7)
    assert out.values["recon_mse"] == pytest.approx(0.0, abs=1e-12)
    assert out.values["mean_image_l1"] > 0.3  # uniform [-1, 1] pixels: E|x - 0| = 0.5
    assert out.protocol["n_samples"] == 20 and out.protocol["bn_mode"] == "eval"
    assert encoder.training and encoder.norm.training
    assert torch.is_grad_enabled()  # no_grad did not leak


def test_constant_generator_matches_mean_image_baseline() -> None:
    data = toy_images()
    prior = GaussianPrior(16)
    mean = data.tensors("train")[0].mean(0)
    encoder, generator = FlattenEncoder(prior, 16), ConstantGenerator(mean)
    out = Reconstruction(n_samples=1000)(toy_context(data, encoder, generator, prior))
    # A pair that outputs the train mean is exactly the baseline (up to float32 vs float64 mean).
    assert out.values["recon_l1"] == pytest.approx(out.values["mean_image_l1"], rel=1e-6)
    assert out.values["recon_mse"] == pytest.approx(out.values["mean_image_mse"], rel=1e-6)
    assert out.protocol["n_samples"] == 32  # capped at the test split


def test_reconstruction_train_bn_mode_uses_batch_statistics() -> None:
    data = toy_images()
    prior = GaussianPrior(16)
    encoder, generator = FlattenEncoder(prior, 16), ReshapeGenerator((1, 4, 4))
    encoder.eval()
    before = encoder.norm.running_mean.clone()
    out = Reconstruction(n_samples=32, batch_size=32, bn_mode="train")(
        toy_context(data, encoder, generator, prior)
    )
    # Batch-normalised codes are not x, so the 'identity' pair no longer reconstructs exactly.
    assert out.values["recon_l1"] > 0.01
    assert out.protocol["bn_mode"] == "train"
    assert not encoder.training
    # Train mode updates running statistics; that side effect is the reference code's too.
    assert not torch.equal(before, encoder.norm.running_mean)


# Whole-metric checks on toy contexts -------------------------------------------------------------
class NearestRingMode(Generator):
    """Maps a 2-D code to the ring mode nearest its direction: perfect and mode-covering."""

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        angle = torch.atan2(z[:, 1], z[:, 0]) % (2 * math.pi)
        index = torch.round(angle / (2 * math.pi / 8)).long() % 8
        return RING_MODES.float()[index]


def test_mode_coverage_metric_on_ring8() -> None:
    data = agekit.create("dataset", "ring8")
    prior = GaussianPrior(2)
    encoder = FlattenEncoder(prior, 2)
    good = ModeCoverage()(toy_context(data, encoder, NearestRingMode(), prior, "ring8"))
    assert good.values["modes_captured"] == 8 and good.values["high_quality_percent"] == 100.0
    # 2,500 draws spread over 8 equiprobable bins: KL ~ (K - 1) / (2N) = 0.0014.
    assert good.values["reverse_kl"] < 0.02
    assert good.protocol["n_samples"] == 2500
    collapsed = ModeCoverage()(
        toy_context(data, encoder, ConstantGenerator(RING_MODES[2].float()), prior, "ring8")
    )
    assert collapsed.values["modes_captured"] == 1
    assert collapsed.values["high_quality_percent"] == 100.0
    # The per-mode histogram is a detail: stored, never compared.
    assert collapsed.details == {"mode_counts": [0, 0, 2500, 0, 0, 0, 0, 0]}


def test_metrics_name_unsupported_data_sets() -> None:
    data = toy_images()
    prior = GaussianPrior(16)
    context = toy_context(
        data, FlattenEncoder(prior, 16), ReshapeGenerator((1, 4, 4)), prior, "toy"
    )
    with pytest.raises(ValueError, match="'toy'"):
        SampleQuality()(context)
    with pytest.raises(ValueError, match="'toy'"):
        ModeCoverage()(context)


def test_unsupported_data_set_errors_list_the_data_sets_that_declare_support() -> None:
    data = toy_images()
    prior = GaussianPrior(16)
    context = toy_context(
        data, FlattenEncoder(prior, 16), ReshapeGenerator((1, 4, 4)), prior, "toy"
    )
    with pytest.raises(ValueError, match=r"'toy'.*support digits, mnist5k, stacked-mnist"):
        SampleQuality()(context)
    with pytest.raises(ValueError, match=r"'toy'.*supports grid25, ring8, stacked-mnist"):
        ModeCoverage()(context)


def test_classifier_metrics_read_the_data_sets_declaration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(classifier_module, "load_or_train", fake_load_or_train(calls))
    g = torch.Generator().manual_seed(0)
    images = torch.rand(16, 2, 8, 8, generator=g) * 2 - 1
    data = StackedPairs((images, torch.zeros(16)), (images, torch.zeros(16)))
    prior = GaussianPrior(128)
    context = toy_context(
        data, FlattenEncoder(prior, 128), ReshapeGenerator((2, 8, 8)), prior, "pairs"
    )
    out = ModeCoverage(n_samples_stacked=40, batch_size=16)(context)
    # Per channel: ten classes per channel, two channels -> 100 modes.
    assert out.values["num_modes"] == 100 and 1 <= out.values["modes_captured"] <= 40
    assert out.protocol["protocol"] == "Stacked MNIST, per-channel classifier"
    assert out.protocol["classifier"] == {"dataset": "mnist5k", "per_channel": True}
    # The source is another data set, so it is created from its name, not taken from the context.
    assert calls == [{"source": "mnist5k", "image_size": 8, "data": None}]

    calls.clear()
    grey = images[:, :1]
    own = OwnDigits((grey, torch.zeros(16)), (grey, torch.zeros(16)))
    prior = GaussianPrior(64)
    quality = SampleQuality(n_samples=16, k=2, kid_subsets=2, kid_subset_size=8)(
        toy_context(
            own, FlattenEncoder(prior, 64), ReshapeGenerator((1, 8, 8)), prior, "own-digits"
        )
    )
    # The evaluated data set is its own source: the metric reuses the instance.
    assert calls == [{"source": "own-digits", "image_size": 8, "data": own}]
    assert quality.protocol["classifier"]["per_channel"] is False


class MeanNormSquared(Divergence):
    """|mean(codes) - prior mean|^2: a transparent divergence for checking the plumbing."""

    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        return (codes.mean(0) - prior.mean().to(codes)).square().sum()


def test_latent_divergence_reports_real_and_fake_per_divergence() -> None:
    data = toy_images()
    prior = GaussianPrior(16)
    encoder, generator = FlattenEncoder(prior, 16), ReshapeGenerator((1, 4, 4))
    encoder.norm.eps = 0.0  # eval-mode identity encoder
    context = toy_context(data, encoder, generator, prior, divergences={"mean": MeanNormSquared()})
    out = LatentDivergence(n_samples=32)(context)
    x_test = data.tensors("test")[0]
    assert out.values["mean_real"] == pytest.approx(
        float(x_test.flatten(1).double().mean(0).square().sum())
    )
    z = prior.sample(32, generator=torch.Generator().manual_seed(0))
    assert out.values["mean_fake"] == pytest.approx(
        float(z.double().mean(0).square().sum()), rel=1e-6
    )
    assert out.protocol["n_real"] == 32
    # e(g(z)) = z exactly here (float32 round trip through the generator: 1e-10 is far below it).
    assert out.values["latent_recovery"] == pytest.approx(0.0, abs=1e-10)
    # A generator that ignores z: E||z - e(c)||^2 = E||z||^2 + ||c||^2 = 16 + 16 for c = 1.
    constant = ConstantGenerator(torch.ones(1, 4, 4))
    ignoring = LatentDivergence(n_samples=32)(
        toy_context(data, encoder, constant, prior, divergences={"mean": MeanNormSquared()})
    )
    expected = float(((z.double() - 1.0) ** 2).sum(1).mean())
    assert ignoring.values["latent_recovery"] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="divergence"):
        LatentDivergence()(toy_context(data, encoder, generator, prior))


def test_latent_divergence_with_registered_divergences() -> None:
    data = toy_images()
    prior = GaussianPrior(16)
    divergences = {
        name: agekit.create("divergence", name) for name in agekit.available("divergence")
    }
    context = toy_context(
        data, FlattenEncoder(prior, 16), ReshapeGenerator((1, 4, 4)), prior, divergences=divergences
    )
    out = LatentDivergence(n_samples=32)(context)
    for name in divergences:
        assert math.isfinite(out.values[f"{name}_real"])
        assert math.isfinite(out.values[f"{name}_fake"])


def test_a_run_is_scored_with_the_runs_divergence_options_and_stored_flat(tmp_path: Path) -> None:
    raw = {
        "name": "kl5",
        "data": {"name": "ring8", "batch_size": 32, "options": {"size": 256, "test_size": 64}},
        "prior": {"name": "sphere", "dim": 4},
        "backbone": {"name": "mlp", "options": {"hidden": 16, "depth": 2}},
        "divergence": {"name": "kozachenko-leonenko", "options": {"k": 5}},
        "train": {"steps": 4, "checkpoint_every": 4, "image_every": 10**6, "device": "cpu"},
    }
    run = tmp_path / "run"
    Trainer(parse_config(raw), run).fit()
    metrics = [
        Component(name="latent-divergence", options={"n_samples": 64}),
        Component(name="mode-coverage", options={"n_samples": 64}),
    ]
    stored = evaluate(run, metrics, device="cpu")["metrics"]
    # Each metric's entry is one flat object: its values, its details, then "protocol".
    assert list(stored["mode-coverage"]) == [
        "modes_captured",
        "num_modes",
        "high_quality_fraction",
        "high_quality_percent",
        "reverse_kl",
        "mode_counts",
        "protocol",
    ]
    assert sum(stored["mode-coverage"]["mode_counts"]) <= 64
    scores = stored["latent-divergence"]
    assert next(iter(scores)) == "latent_recovery" and list(scores)[-1] == "protocol"
    protocol = scores["protocol"]
    k5 = agekit.create("divergence", "kozachenko-leonenko", k=5)
    assert protocol["divergences"]["kozachenko-leonenko"] == repr(k5)
    assert protocol["divergence_options"]["kozachenko-leonenko"] == "the run's (divergence.options)"
    assert protocol["divergence_options"]["gaussian-kl"] == "defaults"
    assert protocol["divergences"]["gaussian-kl"] == repr(
        agekit.create("divergence", "gaussian-kl")
    )

    # The value is the k = 5 estimator's on the same codes, and k = 3 would have differed.
    model, _ = load_trained(run, "cpu")
    context = EvaluationContext(
        encoder=model.pair.encoder,
        generator=model.pair.generator,
        prior=model.prior,
        data=model.data,
        dataset_name="ring8",
        device=torch.device("cpu"),
        seed=0,
        cache_dir=None,
        divergences={"k5": k5, "k3": agekit.create("divergence", "kozachenko-leonenko", k=3)},
    )
    reference = LatentDivergence(n_samples=64)(context)
    assert scores["kozachenko-leonenko_real"] == reference.values["k5_real"]
    assert scores["kozachenko-leonenko_fake"] == reference.values["k5_fake"]
    assert reference.values["k3_real"] != reference.values["k5_real"]


def test_registry_creates_metrics_with_validated_options() -> None:
    metric = agekit.create("metric", "reconstruction", n_samples=10, bn_mode="train")
    assert isinstance(metric, Reconstruction) and metric.bn_mode == "train"
    with pytest.raises(ValueError):
        agekit.create("metric", "reconstruction", bn_mode="sometimes")


def test_reconstruction_reports_whether_digits_keep_their_label(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(classifier_module, "load_or_train", fake_load_or_train([]))
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, 8, 8, generator=g) * 2 - 1
    labels = torch.randint(0, 10, (40,), generator=g)
    own = OwnDigits((images, labels), (images, labels))
    prior = GaussianPrior(64)
    encoder = FlattenEncoder(prior, 64)
    encoder.norm.eps = 0.0  # eval mode with fresh running statistics: exactly the identity
    identity = Reconstruction(n_samples=40)(
        toy_context(own, encoder, ReshapeGenerator((1, 8, 8)), prior, "own-digits")
    )
    # g(e(x)) = x: the reconstructions are classified exactly as the test images are.
    assert identity.values["recon_label_accuracy"] == identity.values["label_accuracy_real"]
    constant = ConstantGenerator(images[0])
    out = Reconstruction(n_samples=40)(toy_context(own, encoder, constant, prior, "own-digits"))
    # Every reconstruction is one image: right exactly as often as its class is the label.
    torch.manual_seed(0)
    predicted = int(DigitCNN().eval()(images[:1]).argmax())
    assert out.values["recon_label_accuracy"] == pytest.approx(
        float((labels == predicted).double().mean())
    )
