"""The AGE objectives: signs, which network each step can change, detachment of fakes."""

from __future__ import annotations

import copy

import pytest
import torch

import agekit
from agekit.game import AGEGame, GameWeights


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


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


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
    game = _game(GameWeights(data_weight=3.0))
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


@pytest.mark.parametrize("step", ["encoder", "generator"])
def test_each_step_changes_only_its_own_network(step: str) -> None:
    """Run the trainer's step and check the other network's parameters are bit-identical."""
    from agekit.config import parse_config
    from agekit.trainer import Trainer

    config = parse_config(
        {
            "data": {"name": "ring8", "batch_size": 32, "options": {"size": 512, "test_size": 64}},
            "prior": {"name": "sphere", "dim": 4},
            "backbone": {"name": "mlp", "options": {"hidden": 16, "depth": 2}},
            "game": {"gen_steps_per_encoder_step": 1 if step == "encoder" else 2},
            "train": {"steps": 1, "device": "cpu"},
        }
    )
    trainer = Trainer(config, run_dir="/nonexistent-not-written")
    enc0, gen0 = _params(trainer.encoder), _params(trainer.generator)
    game = trainer.model.game
    x = trainer.stream.next()
    z = trainer._sample_z(32)
    if step == "encoder":
        trainer.generator.requires_grad_(False)
        out = game.encoder_step(x, z)
        trainer.opt_encoder.zero_grad()
        out.loss.backward()
        trainer.opt_encoder.step()
        unchanged, changed = _params(trainer.generator), _params(trainer.encoder)
        before_unchanged, before_changed = gen0, enc0
    else:
        trainer.encoder.requires_grad_(False)
        out = game.generator_step(z)
        trainer.opt_generator.zero_grad()
        out.loss.backward()
        trainer.opt_generator.step()
        unchanged, changed = _params(trainer.encoder), _params(trainer.generator)
        before_unchanged, before_changed = enc0, gen0
    assert all(torch.equal(a, b) for a, b in zip(unchanged, before_unchanged, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(changed, before_changed, strict=True))


def test_full_iteration_updates_both_and_leaves_no_stale_gradients() -> None:
    from agekit.config import parse_config
    from agekit.trainer import Trainer

    config = parse_config(
        {
            "data": {"name": "ring8", "batch_size": 32, "options": {"size": 512, "test_size": 64}},
            "prior": {"name": "sphere", "dim": 4},
            "backbone": {"name": "mlp", "options": {"hidden": 16, "depth": 2}},
            "train": {"steps": 1, "device": "cpu"},
        }
    )
    trainer = Trainer(config, run_dir="/nonexistent-not-written")
    before = (
        copy.deepcopy(trainer.encoder.state_dict()),
        copy.deepcopy(trainer.generator.state_dict()),
    )
    record = trainer.train_step()
    assert {"kl_real", "kl_fake", "data_rec", "latent_rec"} <= set(record)
    for module, old in zip((trainer.encoder, trainer.generator), before, strict=True):
        assert any(not torch.equal(v, old[k]) for k, v in module.state_dict().items())
