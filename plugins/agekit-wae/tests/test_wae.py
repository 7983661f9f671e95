"""agekit-wae: the WAE-MMD loss against hand computation, its single update, and registration."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from agekit_wae import KERNEL_SCALES, WAEMMD, WAEPlay, imq_mmd
from torch import Tensor, nn

import agekit
from agekit.components import Encoder, Generator, Prior
from agekit.games.base import GameBatch, GameParts
from agekit.registry import REGISTRY, ComponentOptionsError

DATA_SHAPE = (3,)
LATENT = 2
BATCH = 4


class LinearEncoder(Encoder):
    def __init__(self, prior: Prior) -> None:
        super().__init__(prior)
        self.linear = nn.Linear(math.prod(DATA_SHAPE), prior.dim)

    def raw(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.linear(x.flatten(1))


class LinearGenerator(Generator):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(LATENT, math.prod(DATA_SHAPE))

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.linear(z).view(-1, *DATA_SHAPE)


def _mmd_by_loops(codes: list[list[float]], samples: list[list[float]], cs: list[float]) -> float:
    """The U-statistic written out pair by pair, in Python floats."""

    def k(a: list[float], b: list[float]) -> float:
        d = sum((u - v) ** 2 for u, v in zip(a, b, strict=True))
        return sum(c / (c + d) for c in cs)

    n, m = len(codes), len(samples)
    xx = sum(k(a, b) for a, b in itertools.permutations(codes, 2)) / (n * (n - 1))
    yy = sum(k(a, b) for a, b in itertools.permutations(samples, 2)) / (m * (m - 1))
    xy = sum(k(a, b) for a in codes for b in samples) / (n * m)
    return xx + yy - 2 * xy


def test_imq_mmd_on_four_points_by_hand() -> None:
    # C = 4 (N(0, I_2): 2 * (1 + 1)). Within each pair |d|^2 = 1, k = 4/5; across, |d|^2 is 1 or
    # 2, k = 4/5 or 4/6: MMD^2 = 0.8 + 0.8 - 2 * (0.8 + 0.8 + 2/3 + 2/3) / 4 = 2/15.
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    samples = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert float(imq_mmd(codes, samples, 4.0, (1.0,))) == pytest.approx(2 / 15, rel=1e-12)


@pytest.mark.parametrize("prior_name", ["gaussian", "sphere"])
def test_loss_matches_hand_computation(prior_name: str) -> None:
    torch.manual_seed(0)
    prior = agekit.create("prior", prior_name, dim=LATENT)
    encoder, generator = LinearEncoder(prior).double(), LinearGenerator().double()
    parts = GameParts(
        {"encoder": encoder, "generator": generator},
        prior,
        agekit.create("divergence", "gaussian-kl"),  # unused by this game
        agekit.create("loss", "l2"),
        agekit.create("loss", "l2"),
    )
    x = torch.randn(BATCH, *DATA_SHAPE, dtype=torch.float64)
    z = prior.sample(BATCH, torch.Generator().manual_seed(1), dtype=torch.float64)
    (phase,) = WAEMMD().bind(parts).phases()
    assert phase.optimiser == "autoencoder"
    out = phase.losses(GameBatch(x, None, lambda n: z[:n]))

    with torch.no_grad():
        codes = encoder(x)
        rec = generator(codes)
    sq = sum(float(v) ** 2 for v in (x - rec).flatten()) / x.numel()  # mean over all elements
    base = 2.0 * (2.0 if prior_name == "gaussian" else 1.0)  # 2 * sum of the prior's variances
    mmd = _mmd_by_loops(codes.tolist(), z.tolist(), [s * base for s in KERNEL_SCALES])
    want = 0.05 * DATA_SHAPE[0] * sq + 10.0 * mmd  # the defaults: w = 0.05 N, lambda = 10
    assert out.loss.item() == pytest.approx(want, rel=1e-10)
    assert out.terms["mmd"].item() == pytest.approx(mmd, rel=1e-10)
    assert out.terms["data_rec"].item() == pytest.approx(sq, rel=1e-10)

    out.loss.backward()  # one update trains both networks
    for net in (encoder, generator):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_data_weight_option() -> None:
    prior = agekit.create("prior", "gaussian", dim=LATENT)
    play = WAEMMD(data_weight=2.5).bind(
        GameParts(
            {"encoder": LinearEncoder(prior), "generator": LinearGenerator()},
            prior,
            agekit.create("divergence", "gaussian-kl"),
            agekit.create("loss", "l1"),
            agekit.create("loss", "l2"),
        )
    )
    assert isinstance(play, WAEPlay)
    assert play.weight_of_data(torch.zeros(2, 100)) == 2.5


def test_listed_by_the_registry_once_installed() -> None:
    assert "wae-mmd" in REGISTRY.available("game")
    (entry,) = [e for e in REGISTRY.check("game") if e.name == "wae-mmd"]
    assert entry.status == "ok"
    assert entry.distribution == "agekit-wae"
    made = agekit.create("game", "wae-mmd", mmd_weight=100.0, kernel_scales=[1.0, 2.0])
    assert isinstance(made, WAEMMD)
    assert (made.mmd_weight, made.kernel_scales) == (100.0, (1.0, 2.0))
    assert made.optimisers() == {"autoencoder": ("encoder", "generator")}
    assert not made.uses_divergence


@pytest.mark.parametrize(
    "options", [{"mmd_weight": -1.0}, {"kernel_scales": [0.0]}, {"lambda_": 1.0}]
)
def test_bad_options_are_refused(options: dict) -> None:
    with pytest.raises(ComponentOptionsError):
        agekit.create("game", "wae-mmd", **options)
