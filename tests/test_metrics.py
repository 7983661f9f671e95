"""Evaluation metrics against known answers: the feature-space and mode statistics, and the result
every metric returns.

The metric classes on toy contexts are in test_metric_scores.py, the evaluation classifier in
test_metric_classifier.py.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from metric_doubles import (
    RING_MODES,
    FlattenEncoder,
    ReshapeGenerator,
    toy_context,
    toy_images,
)

import agekit
from agekit.components import EvaluationContext, Metric, MetricResult
from agekit.evaluation.scoring import score
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
from agekit.priors import GaussianPrior


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


# The result every metric returns -----------------------------------------------------------------
def test_a_result_is_stored_as_one_flat_object_values_details_then_protocol() -> None:
    result = MetricResult(
        values={"modes_captured": 3, "reverse_kl": math.nan},
        protocol={"metric": "toy", "n_samples": 10},
        details={"mode_counts": [2, 0, 1]},
    )
    record = result.to_record()
    # The shape evaluate.json has always stored: numbers, then the rest, then "protocol".
    assert json.dumps(record) == json.dumps(
        {
            "modes_captured": 3,
            "reverse_kl": math.nan,
            "mode_counts": [2, 0, 1],
            "protocol": {"metric": "toy", "n_samples": 10},
        }
    )
    # An int stays an int in the JSON: reports print a count as a count.
    assert '"modes_captured": 3,' in json.dumps(record)
    back = MetricResult.from_record(json.loads(json.dumps(record)))
    assert back.values["modes_captured"] == 3 and math.isnan(back.values["reverse_kl"])
    assert back.details == {"mode_counts": [2, 0, 1]}
    assert back.protocol == {"metric": "toy", "n_samples": 10}


@pytest.mark.parametrize(
    "value", [True, torch.tensor(1.0), np.int64(3), "0.5", None, [1.0]], ids=repr
)
def test_a_result_value_must_be_an_int_or_a_float(value: object) -> None:
    with pytest.raises(TypeError, match=r"metric value 'x' is a .*not an int or float"):
        MetricResult(values={"x": value}, protocol={})  # type: ignore[dict-item]


def test_a_result_refuses_clashing_keys_and_keeps_copies() -> None:
    with pytest.raises(ValueError, match="'protocol'"):
        MetricResult(values={"protocol": 1.0}, protocol={})
    with pytest.raises(ValueError, match="unique"):
        MetricResult(values={"a": 1.0}, protocol={}, details={"a": [1]})
    with pytest.raises(TypeError, match="strings"):
        MetricResult(values={1: 1.0}, protocol={})  # type: ignore[dict-item]
    values, protocol = {"a": 1.0}, {"n": 1}
    result = MetricResult(values, protocol)
    values["a"], protocol["n"] = 2.0, 2
    assert result.values == {"a": 1.0} and result.protocol == {"n": 1} and result.details == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.values = {}  # type: ignore[misc]


class _PlainDict(Metric):
    """A metric written against a dict-returning contract: numbers and "protocol" in one dict."""

    def __call__(self, context: EvaluationContext) -> MetricResult:
        return {"spread": 1.0, "protocol": {"metric": "plain"}}  # type: ignore[return-value]


class _Typed(Metric):
    def __call__(self, context: EvaluationContext) -> MetricResult:
        return MetricResult({"spread": 1.0}, {"metric": "typed"})


def test_evaluation_refuses_a_plain_dict_naming_the_metric() -> None:
    prior = GaussianPrior(16)
    context = toy_context(
        toy_images(), FlattenEncoder(prior, 16), ReshapeGenerator((1, 4, 4)), prior
    )
    message = r"metric 'plain-spread' \(.*_PlainDict\) returned a dict, not an"
    with pytest.raises(TypeError, match=message):
        score("plain-spread", _PlainDict(), context)
    assert score("typed", _Typed(), context).to_record() == {
        "spread": 1.0,
        "protocol": {"metric": "typed"},
    }
