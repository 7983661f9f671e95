"""The histogram-divergence metric: Soft-IntroVAE's 2-D histogram KL and JSD.

Tolerances. Every reference below is computed in float64 from the same counts, so the metric and
the reference differ only by summation order (~1e-16 relative) and by scipy's renormalisation of
the floored model histogram, whose total is 1 + bins^2 x epsilon x bin area (< 1e-12 here): a
relative tolerance of 1e-9 is far above both and far below any real difference. "Zero at
equality" allows 1e-9 absolute for the same floor (the KL of p against p + floor is -floor
summed over the occupied bins, about -1e-13).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from metric_doubles import FlattenEncoder, toy_context, toy_images
from torch import Tensor

import agekit
from agekit.components import DataSource, Generator
from agekit.config import Component, parse_config
from agekit.evaluation.scoring import evaluate
from agekit.metrics.classifier import load_split
from agekit.metrics.histogram_divergence import (
    HistogramDivergence,
    histogram_divergences,
)
from agekit.priors import GaussianPrior
from agekit.training.trainer import Trainer


def ring_samples(n: int, seed: int, modes: int = 8, std: float = 0.01) -> np.ndarray:
    """n draws of a ring mixture on the unit circle (the first ``modes`` of ring8's 8 angles)."""
    rng = np.random.default_rng(seed)
    angles = 2 * math.pi * rng.integers(0, modes, n) / 8
    centres = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres + std * rng.standard_normal((n, 2))


def reference(real: np.ndarray, model: np.ndarray, extent: float, bins: int, eps: float) -> dict:
    """Hand-written float64 KL(data || model) and JSD on np.histogram2d probabilities, and
    Soft-IntroVAE's ``calculate_sample_kl`` lines run verbatim (torch, densities)."""
    span = [[-extent, extent], [-extent, extent]]
    p_counts = np.histogram2d(real[:, 0], real[:, 1], bins=bins, range=span)[0]
    q_counts = np.histogram2d(model[:, 0], model[:, 1], bins=bins, range=span)[0]
    p, q = p_counts / p_counts.sum(), q_counts / q_counts.sum()
    area = (2 * extent / bins) ** 2
    kl = sum(
        pi * math.log(pi / (qi + eps * area))
        for pi, qi in zip(p.ravel(), q.ravel(), strict=True)
        if pi > 0
    )
    jsd = 0.0
    for pi, qi in zip(p.ravel(), q.ravel(), strict=True):
        mi = (pi + qi) / 2
        jsd += 0.5 * (pi * math.log(pi / mi) if pi > 0 else 0.0)
        jsd += 0.5 * (qi * math.log(qi / mi) if qi > 0 else 0.0)
    real_hist = torch.tensor(np.histogram2d(*real.T, bins=bins, density=True, range=span)[0])
    fake_hist = torch.tensor(np.histogram2d(*model.T, bins=bins, density=True, range=span)[0])
    their_kl = F.kl_div(torch.log(fake_hist + eps), real_hist, reduction="batchmean")
    mixture = 0.5 * (fake_hist + real_hist)
    kl_1 = F.kl_div(torch.log(real_hist + eps), mixture, reduction="batchmean")
    kl_2 = F.kl_div(torch.log(fake_hist + eps), mixture, reduction="batchmean")
    return {
        "histogram_kl": kl,
        "histogram_jsd": jsd,
        "soft_introvae_kl": float(their_kl),
        "soft_introvae_jsd": float(0.5 * (kl_1 + kl_2)),
    }


@pytest.mark.parametrize("bins", [100, 37])
def test_values_match_an_independent_float64_reference(bins: int) -> None:
    real = ring_samples(5000, seed=1)
    # A model that is too wide, misses two modes and puts 2 % of its samples off the grid.
    model = ring_samples(5000, seed=2, modes=6, std=0.03)
    model[:100] *= 3.0
    extent, eps = math.sqrt(2), 1e-14
    out = histogram_divergences(real, model, extent, bins, eps)
    expected = reference(real, model, extent, bins, eps)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, rel=1e-9), key
    assert out["model_outside_fraction"] == pytest.approx(0.02)
    assert out["real_outside_fraction"] == 0.0
    # Their KL is agekit's divided by bins x bin area (up to the floor's renormalisation).
    area = (2 * extent / bins) ** 2
    assert out["soft_introvae_kl"] == pytest.approx(out["histogram_kl"] / (bins * area), rel=1e-9)


def test_zero_when_the_model_samples_are_the_data_samples() -> None:
    real = ring_samples(5000, seed=3)
    out = histogram_divergences(real, real[::-1].copy(), math.sqrt(2))
    for key in ("histogram_kl", "histogram_jsd", "soft_introvae_kl", "soft_introvae_jsd"):
        assert out[key] == pytest.approx(0.0, abs=1e-9), key


def test_jsd_is_bounded_by_log_2_and_reaches_it_for_disjoint_samples() -> None:
    for seed in range(5):
        real = ring_samples(500, seed=seed)
        model = ring_samples(500, seed=seed + 100, modes=1 + seed, std=0.2)
        assert 0.0 <= histogram_divergences(real, model, 1.5)["histogram_jsd"] <= math.log(2)
    disjoint = histogram_divergences(ring_samples(500, 0), ring_samples(500, 1) + 5.0, 10.0)
    assert disjoint["histogram_jsd"] == pytest.approx(math.log(2), rel=1e-12)
    # Their "JSD" runs from the mixture to each histogram: not bounded by log 2.
    assert disjoint["soft_introvae_jsd"] > 5 * math.log(2)


def test_no_sample_on_the_grid_gives_nan_not_an_error() -> None:
    out = histogram_divergences(ring_samples(100, 0), ring_samples(100, 1) + 9.0, 2.0)
    assert math.isnan(out["histogram_kl"]) and math.isnan(out["histogram_jsd"])
    assert out["model_outside_fraction"] == 1.0


# Through the EvaluationContext -------------------------------------------------------------------
class MixtureSampler(Generator):
    """An exact sampler of the data set's mixture from a 3-d Gaussian code: the mode from z_0's
    normal CDF (uniform over the modes), the noise from z_1, z_2. ``keep_every = 2`` sends each
    odd mode's mass to the even mode before it: the model drops half the modes."""

    def __init__(self, data: DataSource, keep_every: int = 1) -> None:
        super().__init__()
        self.modes = torch.as_tensor(data.modes).double()  # type: ignore[attr-defined]
        self.std = float(data.mode_std)  # type: ignore[attr-defined]
        self.keep_every = keep_every

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        count = self.modes.shape[0]
        index = (torch.special.ndtr(z[:, 0].double()) * count).long().clamp(max=count - 1)
        index = index - index % self.keep_every
        return (self.modes[index] + self.std * z[:, 1:3].double()).float()


class Replay(Generator):
    """Returns the given rows in order, batch after batch, whatever the codes."""

    def __init__(self, rows: Tensor) -> None:
        super().__init__()
        self.rows, self.used = rows, 0

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        out = self.rows[self.used : self.used + z.shape[0]]
        self.used += z.shape[0]
        return out


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_a_model_dropping_half_the_modes_scores_worse(name: str) -> None:
    data = agekit.create("dataset", name)
    prior = GaussianPrior(3)
    encoder = FlattenEncoder(prior, 3)
    metric = HistogramDivergence()
    full = metric(toy_context(data, encoder, MixtureSampler(data), prior, name))
    half = metric(toy_context(data, encoder, MixtureSampler(data, 2), prior, name))
    assert half.values["histogram_kl"] > 10 * full.values["histogram_kl"]
    assert half.values["histogram_jsd"] > 10 * full.values["histogram_jsd"]
    if name == "ring8":
        # Exactly half the modes at twice the weight: JSD = 3/4 log(4/3) = 0.216 nats on the
        # modes; the histogram's sampling noise (0.004 for the exact sampler) comes on top.
        assert half.values["histogram_jsd"] == pytest.approx(0.75 * math.log(4 / 3), abs=0.02)
    largest = float(data.modes.abs().max())
    assert full.protocol["extent"] == pytest.approx(math.sqrt(2) * largest)
    assert (full.protocol["n_real"], full.protocol["n_model"], full.protocol["bins"]) == (
        5000,
        5000,
        100,
    )
    assert HistogramDivergence.headline == {"histogram_kl": "lower", "histogram_jsd": "lower"}


def test_replaying_the_test_samples_scores_zero_and_options_reach_the_protocol() -> None:
    data = agekit.create("dataset", "ring8", size=64, test_size=400)
    real, _ = load_split(data, "test", 300, seed=0)
    prior = GaussianPrior(2)
    context = toy_context(data, FlattenEncoder(prior, 2), Replay(real), prior, "ring8")
    metric = agekit.create("metric", "histogram-divergence", n_samples=300, bins=20, extent=1.2)
    out = metric(context)
    assert out.values["histogram_kl"] == pytest.approx(0.0, abs=1e-9)
    assert out.values["histogram_jsd"] == pytest.approx(0.0, abs=1e-9)
    assert out.protocol["grid"] == "[-1.2, 1.2]^2, 20 x 20 bins"
    assert out.protocol["extent_source"] == "set (option extent)"


def test_image_data_is_refused_naming_the_data_set_and_the_supported_ones() -> None:
    data = toy_images()
    prior = GaussianPrior(16)
    context = toy_context(data, FlattenEncoder(prior, 16), Replay(torch.zeros(8, 2)), prior, "toy")
    with pytest.raises(ValueError, match=r"'toy'.*2-D vector data \(grid25, ring8"):
        HistogramDivergence()(context)
    with pytest.raises(ValueError):
        agekit.create("metric", "histogram-divergence", extent=-1.0)


def test_a_tiny_trained_run_is_scored_through_evaluate(tmp_path: Path) -> None:
    raw = {
        "name": "tiny",
        "data": {"name": "ring8", "batch_size": 32, "options": {"size": 256, "test_size": 128}},
        "prior": {"name": "sphere", "dim": 4},
        "backbone": {"name": "mlp", "options": {"hidden": 16, "depth": 2}},
        "train": {"steps": 4, "checkpoint_every": 4, "image_every": 10**6, "device": "cpu"},
    }
    Trainer(parse_config(raw), tmp_path / "run").fit()
    metric = Component(name="histogram-divergence", options={"n_samples": 200, "bins": 25})
    stored = evaluate(tmp_path / "run", [metric], device="cpu")["metrics"]
    scores = stored["histogram-divergence"]
    # Four steps do not put the samples on the ring: the numbers are only checked to be there.
    assert math.isfinite(scores["histogram_kl"]) and scores["histogram_kl"] > 0
    assert 0 < scores["histogram_jsd"] <= math.log(2)
    assert 0.0 <= scores["model_outside_fraction"] <= 1.0
    assert scores["protocol"]["n_real"] == 128  # capped at the test split
    assert scores["protocol"]["n_model"] == 200 and scores["protocol"]["dataset"] == "ring8"
