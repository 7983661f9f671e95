"""The introspective games (IntroVAE, Soft-IntroVAE): each phase's loss against the objectives
written out by hand on a tiny batch, the fakes' detachment in the encoder step, and registration.

The oracles share only the networks with the games: the divergence (gaussian-kl), the squared
error and the soft exponential are recomputed here from their formulas, in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

import agekit
from agekit.components import ComponentInputError, Encoder, Generator, Prior
from agekit.divergences import GaussianKL
from agekit.games.base import GameBatch, GameParts, Play, StepLosses
from agekit.games.introspective import (
    EXPONENT_CAP,
    IntroVAE,
    SoftIntroVAE,
    log_mean_exp,
    soft_mean_exp,
)
from agekit.registry import REGISTRY, ComponentOptionsError

DATA_SHAPE = (2, 2)  # N = 4 elements a sample
LATENT = 3  # M; the default divergence scale r is M / N = 0.75
BATCH = 6


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


def _setup(prior_name: str) -> tuple[GameParts, Tensor, list[Tensor]]:
    torch.manual_seed(0)
    prior = agekit.create("prior", prior_name, dim=LATENT)
    encoder, generator = LinearEncoder(prior).double(), LinearGenerator().double()
    parts = GameParts(
        {"encoder": encoder, "generator": generator},
        prior,
        agekit.create("divergence", "gaussian-kl"),
        agekit.create("loss", "l2"),
        agekit.create("loss", "l2"),
    )
    x = torch.randn(BATCH, *DATA_SHAPE, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    zs = [prior.sample(BATCH, gen, dtype=torch.float64) for _ in range(2)]
    return parts, x, zs


def _run(play: Play, x: Tensor, zs: list[Tensor]) -> list[StepLosses]:
    """Each phase's losses, as the trainer asks for them (one fresh draw of z per phase)."""
    draws: Iterator[Tensor] = iter(zs)
    batch = GameBatch(x, None, lambda n: next(draws)[:n])
    return [phase.losses(batch) for phase in play.phases()]


# The hand-written pieces --------------------------------------------------------------------------
def kl(codes: Tensor, prior: Prior) -> Tensor:
    """gaussian-kl by its formula: per dimension 0.5 (v' + m'^2 - 1 - log v'), averaged."""
    var_p = 1.0 / prior.dim if prior.support == "sphere" else 1.0
    v = codes.var(dim=0, unbiased=False) / var_p
    m2 = codes.mean(dim=0) ** 2 / var_p
    return (0.5 * (v + m2 - 1 - torch.log(v))).mean()


def sq(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample mean squared error (agekit's l2)."""
    return ((a - b) ** 2).flatten(1).mean(dim=1)


def _grads(loss: Tensor, parts: GameParts) -> list[Tensor]:
    params = [p for net in parts.networks.values() for p in net.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def _assert_same(got: StepLosses, want: Tensor, parts: GameParts) -> None:
    torch.testing.assert_close(got.loss, want)
    for a, b in zip(_grads(got.loss, parts), _grads(want, parts), strict=True):
        torch.testing.assert_close(a, b)


# IntroVAE -----------------------------------------------------------------------------------------
def _intro_encoder_oracle(parts: GameParts, x: Tensor, z: Tensor, a: float, b: float, m: float):
    e, g, prior, r = parts.encoder, parts.generator, parts.prior, LATENT / 4
    with torch.no_grad():
        fake, rec_const = g(z), g(e(x))
    codes = e(x)
    hinge_fake, hinge_rec = m - kl(e(fake), prior), m - kl(e(rec_const), prior)
    assert hinge_fake > 0 and hinge_rec > 0  # both hinges active: the test sees their gradient
    loss = r * kl(codes, prior) + a * r * (hinge_fake + hinge_rec) + b * sq(x, g(codes)).mean()
    return loss, fake


@pytest.mark.parametrize("prior_name", ["gaussian", "sphere"])
def test_introvae_losses_match_the_hand_computed_objectives(prior_name: str) -> None:
    parts, x, zs = _setup(prior_name)
    alpha, beta, margin = 0.7, 0.3, 50.0
    play = IntroVAE(alpha=alpha, beta=beta, margin=margin).bind(parts)
    enc, gen = _run(play, x, zs)
    want, _ = _intro_encoder_oracle(parts, x, zs[0], alpha, beta, margin)
    _assert_same(enc, want, parts)

    e, g, prior, r = parts.encoder, parts.generator, parts.prior, LATENT / 4
    with torch.no_grad():
        codes = e(x)
    rec, fake = g(codes), g(zs[1])
    want = alpha * r * (kl(e(fake), prior) + kl(e(rec), prior)) + beta * sq(x, rec).mean()
    _assert_same(gen, want, parts)
    torch.testing.assert_close(gen.terms["kl_fake"], kl(e(fake), prior))


def test_introvae_hinge_stops_at_the_margin_and_scale_is_an_option() -> None:
    parts, x, zs = _setup("gaussian")
    play = IntroVAE(alpha=1.0, beta=0.0, margin=1e-6, divergence_scale=2.0).bind(parts)
    out = play.encoder_step(x, zs[0])
    # Fakes already farther than m: only r D(e(x)) is left.
    torch.testing.assert_close(out.loss, 2.0 * kl(parts.encoder(x), parts.prior))


# Soft-IntroVAE ------------------------------------------------------------------------------------
SOFT = {"beta_rec": 0.8, "beta_kl": 1.3, "beta_neg": 2.0, "gamma_r": 0.5, "alpha": 2.0}


def _soft_term(parts: GameParts, y: Tensor, r: float) -> Tensor:
    e, g = parts.encoder, parts.generator
    codes = e(y)
    energy = SOFT["beta_rec"] * sq(y, g(codes)) + SOFT["beta_neg"] * r * kl(codes, parts.prior)
    return torch.exp(-SOFT["alpha"] * energy).mean()


def _soft_encoder_oracle(parts: GameParts, x: Tensor, z: Tensor, detach: bool = True) -> Tensor:
    e, g, r = parts.encoder, parts.generator, LATENT / 4
    with torch.no_grad():
        fake_const, rec_const = g(z), g(e(x))
    fake, rec = (fake_const, rec_const) if detach else (g(z), g(e(x)))
    codes = e(x)
    real = SOFT["beta_rec"] * sq(x, g(codes)).mean() + SOFT["beta_kl"] * r * kl(codes, parts.prior)
    soft = (_soft_term(parts, fake, r) + _soft_term(parts, rec, r)) / (2 * SOFT["alpha"])
    assert soft > 1e-3  # the soft term is not underflowing: the test sees its gradient
    return real + soft


@pytest.mark.parametrize("prior_name", ["gaussian", "sphere"])
def test_soft_introvae_losses_match_the_hand_computed_objectives(prior_name: str) -> None:
    parts, x, zs = _setup(prior_name)
    enc, gen = _run(SoftIntroVAE(**SOFT).bind(parts), x, zs)
    _assert_same(enc, _soft_encoder_oracle(parts, x, zs[0]), parts)

    e, g, prior, r = parts.encoder, parts.generator, parts.prior, LATENT / 4
    with torch.no_grad():
        codes = e(x)
    rec, fake = g(codes), g(zs[1])
    rc, fc = e(rec), e(fake)
    want = SOFT["beta_rec"] * sq(x, rec).mean()
    want = want + SOFT["beta_kl"] * r * (kl(fc, prior) + kl(rc, prior)) / 2
    self_rec = sq(fake.detach(), g(fc.detach())).mean() + sq(rec.detach(), g(rc.detach())).mean()
    want = want + SOFT["gamma_r"] * SOFT["beta_rec"] * self_rec / 2
    _assert_same(gen, want, parts)


# Detachment ---------------------------------------------------------------------------------------
GAMES: dict[str, Callable[[], IntroVAE | SoftIntroVAE]] = {
    "introvae": lambda: IntroVAE(alpha=0.7, beta=0.3, margin=50.0),
    "soft-introvae": lambda: SoftIntroVAE(**SOFT),
}


def test_a_non_detached_fake_would_change_the_generator_gradient() -> None:
    """The oracle comparison above can see detachment: without it the generator's gradient of
    the encoder loss differs."""
    parts, x, zs = _setup("gaussian")
    detached = _grads(_soft_encoder_oracle(parts, x, zs[0]), parts)
    attached = _grads(_soft_encoder_oracle(parts, x, zs[0], detach=False), parts)
    generator_params = len(list(parts.encoder.parameters()))
    assert any(
        not torch.allclose(a, b)
        for a, b in zip(detached[generator_params:], attached[generator_params:], strict=True)
    )


@pytest.mark.parametrize("name", sorted(GAMES))
def test_the_generator_learns_nothing_in_the_encoder_phase(name: str) -> None:
    """As the trainer runs it: only the encoder's parameters require gradients."""
    parts, x, zs = _setup("gaussian")
    parts.generator.requires_grad_(False)
    enc, _ = _run(GAMES[name]().bind(parts), x, zs)
    enc.loss.backward()
    assert all(p.grad is None for p in parts.generator.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in parts.encoder.parameters())


def test_introvae_without_the_data_term_leaves_the_generator_out_of_the_encoder_graph() -> None:
    parts, x, zs = _setup("gaussian")
    IntroVAE(alpha=1.0, beta=0.0, margin=50.0).bind(parts).encoder_step(x, zs[0]).loss.backward()
    assert all(p.grad is None for p in parts.generator.parameters())


# The soft exponential -----------------------------------------------------------------------------
def test_soft_exponential_is_stable() -> None:
    moderate = torch.tensor([-0.5, -2.0, 0.1], dtype=torch.float64)
    torch.testing.assert_close(log_mean_exp(moderate), moderate.exp().mean().log())
    far = torch.tensor([-2000.0, -1000.0], requires_grad=True)  # exp underflows: 0, no NaN
    value = soft_mean_exp(far)
    value.backward()
    assert value == 0 and torch.isfinite(far.grad).all()
    huge = torch.tensor([500.0, 400.0])  # a broken estimate: capped, finite
    assert soft_mean_exp(huge) == pytest.approx(math.exp(EXPONENT_CAP), rel=1e-5)


# Registration and checks --------------------------------------------------------------------------
def test_listed_and_created_by_the_registry() -> None:
    assert {"introvae", "soft-introvae"} <= set(REGISTRY.available("game"))
    made = agekit.create("game", "introvae", alpha=0.5, margin=1.0)
    assert isinstance(made, IntroVAE) and made.weights.alpha == 0.5
    soft = agekit.create("game", "soft-introvae", beta_neg=128.0, divergence_scale=1.0)
    assert isinstance(soft, SoftIntroVAE) and soft.weights.beta_neg == 128.0
    assert soft.uses_divergence and "kl_real" in soft.term_labels


@pytest.mark.parametrize(
    ("name", "options"),
    [("introvae", {"margin": 0.0}), ("soft-introvae", {"alpha": 0.0}), ("introvae", {"m": 1})],
)
def test_bad_options_are_refused(name: str, options: dict) -> None:
    with pytest.raises(ComponentOptionsError):
        agekit.create("game", name, **options)


@pytest.mark.parametrize("name", sorted(GAMES))
def test_a_divergence_without_a_sign_is_refused_in_one_line(name: str) -> None:
    game, prior = GAMES[name](), agekit.create("prior", "sphere", dim=4)
    game.check(prior, GaussianKL())
    with pytest.raises(ComponentInputError) as raised:
        game.check(prior, GaussianKL(reference_code_variance=True))
    assert "\n" not in str(raised.value) and name in str(raised.value)
