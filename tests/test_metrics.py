"""Evaluation metrics against known answers.

Fast tests use tiny tensors and hand-built networks; the tests that need the trained evaluation
classifier on real data are marked slow (training takes ~25 s on 2 shared CPU cores).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

import agekit
from agekit.components import (
    ClassifierSource,
    DataSource,
    Divergence,
    Encoder,
    EvaluationContext,
    Generator,
    Prior,
)
from agekit.config import Component, parse_config
from agekit.evaluation.scoring import evaluate
from agekit.metrics import classifier as classifier_module
from agekit.metrics import (
    density_coverage,
    frechet_distance,
    gaussian_frechet_distance,
    kernel_inception_distance,
    kl_to_uniform,
    mode_coverage_2d,
    polynomial_mmd2_unbiased,
    precision_recall,
    stacked_mode_statistics,
)
from agekit.metrics.classifier import (
    DigitCNN,
    EvaluationClassifier,
    TrainingProtocol,
    load_or_train,
    train_digit_classifier,
)
from agekit.metrics.latent import LatentDivergence
from agekit.metrics.mode_coverage import ModeCoverage
from agekit.metrics.reconstruction import Reconstruction
from agekit.metrics.sample_quality import SampleQuality
from agekit.model import load_trained
from agekit.priors import GaussianPrior
from agekit.training.trainer import Trainer


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# Frechet distance --------------------------------------------------------------------------------
def test_fd_identical_sets_is_zero() -> None:
    x = _rng().normal(size=(500, 16))
    # Identical inputs give identical moments; only eigen-solver round-off (~1e-12) remains.
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fd_matches_direct_scipy_computation() -> None:
    rng = _rng(1)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    expected = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))
    # Two exact formulas for the same quantity; they differ only by float64 round-off.
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(
        expected, rel=1e-8
    )


def test_fd_closed_form_for_two_gaussians() -> None:
    # Diagonal covariances commute, so tr((S_a S_b)^{1/2}) = sum sqrt(a_i b_i) and
    # FD = |mu_a - mu_b|^2 + sum (sqrt(a_i) - sqrt(b_i))^2 exactly.
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    exact = 1.0 + 4.0 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0.0
    assert gaussian_frechet_distance(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(
        exact, rel=1e-12
    )
    # From samples: 200k draws estimate each mean/variance to ~0.3% relative error, so the value
    # (10.0) is within a few percent.
    rng = _rng(2)
    a = mu_a + np.sqrt(var_a) * rng.normal(size=(200_000, 3))
    b = mu_b + np.sqrt(var_b) * rng.normal(size=(200_000, 3))
    assert frechet_distance(a, b) == pytest.approx(exact, rel=0.02)


def test_fd_handles_singular_covariance() -> None:
    # A collapsed generator (one repeated point) has a zero covariance: FD must stay finite, real.
    real = _rng(3).normal(size=(200, 4))
    fake = np.zeros((200, 4))
    expected = float((real.mean(0) ** 2).sum() + np.trace(np.cov(real, rowvar=False)))
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-10)


# KID ---------------------------------------------------------------------------------------------
def test_kid_zero_for_same_distribution_and_positive_for_shift() -> None:
    rng = _rng(4)
    a, b = rng.normal(size=(4000, 8)), rng.normal(size=(4000, 8))
    subsets = 20
    mean, std = kernel_inception_distance(a, b, subsets=subsets, subset_size=200, seed=0)
    # Unbiased estimator: zero in expectation. 20 subsets of 200 out of 4000 barely overlap, so the
    # mean's standard error is about std / sqrt(20); 4 standard errors keeps false alarms < 1e-4.
    assert abs(mean) < 4 * std / math.sqrt(subsets)
    shifted_mean, shifted_std = kernel_inception_distance(a, b + 1.0, subsets, 200, seed=0)
    assert shifted_mean > 10 * shifted_std / math.sqrt(subsets)
    assert shifted_mean > 0


def test_kid_is_reproducible_and_matches_formula() -> None:
    rng = _rng(5)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(40, 3)) + 0.3
    first = kernel_inception_distance(a, b, subsets=5, subset_size=30, seed=7)
    assert first == kernel_inception_distance(a, b, subsets=5, subset_size=30, seed=7)
    # One subset covering both sets entirely equals the unbiased MMD^2 written out by hand.
    k = lambda u, v: (u @ v.T / 3 + 1) ** 3  # noqa: E731
    m, n = 40, 40
    x, y = a[:40], b
    expected = (
        (k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1))
        + (k(y, y).sum() - np.trace(k(y, y))) / (n * (n - 1))
        - 2 * k(x, y).mean()
    )
    assert polynomial_mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-12)


# Precision / recall / density / coverage ---------------------------------------------------------
def test_identical_sets_give_perfect_manifold_scores() -> None:
    x = _rng(6).normal(size=(600, 8))
    assert precision_recall(x, x, k=5) == (1.0, 1.0)
    density, coverage = density_coverage(x, x, k=5)
    assert coverage == 1.0
    # Each real ball strictly contains itself and its k - 1 nearer neighbours (the k-th sits on
    # the boundary), so density = k M / (k M) = 1; allow a few boundary round-off flips.
    assert density == pytest.approx(1.0, abs=5 / (5 * 600))


def test_same_distribution_coverage_is_about_one_minus_two_to_minus_k() -> None:
    rng = _rng(7)
    real, fake = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    k = 5
    density, coverage = density_coverage(real, fake, k=k)
    # Naeem et al.: E[coverage] -> 1 - 2^-k = 0.969 for large equal sets. Binomial std over 2000
    # balls is ~0.004; 0.015 allows ~4 sigma plus finite-sample bias.
    assert coverage == pytest.approx(1 - 2**-k, abs=0.015)
    # E[density] = 1 for identical distributions; its spread at M = 2000 is a few percent.
    assert density == pytest.approx(1.0, abs=0.08)
    precision, recall = precision_recall(real, fake, k=k)
    assert precision > 0.8 and recall > 0.8


def test_disjoint_far_apart_sets_score_zero() -> None:
    rng = _rng(8)
    real = rng.normal(size=(300, 4))
    fake = rng.normal(size=(300, 4)) + 100.0
    assert precision_recall(real, fake) == (0.0, 0.0)
    assert density_coverage(real, fake) == (0.0, 0.0)


def test_missing_mode_lowers_recall_and_coverage_not_precision() -> None:
    rng = _rng(9)
    real = np.concatenate([rng.normal(size=(500, 2)), rng.normal(size=(500, 2)) + 50.0])
    fake = real[:500] + 0.0  # the generator reproduces only the first cluster
    precision, recall = precision_recall(real, fake, k=3)
    _, coverage = density_coverage(real, fake, k=3)
    assert precision == 1.0
    assert recall == pytest.approx(0.5)
    assert coverage == pytest.approx(0.5)


def test_feature_functions_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        precision_recall(np.full((10, 2), np.nan), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="more than 5 samples"):
        density_coverage(np.zeros((5, 2)), np.zeros((5, 2)), k=5)


# Mode statistics ---------------------------------------------------------------------------------
RING_MODES = torch.stack(
    [
        torch.cos(2 * math.pi * torch.arange(8) / 8),
        torch.sin(2 * math.pi * torch.arange(8) / 8),
    ],
    dim=1,
).double()


def test_kl_to_uniform_known_values() -> None:
    assert kl_to_uniform([5, 0]) == pytest.approx(math.log(2))
    assert kl_to_uniform([3, 3, 3]) == pytest.approx(0.0)
    assert kl_to_uniform([1, 0, 0, 0, 0, 0, 0, 0]) == pytest.approx(math.log(8))
    assert math.isnan(kl_to_uniform([0, 0]))


def test_collapsed_ring_captures_one_mode_with_full_quality() -> None:
    samples = RING_MODES[3].repeat(2500, 1)
    out = mode_coverage_2d(samples, RING_MODES, std=0.01)
    assert out["modes_captured"] == 1
    assert out["high_quality_percent"] == 100.0
    assert out["reverse_kl"] == pytest.approx(math.log(8))
    assert out["mode_counts"][3] == 2500


def test_noise_away_from_modes_is_never_high_quality() -> None:
    # On the circle of radius 3 every point is >= 2 away from the unit-circle modes (>> 3 * 0.01).
    angles = torch.rand(2500, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    samples = 3 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    out = mode_coverage_2d(samples, RING_MODES, std=0.01)
    assert out["modes_captured"] == 0
    assert out["high_quality_percent"] == 0.0
    assert math.isnan(out["reverse_kl"])


def test_true_mixture_has_chi_square_quality_and_all_modes() -> None:
    data = agekit.create("dataset", "ring8")
    x, _ = data.tensors("test")
    out = mode_coverage_2d(x, data.modes, std=data.mode_std)
    # |noise| / std ~ chi with 2 d.o.f.: P(|noise| <= 3 std) = 1 - exp(-9/2) = 0.98889.
    # Binomial std over 10,000 samples is 0.001; allow 4 sigma.
    assert out["high_quality_fraction"] == pytest.approx(1 - math.exp(-4.5), abs=0.004)
    assert out["modes_captured"] == 8
    assert out["reverse_kl"] < 0.01  # balanced splits: almost uniform histogram


def test_stacked_mode_statistics() -> None:
    out = stacked_mode_statistics(torch.arange(1000).repeat(26))
    assert out == {"modes_captured": 1000, "num_modes": 1000, "reverse_kl": pytest.approx(0.0)}
    out = stacked_mode_statistics(torch.full((26000,), 7))
    assert out["modes_captured"] == 1
    assert out["reverse_kl"] == pytest.approx(math.log(1000))


# Test doubles for whole-metric tests -------------------------------------------------------------
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


def _context(
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


def _toy_images(seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    train = torch.rand(64, 1, 4, 4, generator=g) * 2 - 1
    test = torch.rand(32, 1, 4, 4, generator=g) * 2 - 1
    return TensorData((train, torch.zeros(64)), (test, torch.zeros(32)))


# Reconstruction ----------------------------------------------------------------------------------
def test_perfect_autoencoder_reconstructs_with_zero_error() -> None:
    data = _toy_images()
    prior = GaussianPrior(16)
    encoder, generator = FlattenEncoder(prior, 16), ReshapeGenerator((1, 4, 4))
    encoder.eval()  # eval-mode batch norm with fresh running stats is x / sqrt(1 + 1e-5)
    encoder.norm.eps = 0.0  # ... and exactly the identity with eps 0
    encoder.train()  # the metric must switch it to eval itself and then restore train mode
    out = Reconstruction(n_samples=20, batch_size=8)(_context(data, encoder, generator, prior))
    assert out["recon_l1"] == pytest.approx(0.0, abs=1e-7)
    assert out["recon_mse"] == pytest.approx(0.0, abs=1e-12)
    assert out["mean_image_l1"] > 0.3  # uniform [-1, 1] pixels: E|x - 0| = 0.5
    assert out["protocol"]["n_samples"] == 20 and out["protocol"]["bn_mode"] == "eval"
    assert encoder.training and encoder.norm.training
    assert torch.is_grad_enabled()  # no_grad did not leak


def test_constant_generator_matches_mean_image_baseline() -> None:
    data = _toy_images()
    prior = GaussianPrior(16)
    mean = data.tensors("train")[0].mean(0)
    encoder, generator = FlattenEncoder(prior, 16), ConstantGenerator(mean)
    out = Reconstruction(n_samples=1000)(_context(data, encoder, generator, prior))
    # A pair that outputs the train mean is exactly the baseline (up to float32 vs float64 mean).
    assert out["recon_l1"] == pytest.approx(out["mean_image_l1"], rel=1e-6)
    assert out["recon_mse"] == pytest.approx(out["mean_image_mse"], rel=1e-6)
    assert out["protocol"]["n_samples"] == 32  # capped at the test split


def test_reconstruction_train_bn_mode_uses_batch_statistics() -> None:
    data = _toy_images()
    prior = GaussianPrior(16)
    encoder, generator = FlattenEncoder(prior, 16), ReshapeGenerator((1, 4, 4))
    encoder.eval()
    before = encoder.norm.running_mean.clone()
    out = Reconstruction(n_samples=32, batch_size=32, bn_mode="train")(
        _context(data, encoder, generator, prior)
    )
    # Batch-normalised codes are not x, so the 'identity' pair no longer reconstructs exactly.
    assert out["recon_l1"] > 0.01
    assert out["protocol"]["bn_mode"] == "train"
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
    good = ModeCoverage()(_context(data, encoder, NearestRingMode(), prior, "ring8"))
    assert good["modes_captured"] == 8 and good["high_quality_percent"] == 100.0
    # 2,500 draws spread over 8 equiprobable bins: KL ~ (K - 1) / (2N) = 0.0014.
    assert good["reverse_kl"] < 0.02
    assert good["protocol"]["n_samples"] == 2500
    collapsed = ModeCoverage()(
        _context(data, encoder, ConstantGenerator(RING_MODES[2].float()), prior, "ring8")
    )
    assert collapsed["modes_captured"] == 1 and collapsed["high_quality_percent"] == 100.0


def test_metrics_name_unsupported_data_sets() -> None:
    data = _toy_images()
    prior = GaussianPrior(16)
    context = _context(data, FlattenEncoder(prior, 16), ReshapeGenerator((1, 4, 4)), prior, "toy")
    with pytest.raises(ValueError, match="'toy'"):
        SampleQuality()(context)
    with pytest.raises(ValueError, match="'toy'"):
        ModeCoverage()(context)


def test_unsupported_data_set_errors_list_the_data_sets_that_declare_support() -> None:
    data = _toy_images()
    prior = GaussianPrior(16)
    context = _context(data, FlattenEncoder(prior, 16), ReshapeGenerator((1, 4, 4)), prior, "toy")
    with pytest.raises(ValueError, match=r"'toy'.*support digits, mnist5k, stacked-mnist"):
        SampleQuality()(context)
    with pytest.raises(ValueError, match=r"'toy'.*supports grid25, ring8, stacked-mnist"):
        ModeCoverage()(context)


class StackedPairs(TensorData):
    """Two-channel images under a name no table knows: only the declarations tell the metrics."""

    evaluation_classifier = ClassifierSource("mnist5k", per_channel=True)
    known_modes = "classifier"


class OwnDigits(TensorData):
    evaluation_classifier = ClassifierSource("own-digits")


def _fake_load_or_train(calls: list[dict[str, Any]]) -> Any:
    def load(source: str, cache_dir: Any, image_size: int = 32, data: Any = None) -> Any:
        calls.append({"source": source, "image_size": image_size, "data": data})
        torch.manual_seed(0)
        return DigitCNN().eval(), {"dataset": source}

    return load


def test_classifier_metrics_read_the_data_sets_declaration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(classifier_module, "load_or_train", _fake_load_or_train(calls))
    g = torch.Generator().manual_seed(0)
    images = torch.rand(16, 2, 8, 8, generator=g) * 2 - 1
    data = StackedPairs((images, torch.zeros(16)), (images, torch.zeros(16)))
    prior = GaussianPrior(128)
    context = _context(
        data, FlattenEncoder(prior, 128), ReshapeGenerator((2, 8, 8)), prior, "pairs"
    )
    out = ModeCoverage(n_samples_stacked=40, batch_size=16)(context)
    # Per channel: ten classes per channel, two channels -> 100 modes.
    assert out["num_modes"] == 100 and 1 <= out["modes_captured"] <= 40
    assert out["protocol"]["protocol"] == "Stacked MNIST, per-channel classifier"
    assert out["protocol"]["classifier"] == {"dataset": "mnist5k", "per_channel": True}
    # The source is another data set, so it is created from its name, not taken from the context.
    assert calls == [{"source": "mnist5k", "image_size": 8, "data": None}]

    calls.clear()
    grey = images[:, :1]
    own = OwnDigits((grey, torch.zeros(16)), (grey, torch.zeros(16)))
    prior = GaussianPrior(64)
    quality = SampleQuality(n_samples=16, k=2, kid_subsets=2, kid_subset_size=8)(
        _context(own, FlattenEncoder(prior, 64), ReshapeGenerator((1, 8, 8)), prior, "own-digits")
    )
    # The evaluated data set is its own source: the metric reuses the instance.
    assert calls == [{"source": "own-digits", "image_size": 8, "data": own}]
    assert quality["protocol"]["classifier"]["per_channel"] is False


class MeanNormSquared(Divergence):
    """|mean(codes) - prior mean|^2: a transparent divergence for checking the plumbing."""

    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        return (codes.mean(0) - prior.mean().to(codes)).square().sum()


def test_latent_divergence_reports_real_and_fake_per_divergence() -> None:
    data = _toy_images()
    prior = GaussianPrior(16)
    encoder, generator = FlattenEncoder(prior, 16), ReshapeGenerator((1, 4, 4))
    encoder.norm.eps = 0.0  # eval-mode identity encoder
    context = _context(data, encoder, generator, prior, divergences={"mean": MeanNormSquared()})
    out = LatentDivergence(n_samples=32)(context)
    x_test = data.tensors("test")[0]
    assert out["mean_real"] == pytest.approx(
        float(x_test.flatten(1).double().mean(0).square().sum())
    )
    z = prior.sample(32, generator=torch.Generator().manual_seed(0))
    assert out["mean_fake"] == pytest.approx(float(z.double().mean(0).square().sum()), rel=1e-6)
    assert out["protocol"]["n_real"] == 32
    # e(g(z)) = z exactly here (float32 round trip through the generator: 1e-10 is far below it).
    assert out["latent_recovery"] == pytest.approx(0.0, abs=1e-10)
    # A generator that ignores z: E||z - e(c)||^2 = E||z||^2 + ||c||^2 = 16 + 16 for c = 1.
    constant = ConstantGenerator(torch.ones(1, 4, 4))
    ignoring = LatentDivergence(n_samples=32)(
        _context(data, encoder, constant, prior, divergences={"mean": MeanNormSquared()})
    )
    expected = float(((z.double() - 1.0) ** 2).sum(1).mean())
    assert ignoring["latent_recovery"] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="divergence"):
        LatentDivergence()(_context(data, encoder, generator, prior))


def test_latent_divergence_with_registered_divergences() -> None:
    data = _toy_images()
    prior = GaussianPrior(16)
    divergences = {
        name: agekit.create("divergence", name) for name in agekit.available("divergence")
    }
    context = _context(
        data, FlattenEncoder(prior, 16), ReshapeGenerator((1, 4, 4)), prior, divergences=divergences
    )
    out = LatentDivergence(n_samples=32)(context)
    for name in divergences:
        assert math.isfinite(out[f"{name}_real"]) and math.isfinite(out[f"{name}_fake"])


def test_latent_divergence_scores_a_run_with_the_runs_divergence_options(tmp_path: Path) -> None:
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
    metric = Component(name="latent-divergence", options={"n_samples": 64})
    scores = evaluate(run, [metric], device="cpu")["metrics"]["latent-divergence"]
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
    assert scores["kozachenko-leonenko_real"] == reference["k5_real"]
    assert scores["kozachenko-leonenko_fake"] == reference["k5_fake"]
    assert reference["k3_real"] != reference["k5_real"]


def test_registry_creates_metrics_with_validated_options() -> None:
    metric = agekit.create("metric", "reconstruction", n_samples=10, bn_mode="train")
    assert isinstance(metric, Reconstruction) and metric.bn_mode == "train"
    with pytest.raises(ValueError):
        agekit.create("metric", "reconstruction", bn_mode="sometimes")


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
        _context(mnist, encoder, SplitReplay(train_x), prior, "mnist5k", tmp_path)
    )
    bad = SampleQuality(n_samples=1000)(
        _context(
            mnist,
            encoder,
            SplitReplay(train_x[train_labels == 1]),
            prior,
            "mnist5k",
            tmp_path,
        )
    )
    assert good["protocol"]["classifier"]["test_accuracy"] >= 0.97
    assert good["fd_classifier"] < bad["fd_classifier"]
    assert good["kid"] < bad["kid"]
    assert good["recall"] > 0.8 and bad["recall"] < 0.3
    assert good["coverage"] > 0.8 and bad["coverage"] < 0.3

    stacked = agekit.create("dataset", "stacked-mnist", image_size=32)
    test_x, test_labels = stacked.tensors("test")
    modes = ModeCoverage(n_samples_stacked=2000)(
        _context(stacked, encoder, SplitReplay(test_x), prior, "stacked-mnist", tmp_path)
    )
    assert modes["modes_captured"] == pytest.approx(len(set(test_labels.tolist())), rel=0.1)
    assert modes["protocol"]["classifier"]["per_channel"] is True


def test_reconstruction_reports_whether_digits_keep_their_label(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(classifier_module, "load_or_train", _fake_load_or_train([]))
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, 8, 8, generator=g) * 2 - 1
    labels = torch.randint(0, 10, (40,), generator=g)
    own = OwnDigits((images, labels), (images, labels))
    prior = GaussianPrior(64)
    encoder = FlattenEncoder(prior, 64)
    encoder.norm.eps = 0.0  # eval mode with fresh running statistics: exactly the identity
    identity = Reconstruction(n_samples=40)(
        _context(own, encoder, ReshapeGenerator((1, 8, 8)), prior, "own-digits")
    )
    # g(e(x)) = x: the reconstructions are classified exactly as the test images are.
    assert identity["recon_label_accuracy"] == identity["label_accuracy_real"]
    constant = ConstantGenerator(images[0])
    out = Reconstruction(n_samples=40)(_context(own, encoder, constant, prior, "own-digits"))
    # Every reconstruction is one image: right exactly as often as its class is the label.
    torch.manual_seed(0)
    predicted = int(DigitCNN().eval()(images[:1]).argmax())
    assert out["recon_label_accuracy"] == pytest.approx(
        float((labels == predicted).double().mean())
    )
