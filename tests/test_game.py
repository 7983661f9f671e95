"""The AGE objectives: signs, which network each step can change, detachment of fakes.

The first tests call :class:`AGEGame` directly, and check both losses against the equations
written out by hand (an oracle that shares nothing with the game but the networks and the
divergence), with mutants of the game that the oracle must catch. The trainer-step tests drive
the real :meth:`Trainer.train_step` and watch it from outside, without re-implementing it: step
hooks on the two optimisers snapshot both networks (parameters, buffers, gradients,
``requires_grad``) around every optimiser step, and the batch and the codes z the trainer draws
are recorded, so that an oracle can recompute each step's loss with the game on copies of the
networks and compare gradients and batch-norm statistics bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from torch import Tensor, nn

import agekit
from agekit.components import Divergence, Encoder, Generator, Prior
from agekit.config import GameConfig, parse_config
from agekit.games.age import AGEGame, GameWeights
from agekit.model import build_model
from agekit.training.trainer import Trainer


def _game(weights: GameWeights | None = None) -> AGEGame:
    torch.manual_seed(0)
    prior = agekit.create("prior", "sphere", dim=4)
    pair = agekit.create("backbone", "mlp", hidden=16, depth=2).build((2,), 4, prior)
    return AGEGame(
        pair.encoder,
        pair.generator,
        prior,
        agekit.create("divergence", "gaussian-kl"),
        agekit.create("loss", "l1"),
        agekit.create("loss", "l2"),
        weights,
    )


def test_generator_loss_is_divergence_plus_lambda_latent_reconstruction() -> None:
    game = _game(GameWeights(latent_weight=7.0))
    z = game.prior.sample(32, torch.Generator().manual_seed(1))
    out = game.generator_step(z)
    expected = out.terms["kl_fake"] + 7.0 * out.terms["latent_rec"]
    torch.testing.assert_close(out.loss, expected)
    codes = game.encoder(game.generator(z))
    torch.testing.assert_close(out.terms["kl_fake"], game.divergence(codes, game.prior))
    torch.testing.assert_close(out.terms["latent_rec"], ((z - codes) ** 2).mean(1).mean())


def test_encoder_loss_signs() -> None:
    game = _game(GameWeights(data_weight=3.0, fake_margin=None))
    x = torch.randn(32, 2)
    z = game.prior.sample(32, torch.Generator().manual_seed(2))
    out = game.encoder_step(x, z, adversary_weight=0.5)
    t = out.terms
    # The encoder MAXIMISES D(e(g(z))) - D(e(x)) - mu L_X: it minimises the negation.
    torch.testing.assert_close(
        out.loss, t["kl_real"] - 0.5 * t["kl_fake_enc"] + 3.0 * t["data_rec"]
    )


def test_fake_margin_caps_the_encoders_reward() -> None:
    game = _game(GameWeights(fake_margin=1e-6))
    x = torch.randn(32, 2)
    z = game.prior.sample(32, torch.Generator().manual_seed(2))
    out = game.encoder_step(x, z)
    t = out.terms
    assert float(t["kl_fake_enc"].detach()) > 1e-6  # the cap is active for this batch
    torch.testing.assert_close(out.loss, t["kl_real"] - 1e-6 + 10.0 * t["data_rec"])


def test_encoder_step_does_not_reach_the_generator_through_fakes() -> None:
    game = _game(GameWeights(data_weight=0.0))  # only the divergences remain
    x = torch.randn(32, 2)
    z = game.prior.sample(32, torch.Generator().manual_seed(3))
    game.encoder_step(x, z).loss.backward()
    # With mu = 0 the generator enters only through the detached fakes: no gradient at all.
    assert all(p.grad is None for p in game.generator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in game.encoder.parameters())


class _Calls(nn.Module):
    """A wrapper (as DDP is) that records which role called it."""

    def __init__(self, module: nn.Module, name: str, calls: list[str]) -> None:
        super().__init__()
        self.module, self.name, self.calls = module, name, calls

    def forward(self, *args: Any) -> Tensor:
        self.calls.append(self.name)
        return self.module(*args)  # type: ignore[no-any-return]


def test_each_step_calls_the_network_it_updates_through_its_wrapper() -> None:
    base = _game(GameWeights(generator_data_weight=1.0, encoder_latent_weight=1.0))
    calls: list[str] = []
    game = base.with_networks(
        _Calls(base.encoder, "bare encoder", calls),  # type: ignore[arg-type]
        _Calls(base.generator, "bare generator", calls),  # type: ignore[arg-type]
        trained_encoder=_Calls(base.encoder, "wrapped encoder", calls),
        trained_generator=_Calls(base.generator, "wrapped generator", calls),
    )
    assert (game.divergence, game.weights, game.prior) == (
        base.divergence,
        base.weights,
        base.prior,
    )
    x = torch.randn(8, 2)
    z = game.prior.sample(8, torch.Generator().manual_seed(4))
    game.encoder_step(x, z)
    assert set(calls) == {"wrapped encoder", "bare generator"}
    calls.clear()
    game.generator_step(z, x)
    assert set(calls) == {"bare encoder", "wrapped generator"}
    # Without wrappers each step calls the networks themselves.
    assert base.trained_encoder is base.encoder and base.trained_generator is base.generator


def test_with_networks_passes_the_gather_to_the_divergence() -> None:
    base = _game()
    gathered: list[int] = []

    def gather(codes: Tensor) -> Tensor:
        gathered.append(codes.shape[0])
        return codes

    game = base.with_networks(base.encoder, base.generator, gather=gather)
    game.generator_step(game.prior.sample(8, torch.Generator().manual_seed(5)))
    assert gathered == [8] and base.gather is None


# One source of defaults ---------------------------------------------------------------------------


def test_game_weights_default_to_the_configuration_files_defaults() -> None:
    weights = {f.name for f in dataclasses.fields(GameWeights)}
    # Every weight of the Python game is a [game] key, so none can keep a default of its own.
    assert weights <= set(GameConfig.model_fields)
    python, toml = GameWeights(), GameConfig()
    differ = {
        name: (getattr(python, name), getattr(toml, name))
        for name in sorted(weights)
        if getattr(python, name) != getattr(toml, name)
    }
    assert not differ, f"GameWeights() against GameConfig() (Python, TOML): {differ}"


def test_a_game_built_in_python_is_the_game_of_an_empty_game_table() -> None:
    config = parse_config(
        {
            "data": {"name": "ring8", "options": {"size": 64, "test_size": 16}},
            "prior": {"name": "sphere", "dim": 4},
            "backbone": {"name": "mlp", "options": {"hidden": 8, "depth": 1}},
            "game": {},
            "train": {"steps": 1, "device": "cpu"},
        }
    )
    assert build_model(config, torch.device("cpu")).game.weights == _game().weights


# The two objectives written out from the equations ------------------------------------------------
#
# An oracle that shares nothing with AGEGame but the networks' parameters and the divergence object:
# tiny float64 affine networks whose codes and reconstructions it computes from their parameters,
# and each loss written term by term from the module docstring's equations, with the L1 and L2
# losses' default normalisation (mean over a sample's elements, then over the batch). Gradients of
# both networks are compared too, so the oracle also pins which network each term reaches (the
# encoder step's fakes are constants).

DATA_DIM, LATENT_DIM, BATCH = 3, 4, 6
#: Both sides evaluate the same float64 expressions, in a possibly different order (flattening,
#: per-sample means, normalisation): a few ulps, ~1e-15 relative, on values and gradients of order
#: 0.01 to 100 (measured: <= 2e-16). 1e-10 sits far above that and far below what each mutant
#: below changes in the step it breaks (measured: 0.07 and more).
TOLERANCE = 1e-10  # relative and absolute
#: The encoder's cap on D(e(g(z))) in the "every term" setup: below the fakes' divergence
#: (asserted), so the cap binds.
MARGIN = 0.05
#: Codes from "other processes" that the "every term" gather appends before the divergence.
OTHER_CODES = nn.functional.normalize(
    torch.randn(5, LATENT_DIM, generator=torch.Generator().manual_seed(11), dtype=torch.float64),
    dim=1,
)


class _AffineEncoder(Encoder):
    """e(x) = (A x + a) / ||A x + a||, on the sphere prior."""

    def __init__(self, prior: Prior, seed: torch.Generator) -> None:
        super().__init__(prior)
        f64 = torch.float64
        self.weight = nn.Parameter(torch.randn(LATENT_DIM, DATA_DIM, generator=seed, dtype=f64))
        self.bias = nn.Parameter(torch.randn(LATENT_DIM, generator=seed, dtype=f64))

    def raw(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return x @ self.weight.T + self.bias


class _AffineGenerator(Generator):
    """g(z) = B z + b."""

    def __init__(self, seed: torch.Generator) -> None:
        super().__init__()
        f64 = torch.float64
        self.weight = nn.Parameter(torch.randn(DATA_DIM, LATENT_DIM, generator=seed, dtype=f64))
        self.bias = nn.Parameter(torch.randn(DATA_DIM, generator=seed, dtype=f64))

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return z @ self.weight.T + self.bias


@dataclass(frozen=True)
class _Setup:
    weights: GameWeights
    adversary_weight: float
    latent_filter: Callable[[Tensor], Tensor] | None = None
    gather: Callable[[Tensor], Tensor] | None = None


@dataclass
class _Play:
    """Networks and one batch: what a game and the oracle both see."""

    prior: Prior
    encoder: _AffineEncoder
    generator: _AffineGenerator
    x: Tensor
    z: Tensor

    @classmethod
    def new(cls) -> _Play:
        prior = agekit.create("prior", "sphere", dim=LATENT_DIM)
        seed = torch.Generator().manual_seed(7)
        encoder, generator = _AffineEncoder(prior, seed), _AffineGenerator(seed)
        x = torch.randn(BATCH, DATA_DIM, generator=seed, dtype=torch.float64)
        return cls(prior, encoder, generator, x, prior.sample(BATCH, seed, dtype=torch.float64))

    def game(
        self,
        setup: _Setup,
        *,
        kind: type[AGEGame] = AGEGame,
        divergence: Divergence | None = None,
        **changed_weights: Any,
    ) -> AGEGame:
        return kind(
            self.encoder,
            self.generator,
            self.prior,
            divergence or agekit.create("divergence", "gaussian-kl"),
            agekit.create("loss", "l1"),
            agekit.create("loss", "l2"),
            dataclasses.replace(setup.weights, **changed_weights),
            gather=setup.gather,
            latent_filter=setup.latent_filter,
        )


def _with_other_codes(codes: Tensor) -> Tensor:
    return torch.cat([codes, OTHER_CODES])


def _halve(images: Tensor) -> Tensor:
    return 0.5 * images


SETUPS: dict[str, _Setup] = {
    # The paper's eq. (5) and (6), with weights that tell the terms apart.
    "paper": _Setup(
        GameWeights(
            latent_weight=7.0,
            data_weight=3.0,
            generator_data_weight=0.0,
            encoder_latent_weight=0.0,
            fake_margin=None,
        ),
        adversary_weight=0.6,
    ),
    "every term": _Setup(
        GameWeights(
            latent_weight=7.0,
            data_weight=3.0,
            generator_data_weight=0.5,
            encoder_latent_weight=0.25,
            fake_margin=MARGIN,
        ),
        adversary_weight=0.6,
        latent_filter=_halve,
        gather=_with_other_codes,
    ),
}


def _by_hand(play: _Play, setup: _Setup) -> dict[str, tuple[Tensor, dict[str, Tensor]]]:
    """Each step's loss to minimise and its logged terms, written out from the equations."""
    w, a = setup.weights, setup.adversary_weight
    A, b_e = play.encoder.weight, play.encoder.bias
    B, b_g = play.generator.weight, play.generator.bias
    x, z = play.x, play.z
    divergence = agekit.create("divergence", "gaussian-kl")

    def e(data: Tensor) -> Tensor:
        h = data @ A.T + b_e
        return h / h.norm(dim=1, keepdim=True)

    def g(codes: Tensor) -> Tensor:
        return codes @ B.T + b_g

    def D(codes: Tensor) -> Tensor:
        return divergence(codes if setup.gather is None else setup.gather(codes), play.prior)

    def l1(target: Tensor, reconstruction: Tensor) -> Tensor:
        return (target - reconstruction).abs().mean(dim=1).mean()

    def l2(target: Tensor, reconstruction: Tensor) -> Tensor:
        return ((target - reconstruction) ** 2).mean(dim=1).mean()

    # Encoder: maximise a min(D(e(g(z))), m) - D(e(x)) - mu L_X(x, g(e(x))) - w L_Z(z, e(g(z)))
    # with g(z) a constant.
    fakes = g(z).detach()
    kl_real, kl_fake = D(e(x)), D(e(fakes))
    reward = kl_fake
    if w.fake_margin is not None:
        reward = torch.minimum(kl_fake, kl_fake.new_tensor(w.fake_margin))
    data_rec, latent_rec = l1(x, g(e(x))), l2(z, e(fakes))
    encoder_objective = (
        a * reward - kl_real - w.data_weight * data_rec - w.encoder_latent_weight * latent_rec
    )
    encoder_terms = {"kl_real": kl_real, "kl_fake_enc": kl_fake, "data_rec": data_rec}
    if w.encoder_latent_weight > 0:
        encoder_terms["latent_rec_enc"] = latent_rec

    # Generator: minimise D(e(g(z))) + lambda L_Z(z, e(filter(g(z)))) + w L_X(x, g(e(x))).
    fakes = g(z)
    kl_fake = D(e(fakes))
    seen = fakes if setup.latent_filter is None else setup.latent_filter(fakes)
    latent_rec, data_rec = l2(z, e(seen)), l1(x, g(e(x)))
    generator_loss = kl_fake + w.latent_weight * latent_rec + w.generator_data_weight * data_rec
    generator_terms = {"kl_fake": kl_fake, "latent_rec": latent_rec}
    if w.generator_data_weight > 0:
        generator_terms["data_rec"] = data_rec
    return {
        "encoder": (-encoder_objective, encoder_terms),
        "generator": (generator_loss, generator_terms),
    }


def _close(actual: Tensor, expected: Tensor) -> bool:
    return torch.allclose(actual.detach(), expected.detach(), rtol=TOLERANCE, atol=TOLERANCE)


def _disagreements(game: AGEGame, play: _Play, setup: _Setup) -> list[str]:
    """What of each step's loss, logged terms and gradients (both networks) departs from the
    oracle's; empty when the game plays the equations."""
    named = [
        (f"{role}.{name}", p)
        for role, net in (("encoder", play.encoder), ("generator", play.generator))
        for name, p in net.named_parameters()
    ]
    params = [p for _, p in named]
    played = {
        "encoder": game.encoder_step(play.x, play.z, adversary_weight=setup.adversary_weight),
        "generator": game.generator_step(play.z, play.x),
    }
    bad: list[str] = []
    for step, (loss, terms) in _by_hand(play, setup).items():
        out = played[step]
        if not _close(out.loss, loss):
            bad.append(f"{step} loss")
        if out.terms.keys() != terms.keys():
            bad.append(f"{step} terms {sorted(out.terms)} != {sorted(terms)}")
        else:
            bad += [f"{step} term {k}" for k, v in terms.items() if not _close(out.terms[k], v)]
        # A network a term does not reach gets a zero gradient on both sides (not None).
        got = torch.autograd.grad(out.loss, params, allow_unused=True, materialize_grads=True)
        want = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        bad += [
            f"{step} gradient of {name}"
            for (name, _), g1, g2 in zip(named, got, want, strict=True)
            if not _close(g1, g2)
        ]
    return bad


@pytest.mark.parametrize("setup", SETUPS.values(), ids=SETUPS.keys())
def test_both_losses_are_the_equations_written_out_by_hand(setup: _Setup) -> None:
    play = _Play.new()
    game = play.game(setup)
    if setup.weights.fake_margin is not None:  # the cap must bind, or it goes untested
        assert float(game.encoder_step(play.x, play.z).terms["kl_fake_enc"].detach()) > MARGIN
    bad = _disagreements(game, play, setup)
    assert not bad, f"the game departs from the equations: {bad}"


# Mutants of the game: each must disagree with the oracle in the step it breaks.


class _OnRealCodes(Divergence):
    """A mutant divergence: handed the encoder step's real codes e(x), it returns
    :meth:`instead` of D(e(x)); every other batch of codes it scores as gaussian-kl does."""

    def __init__(self, play: _Play) -> None:
        self.play = play
        self.inner = agekit.create("divergence", "gaussian-kl")
        self.tampered = 0

    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        play = self.play
        if codes.shape == (BATCH, LATENT_DIM) and torch.equal(codes, play.encoder(play.x)):
            self.tampered += 1
            # The encoder step's fake codes, with the same graph as the game's.
            with torch.no_grad():
                fakes = play.generator(play.z)
            return self.instead(play.encoder(fakes), prior)
        return self.inner(codes, prior)

    @abstractmethod
    def instead(self, fake_codes: Tensor, prior: Prior) -> Tensor: ...


class _KlRealOnFakeCodes(_OnRealCodes):
    def instead(self, fake_codes: Tensor, prior: Prior) -> Tensor:
        return self.inner(fake_codes, prior)


class _KlRealDropped(_OnRealCodes):
    def instead(self, fake_codes: Tensor, prior: Prior) -> Tensor:
        return fake_codes.sum() * 0.0


class _Negated(Divergence):
    def __init__(self) -> None:
        self.inner = agekit.create("divergence", "gaussian-kl")

    def compute(self, codes: Tensor, prior: Prior) -> Tensor:
        return -self.inner(codes, prior)


class _RewardSignSwapped(AGEGame):
    """The encoder minimises D(e(x)) + a D(e(g(z))) + ...: it pulls fakes onto the prior."""

    def encoder_step(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["adversary_weight"] = -kwargs.get("adversary_weight", 1.0)
        return super().encoder_step(*args, **kwargs)


def test_the_oracle_catches_kl_real_computed_on_the_fake_codes() -> None:
    play = _Play.new()
    setup = SETUPS["paper"]
    mutant = _KlRealOnFakeCodes(play)
    bad = _disagreements(play.game(setup, divergence=mutant), play, setup)
    assert mutant.tampered > 0, "the mutant never saw the real codes"
    assert "encoder loss" in bad and "encoder term kl_real" in bad, bad
    assert any(m.startswith("encoder gradient") for m in bad), bad


#: name -> (setup, the mutant game, the step that it breaks).
MUTANTS: dict[str, tuple[str, Callable[[_Play, _Setup], AGEGame], str]] = {
    "encoder drops D(e(x))": (
        "paper",
        lambda play, s: play.game(s, divergence=_KlRealDropped(play)),
        "encoder",
    ),
    "encoder rewards fakes near the prior": (
        "paper",
        lambda play, s: play.game(s, kind=_RewardSignSwapped),
        "encoder",
    ),
    "generator pushes fakes off the prior": (
        "paper",
        lambda play, s: play.game(s, divergence=_Negated()),
        "generator",
    ),
    "encoder drops mu L_X": ("every term", lambda p, s: p.game(s, data_weight=0.0), "encoder"),
    "encoder drops its L_Z": (
        "every term",
        lambda play, s: play.game(s, encoder_latent_weight=0.0),
        "encoder",
    ),
    "encoder reward uncapped": ("every term", lambda p, s: p.game(s, fake_margin=None), "encoder"),
    "generator drops lambda L_Z": (
        "every term",
        lambda play, s: play.game(s, latent_weight=0.0),
        "generator",
    ),
    "generator drops its L_X": (
        "every term",
        lambda play, s: play.game(s, generator_data_weight=0.0),
        "generator",
    ),
    "generator L_Z unfiltered": (
        "every term",
        lambda play, s: play.game(dataclasses.replace(s, latent_filter=None)),
        "generator",
    ),
    "divergence ungathered": (
        "every term",
        lambda play, s: play.game(dataclasses.replace(s, gather=None)),
        "generator",
    ),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_the_oracle_catches_a_mutated_objective(mutant: str) -> None:
    setup_name, build, step = MUTANTS[mutant]
    play, setup = _Play.new(), SETUPS[setup_name]
    game = build(play, setup)
    bad = _disagreements(game, play, setup)
    assert any(m.startswith(f"{step} ") for m in bad), bad
    if isinstance(game.divergence, _OnRealCodes):
        assert game.divergence.tampered > 0, "the mutant never saw the real codes"


# The trainer's step, watched from outside ---------------------------------------------------------

NETS = ("encoder", "generator")
GEN_STEPS = 2  # generator updates per iteration (the default); two show that grads do not pile up
ITERATIONS = 2  # the second starts with the first one's gradients still on the networks

#: A DCGAN of width 4 on 32 px digits (batch norm in both networks) and a small MLP on 2-D data.
TRAINER_CASES: dict[str, dict[str, Any]] = {
    "dcgan-batchnorm": {
        "data": {"name": "digits", "batch_size": 16, "options": {"image_size": 32}},
        "prior": {"name": "sphere", "dim": 8},
        "backbone": {"name": "dcgan", "options": {"width": 4}},
    },
    "mlp": {
        "data": {"name": "ring8", "batch_size": 32, "options": {"size": 512, "test_size": 64}},
        "prior": {"name": "sphere", "dim": 4},
        "backbone": {"name": "mlp", "options": {"hidden": 16, "depth": 2}},
    },
}

Tensors = dict[str, Tensor]  # "encoder.net.0.weight" -> tensor
Grads = dict[str, Tensor | None]  # the same, for gradients (None where there is none)
T = TypeVar("T", Tensor, Tensor | None)


@dataclass
class Snapshot:
    """Both networks at one instant, copied."""

    params: Tensors
    buffers: Tensors
    grads: Grads
    requires_grad: dict[str, bool]
    modules: dict[str, nn.Module]  # deep copies, for the oracle
    training: bool  # every submodule of both networks in train mode


@dataclass
class OptimiserStep:
    optimiser: str  # "encoder" or "generator"
    before: Snapshot  # at the pre hook: the step's forward and backward passes are done
    after: Snapshot  # at the post hook


@dataclass
class Iteration:
    start: Snapshot
    end: Snapshot
    record: dict[str, float]
    x: Tensor
    zs: list[Tensor]  # every _sample_z result, in order: the encoder step's, then one per
    steps: list[OptimiserStep]  # generator step


@dataclass
class Recording:
    trainer: Trainer
    iterations: list[Iteration]


def _networks(trainer: Trainer) -> dict[str, nn.Module]:
    return {"encoder": trainer.encoder, "generator": trainer.generator}


def _snapshot(trainer: Trainer) -> Snapshot:
    nets = _networks(trainer)
    params: Tensors = {}
    buffers: Tensors = {}
    grads: Grads = {}
    requires_grad: dict[str, bool] = {}
    for role, net in nets.items():
        for name, p in net.named_parameters():
            params[f"{role}.{name}"] = p.detach().clone()
            grads[f"{role}.{name}"] = None if p.grad is None else p.grad.detach().clone()
            requires_grad[f"{role}.{name}"] = p.requires_grad
        for name, b in net.named_buffers():
            buffers[f"{role}.{name}"] = b.detach().clone()
    return Snapshot(
        params,
        buffers,
        grads,
        requires_grad,
        {role: copy.deepcopy(net) for role, net in nets.items()},
        all(m.training for net in nets.values() for m in net.modules()),
    )


def _record(trainer: Trainer, iterations: int) -> list[Iteration]:
    """Call ``trainer.train_step()`` ``iterations`` times, snapshotting around optimiser steps."""
    steps: list[OptimiserStep] = []
    pending: dict[str, Snapshot] = {}
    xs: list[Tensor] = []
    zs: list[Tensor] = []

    def hooks(role: str) -> tuple[Callable[..., None], Callable[..., None]]:
        def pre(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            assert not pending, "an optimiser step started inside another"
            pending[role] = _snapshot(trainer)

        def post(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            steps.append(OptimiserStep(role, pending.pop(role), _snapshot(trainer)))

        return pre, post

    handles = []
    for role, opt in (("encoder", trainer.opt_encoder), ("generator", trainer.opt_generator)):
        pre, post = hooks(role)
        handles += [opt.register_step_pre_hook(pre), opt.register_step_post_hook(post)]
    sample_z, next_conditioned = trainer._sample_z, trainer.stream.next_conditioned

    def recording_sample_z(n: int) -> Tensor:
        z = sample_z(n)
        zs.append(z.detach().clone())
        return z

    def recording_next() -> tuple[Tensor, Tensor | None]:
        x, condition = next_conditioned()
        xs.append(x.detach().clone())
        return x, condition

    trainer._sample_z = recording_sample_z  # type: ignore[method-assign]
    trainer.stream.next_conditioned = recording_next  # type: ignore[method-assign]
    out: list[Iteration] = []
    try:
        for _ in range(iterations):
            steps.clear()
            xs.clear()
            zs.clear()
            start = _snapshot(trainer)
            record = trainer.train_step()
            assert len(xs) == 1, "one real batch per iteration"
            out.append(Iteration(start, _snapshot(trainer), record, xs[0], list(zs), list(steps)))
    finally:
        for handle in handles:
            handle.remove()
        del trainer._sample_z, trainer.stream.next_conditioned
    return out


@pytest.fixture(scope="module", params=sorted(TRAINER_CASES))
def recording(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Recording:
    case = request.param
    raw = copy.deepcopy(TRAINER_CASES[case]) | {
        "game": {"gen_steps_per_encoder_step": GEN_STEPS},
        "train": {"steps": ITERATIONS, "device": "cpu", "seed": 3},
    }
    run_dir: Path = tmp_path_factory.mktemp(case)
    trainer = Trainer(parse_config(raw), run_dir=run_dir)
    iterations = _record(trainer, ITERATIONS)
    # Every test below relies on this schedule: one encoder update, then GEN_STEPS generator
    # updates, one z per update.
    for it in iterations:
        assert [s.optimiser for s in it.steps] == ["encoder"] + ["generator"] * GEN_STEPS
        assert len(it.zs) == 1 + GEN_STEPS
    return Recording(trainer, iterations)


def _oracle(
    trainer: Trainer, state: Snapshot, loss_of: Callable[[AGEGame], Tensor], role: str
) -> tuple[Tensors, Tensors]:
    """The gradient of ``loss_of(game)`` with respect to ``role``'s parameters, computed on copies
    of the networks as they were in ``state``, and both networks' buffers after that forward."""
    nets = {r: copy.deepcopy(m) for r, m in state.modules.items()}
    # The same divergence, losses and weights, on the copies.
    game = trainer.model.game.with_networks(nets["encoder"], nets["generator"])  # type: ignore[arg-type]
    for param in itertools.chain(*(net.parameters() for net in nets.values())):
        param.requires_grad_(True)  # the parameters' own switch: the modules' may be patched
    names, params = zip(*nets[role].named_parameters(), strict=True)
    grads = torch.autograd.grad(loss_of(game), params)
    buffers: Tensors = {
        f"{r}.{name}": b.detach().clone()
        for r, net in nets.items()
        for name, b in net.named_buffers()
    }
    return {f"{role}.{n}": g for n, g in zip(names, grads, strict=True)}, buffers


def _expected_steps(trainer: Trainer, it: Iteration) -> list[tuple[str, Tensors, Tensors]]:
    """For each optimiser step of ``it``: its network, the gradient its loss should produce and
    both networks' buffers after its forward passes, recomputed from the recorded batch and z on
    copies of the networks as they were when that step began (the previous step's post hook)."""
    weight = it.record["adversary_weight"]

    def encoder_loss(game: AGEGame) -> Tensor:
        return game.encoder_step(it.x, it.zs[0], adversary_weight=weight).loss

    out = [("encoder", *_oracle(trainer, it.start, encoder_loss, "encoder"))]
    for previous, z in zip(it.steps[:-1], it.zs[1:], strict=True):

        def generator_loss(game: AGEGame, z: Tensor = z) -> Tensor:
            return game.generator_step(z).loss

        out.append(("generator", *_oracle(trainer, previous.after, generator_loss, "generator")))
    return out


def _of(flat: Mapping[str, T], role: str) -> dict[str, T]:
    return {k: v for k, v in flat.items() if k.startswith(f"{role}.")}


def _mismatches(
    actual: Mapping[str, Tensor | None], expected: Mapping[str, Tensor | None]
) -> list[str]:
    assert actual.keys() == expected.keys()
    bad = []
    for key, a in actual.items():
        e = expected[key]
        if a is None or e is None:
            if (a is None) != (e is None):
                bad.append(
                    f"{key} ({'None' if a is None else 'set'}, expected "
                    f"{'None' if e is None else 'set'})"
                )
        elif not torch.equal(a, e):
            bad.append(key)
    return bad


def _assert_identical(
    actual: Mapping[str, Tensor | None], expected: Mapping[str, Tensor | None], what: str
) -> None:
    bad = _mismatches(actual, expected)
    assert not bad, f"{what}: not bit-identical: {bad}"


def _assert_all_differ(
    after: Mapping[str, Tensor], before: Mapping[str, Tensor], what: str
) -> None:
    assert after.keys() == before.keys()
    same = [k for k, v in after.items() if torch.equal(v, before[k])]
    assert not same, f"{what}: unchanged: {same}"


def _optimiser_steps(recording: Recording) -> Iterator[tuple[int, OptimiserStep]]:
    for i, it in enumerate(recording.iterations):
        for step in it.steps:
            yield i, step


def test_each_optimiser_holds_exactly_its_own_networks_parameters(recording: Recording) -> None:
    trainer = recording.trainer
    for opt, net in (
        (trainer.opt_encoder, trainer.encoder),
        (trainer.opt_generator, trainer.generator),
    ):
        held = [p for group in opt.param_groups for p in group["params"]]
        assert [id(p) for p in held] == [id(p) for p in net.parameters()]


def test_each_step_changes_only_its_own_network(recording: Recording) -> None:
    """Across each optimiser step of ``train_step()``, its own network's parameters all move and
    the other network's are bit-identical; nothing moves them between optimiser steps."""
    for i, step in _optimiser_steps(recording):
        own = step.optimiser
        other = "generator" if own == "encoder" else "encoder"
        where = f"iteration {i}, {own} step"
        _assert_all_differ(_of(step.after.params, own), _of(step.before.params, own), where)
        _assert_identical(_of(step.after.params, other), _of(step.before.params, other), where)
    for i, it in enumerate(recording.iterations):
        boundaries = [
            it.start,
            *itertools.chain.from_iterable((s.before, s.after) for s in it.steps),
            it.end,
        ]
        # (start -> first pre hook), (post hook -> next pre hook), ..., (last post hook -> end)
        for k, (a, b) in enumerate(zip(boundaries[::2], boundaries[1::2], strict=True)):
            _assert_identical(b.params, a.params, f"iteration {i}, outside optimiser steps ({k})")
        # over the whole iteration the encoder moved once and the generator GEN_STEPS times
        _assert_all_differ(it.end.params, it.start.params, f"iteration {i}")


def test_train_step_leaves_only_each_networks_last_own_gradients(recording: Recording) -> None:
    """No stale gradients: every optimiser step consumes exactly the gradient of its own step's
    loss (recomputed on copies of the networks from the recorded batch and z), the other
    network's gradients pass through it untouched, and after ``train_step()`` the encoder holds
    its step's gradient and the generator its last step's."""
    for i, it in enumerate(recording.iterations):
        if i == 0:
            assert all(g is None for g in it.start.grads.values()), "a fresh trainer has no grads"
        else:
            previous_end = recording.iterations[i - 1].end.grads
            _assert_identical(it.start.grads, previous_end, "between train_step calls")
        expected_steps = _expected_steps(recording.trainer, it)
        # What each network should hold at each step's pre hook: its own step's gradient; the
        # other one's unchanged from before the step. At the encoder step that is the generator's
        # previous gradients (None on a fresh trainer): the encoder's backward must not reach it.
        holding = {role: _of(it.start.grads, role) for role in NETS}
        for k, (step, (role, grads, _)) in enumerate(zip(it.steps, expected_steps, strict=True)):
            assert step.optimiser == role
            holding[role] = dict(grads)
            for net in NETS:
                what = f"iteration {i}, step {k} ({role}): {net} gradients"
                _assert_identical(_of(step.before.grads, net), holding[net], what)
        final = holding["encoder"] | holding["generator"]
        _assert_identical(it.end.grads, final, f"iteration {i}, after train_step")
        for key, grad in it.end.grads.items():
            assert grad is not None and bool(torch.isfinite(grad).all()), key
            assert bool(grad.ne(0).any()), f"{key}: an all-zero gradient"


@pytest.mark.parametrize("recording", ["dcgan-batchnorm"], indirect=True)
def test_batch_norm_statistics_move_with_every_forward_pass(recording: Recording) -> None:
    """Both networks run in train mode in both steps, so every forward pass updates their running
    statistics: the encoder step runs the encoder twice (fakes, real batch) and the generator
    twice (fakes without grad, reconstruction g(e(x))); each generator step runs each network
    once. The statistics match those of the same forward passes on copies, bit for bit, and
    optimiser steps leave buffers alone."""
    passes = {
        "encoder": {"encoder": 2, "generator": 2},
        "generator": {"encoder": 1, "generator": 1},
    }
    for i, it in enumerate(recording.iterations):
        assert any(k.endswith("num_batches_tracked") for k in it.start.buffers)
        assert it.start.training and it.end.training
        starts = [it.start, *(step.after for step in it.steps[:-1])]
        expected_steps = _expected_steps(recording.trainer, it)
        for k, (step, begin, (role, _, buffers)) in enumerate(
            zip(it.steps, starts, expected_steps, strict=True)
        ):
            where = f"iteration {i}, step {k} ({role})"
            assert step.before.training and step.after.training, where
            _assert_identical(step.before.buffers, buffers, f"{where}: forward")
            _assert_identical(step.after.buffers, step.before.buffers, f"{where}: optimiser step")
            for key, now in step.before.buffers.items():
                old = begin.buffers[key]
                if key.endswith("num_batches_tracked"):
                    net = key.split(".")[0]
                    assert int(now) - int(old) == passes[role][net], f"{where}: {key}"
                else:  # running_mean, running_var
                    assert not torch.equal(now, old), f"{where}: {key} did not move"
        _assert_identical(it.end.buffers, it.steps[-1].after.buffers, f"iteration {i}, end")


def test_requires_grad_freezes_the_other_network_and_is_restored(recording: Recording) -> None:
    """During each step's forward and backward only its own network requires grad; after
    ``train_step()`` both networks do again."""
    for i, step in _optimiser_steps(recording):
        for key, flag in step.before.requires_grad.items():
            assert flag == key.startswith(f"{step.optimiser}."), (i, step.optimiser, key)
    for i, it in enumerate(recording.iterations):
        assert all(it.end.requires_grad.values()), f"iteration {i}: not restored"
