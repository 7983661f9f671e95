"""The ``vae``, ``aae`` and ``ali`` games: their losses against the papers' formulas written out by
hand on tiny float64 linear networks, their networks on the built-in backbones, and a few
optimisation steps driven the way the trainer drives any game (a loop over ``play.phases()``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest
import torch
from torch import Tensor, nn

import agekit
from agekit.cli.parser import main
from agekit.components import ComponentInputError, Encoder, Generator, Prior
from agekit.games.aae import AAE, AAEPlay
from agekit.games.ali import ALI, ALIPlay, JointDiscriminator
from agekit.games.base import RESERVED_NETWORK_NAMES, Game, GameBatch, GameParts, Play
from agekit.games.vae import VAE, GaussianEncoder, VAEPlay
from agekit.priors.standard import GaussianPrior, SpherePrior
from agekit.registry import ComponentOptionsError

D, M, B = 5, 3, 6  # data size, code size, batch size of the hand-computed tests
F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The networks here are tiny: threads cost more than they give, a lot more on a busy host."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LinearEncoder(Encoder):
    def __init__(self, prior: Prior, n_in: int, n_out: int) -> None:
        super().__init__(prior)
        self.linear = nn.Linear(n_in, n_out, dtype=F64)

    def raw(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.linear(x)


class LinearGenerator(Generator):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, dtype=F64)

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.linear(z)


class LinearJoint(nn.Module):
    """D(x, z) = w . [x, z] + b."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(D + M, 1, dtype=F64)

    def forward(self, x: Tensor, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.linear(torch.cat([x, z], dim=1))


def affine(owner: object, v: Tensor) -> Tensor:
    """``owner``'s linear map written out, so that the oracle shares no code path with the game
    (``owner`` is an nn.Linear or one of the tiny networks above)."""
    layer = owner if isinstance(owner, nn.Linear) else getattr(owner, "linear", None)
    assert isinstance(layer, nn.Linear)
    return v @ layer.weight.detach().T + layer.bias.detach()


def log_sigmoid(t: Tensor) -> Tensor:
    return -torch.log1p(torch.exp(-t))


def data(seed: int, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# VAE ---------------------------------------------------------------------------------------------
def vae_play(loss: str, reduction: str, **options: float) -> VAEPlay:
    torch.manual_seed(0)
    trunk = LinearEncoder(GaussianPrior(2 * M), D, 2 * M)
    encoder = GaussianEncoder(GaussianPrior(M), trunk)
    parts = GameParts(
        {"encoder": encoder, "generator": LinearGenerator(M, D)},
        GaussianPrior(M),
        agekit.create("divergence", "gaussian-kl"),
        agekit.create("loss", loss, reduction=reduction),
        agekit.create("loss", "l2"),
    )
    return VAE(**options).bind(parts)


@pytest.mark.parametrize(
    ("loss", "reduction", "options", "weight"),
    [
        ("l1", "mean", {}, float(D)),  # default: a per-element mean scaled to the sum
        ("l2", "sum", {"beta": 0.5}, 1.0),  # a summed loss is used as it is
        ("l2", "mean", {"beta": 4.0, "data_weight": 3.0}, 3.0),
    ],
)
def test_vae_loss_is_the_negative_elbo(
    loss: str, reduction: str, options: dict[str, float], weight: float
) -> None:
    play = vae_play(loss, reduction, **options)
    x, eps = data(1, B, D), data(2, B, M)
    out = play.losses(x, eps)

    raw = affine(play.encoder.trunk, x)
    mu, log_var = raw[:, :M], raw[:, M:]
    z = mu + torch.exp(log_var / 2) * eps
    error = x - affine(play.generator, z)
    per_sample = error.abs() if loss == "l1" else error**2
    data_rec = per_sample.sum(1).mean() if reduction == "sum" else per_sample.mean()
    kl = (0.5 * (mu**2 + torch.exp(log_var) - 1 - log_var)).sum(1).mean()
    beta = options.get("beta", 1.0)

    torch.testing.assert_close(out.terms["data_rec"].detach(), data_rec)
    torch.testing.assert_close(out.terms["kl"].detach(), kl)
    torch.testing.assert_close(out.loss.detach(), weight * data_rec + beta * kl)


def test_vae_phase_draws_its_noise_from_the_batch_sampler_and_codes_are_the_mean() -> None:
    play = vae_play("l1", "mean")
    x, eps = data(1, B, D), data(2, B, M)
    (phase,) = play.phases()
    assert phase.optimiser == "autoencoder" and phase.repeat == 1
    out = phase.losses(GameBatch(x, None, lambda n: eps[:n]))
    torch.testing.assert_close(out.loss, play.losses(x, eps).loss)
    mu, _ = play.encoder.posterior(x)
    torch.testing.assert_close(play.encoder(x), mu)


def test_vae_refuses_the_sphere_prior_in_one_line() -> None:
    divergence = agekit.create("divergence", "gaussian-kl")
    with pytest.raises(ComponentInputError, match="prior 'gaussian'") as caught:
        VAE().check(SpherePrior(4), divergence)
    assert "\n" not in str(caught.value)
    with pytest.raises(ComponentInputError):
        VAE().networks(agekit.create("backbone", "mlp"), (2,), SpherePrior(4), None)
    VAE().check(GaussianPrior(4), divergence)


def test_vae_refuses_a_euclidean_prior_that_is_not_standard() -> None:
    class Wide(GaussianPrior):
        def variance(self) -> Tensor:
            return torch.full((self.dim,), 4.0, dtype=F64)

    with pytest.raises(ComponentInputError, match="N\\(0, I\\)") as caught:
        VAE().check(Wide(4), agekit.create("divergence", "gaussian-kl"))
    assert "\n" not in str(caught.value)


# AAE ---------------------------------------------------------------------------------------------
def aae_play(prior: Prior, adversarial_weight: float = 1.0) -> AAEPlay:
    torch.manual_seed(0)
    parts = GameParts(
        {
            "encoder": LinearEncoder(prior, D, M),
            "generator": LinearGenerator(M, D),
            "critic": nn.Linear(M, 1, dtype=F64),
        },
        prior,
        agekit.create("divergence", "gaussian-kl"),
        agekit.create("loss", "l2"),
        agekit.create("loss", "l2"),
    )
    return AAE(adversarial_weight=adversarial_weight).bind(parts)


@pytest.mark.parametrize("prior", [GaussianPrior(M), SpherePrior(M)], ids=["gaussian", "sphere"])
def test_aae_losses_by_hand(prior: Prior) -> None:
    play = aae_play(prior, adversarial_weight=0.3)
    x, z = data(1, B, D), prior.sample(B, torch.Generator().manual_seed(2), dtype=F64)
    critic = play.critic
    raw = affine(play.encoder, x)
    codes = raw / raw.norm(dim=1, keepdim=True) if prior.support == "sphere" else raw
    data_rec = ((x - affine(play.generator, codes)) ** 2).mean()
    fool = -log_sigmoid(affine(critic, codes)).mean()

    out = play.autoencoder_step(x)
    torch.testing.assert_close(out.terms["data_rec"].detach(), data_rec)
    torch.testing.assert_close(out.terms["fool"].detach(), fool)
    torch.testing.assert_close(out.loss.detach(), D * data_rec + 0.3 * fool)

    expected = -log_sigmoid(affine(critic, z)).mean() - log_sigmoid(-affine(critic, codes)).mean()
    out = play.critic_step(x, z)
    torch.testing.assert_close(out.loss.detach(), expected)
    # The phases are these steps, the critic's on the batch sampler's prior codes.
    autoencoder, critic_phase = play.phases()
    assert (autoencoder.optimiser, critic_phase.optimiser) == ("autoencoder", "critic")
    batch = GameBatch(x, None, lambda n: z[:n])
    torch.testing.assert_close(critic_phase.losses(batch).loss.detach(), expected)


def test_aae_critic_step_does_not_reach_the_encoder() -> None:
    play = aae_play(GaussianPrior(M))
    play.critic_step(data(1, B, D), data(2, B, M)).loss.backward()
    assert all(p.grad is None for p in play.encoder.parameters())
    assert all(p.grad is not None for p in play.critic.parameters())


# ALI ---------------------------------------------------------------------------------------------
def ali_play(prior: Prior) -> ALIPlay:
    torch.manual_seed(0)
    parts = GameParts(
        {
            "encoder": LinearEncoder(prior, D, M),
            "generator": LinearGenerator(M, D),
            "discriminator": LinearJoint(),
        },
        prior,
        agekit.create("divergence", "gaussian-kl"),
        agekit.create("loss", "l1"),
        agekit.create("loss", "l2"),
    )
    return ALI().bind(parts)


@pytest.mark.parametrize("prior", [GaussianPrior(M), SpherePrior(M)], ids=["gaussian", "sphere"])
def test_ali_losses_by_hand(prior: Prior) -> None:
    play = ali_play(prior)
    x, z = data(1, B, D), prior.sample(B, torch.Generator().manual_seed(2), dtype=F64)
    joint = play.discriminator
    raw = affine(play.encoder, x)
    codes = raw / raw.norm(dim=1, keepdim=True) if prior.support == "sphere" else raw
    fake = affine(play.generator, z)
    real_logits = affine(joint, torch.cat([x, codes], 1))
    fake_logits = affine(joint, torch.cat([fake, z], 1))
    # Dumoulin et al. eq. (1): D maximises log s(D(x, e(x))) + log(1 - s(D(g(z), z))) ...
    d_loss = -log_sigmoid(real_logits).mean() - log_sigmoid(-fake_logits).mean()
    # ... and the players minimise the swapped-label form, as the ALI code's generator_loss.
    g_loss = -log_sigmoid(-real_logits).mean() - log_sigmoid(fake_logits).mean()

    torch.testing.assert_close(play.discriminator_step(x, z).loss.detach(), d_loss)
    torch.testing.assert_close(play.generator_step(x, z).loss.detach(), g_loss)
    first, second = play.phases()
    assert (first.optimiser, second.optimiser) == ("discriminator", "generator")
    batch = GameBatch(x, None, lambda n: z[:n])
    torch.testing.assert_close(first.losses(batch).terms["discriminator"].detach(), d_loss)
    torch.testing.assert_close(second.losses(batch).terms["generator"].detach(), g_loss)


def test_ali_discriminator_step_does_not_reach_the_players() -> None:
    play = ali_play(GaussianPrior(M))
    play.discriminator_step(data(1, B, D), data(2, B, M)).loss.backward()
    players = [*play.encoder.parameters(), *play.generator.parameters()]
    assert all(p.grad is None for p in players)


def test_joint_discriminator_scores_each_pair_on_its_own_without_dropout() -> None:
    torch.manual_seed(0)
    trunk = LinearEncoder(GaussianPrior(4), D, 4)
    joint = JointDiscriminator(trunk, 4, M, width=8, depth=2, dropout=0.0).to(F64)
    x, z = data(1, B, D), data(2, B, M)
    together = joint(x, z)
    assert together.shape == (B,)
    torch.testing.assert_close(together[:2], joint(x[:2], z[:2]))


# All three games on the built-in backbones -------------------------------------------------------
GAMES = ("vae", "aae", "ali")
SMALL: dict[str, dict[str, object]] = {
    "vae": {},
    "aae": {"critic_width": 16},
    "ali": {"feature_width": 8, "joint_width": 16},
}
BACKBONES = {
    "dcgan": ({"width": 4}, (1, 32, 32)),  # agekit's MNIST: 28 px digits padded to 32 px
    "mlp": ({"hidden": 16, "depth": 2}, (2,)),
}


def test_the_games_are_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "game", "--plain", "--check"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    for name in GAMES:
        assert rows[name][1] == "game" and rows[name][-1] == "ok", rows.get(name)


def drive(
    game: Game,
    networks: Mapping[str, nn.Module],
    play: Play,
    batches: list[Tensor],
    sample_z: Callable[[int], Tensor],
    lr: float = 1e-3,
) -> list[dict[str, float]]:
    """The trainer's loop over a play, as its contract describes it: one Adam per optimiser; per
    phase and repetition, only the phase's networks learn."""
    optimisers = {
        name: torch.optim.Adam(
            [p for net in nets for p in networks[net].parameters()], lr=lr, betas=(0.5, 0.999)
        )
        for name, nets in game.optimisers().items()
    }
    records = []
    for x in batches:
        record: dict[str, float] = {}
        for phase in play.phases():
            for _ in range(phase.repeat):
                for name, net in networks.items():
                    net.requires_grad_(name in game.optimisers()[phase.optimiser])
                out = phase.losses(GameBatch(x, None, sample_z))
                assert all(bool(torch.isfinite(t).all()) for t in [out.loss, *out.terms.values()])
                optimisers[phase.optimiser].zero_grad()
                out.loss.backward()
                optimisers[phase.optimiser].step()
                record.update({k: float(v.detach()) for k, v in out.terms.items()})
        play.after_iteration(record, 1.0)
        records.append(record)
    return records


def build(
    name: str, backbone: str, prior: Prior, data_loss: str = "l1"
) -> tuple[Game, dict[str, nn.Module], Play]:
    torch.manual_seed(0)
    game = agekit.create("game", name, **SMALL[name])
    options, shape = BACKBONES[backbone]
    networks = game.networks(agekit.create("backbone", backbone, **options), shape, prior, None)
    parts = GameParts(
        networks,
        prior,
        agekit.create("divergence", "gaussian-kl"),
        agekit.create("loss", data_loss),
        agekit.create("loss", "l2"),
    )
    return game, networks, game.bind(parts)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize(
    ("name", "prior_name"),
    [("vae", "gaussian"), ("aae", "gaussian"), ("aae", "sphere"), ("ali", "sphere")],
)
def test_networks_build_and_one_iteration_trains_every_network(
    name: str, prior_name: str, backbone: str
) -> None:
    prior = agekit.create("prior", prior_name, dim=4)
    game, networks, play = build(name, backbone, prior)
    shape = BACKBONES[backbone][1]
    assert {"encoder", "generator"} <= set(networks)
    assert not set(networks) & RESERVED_NETWORK_NAMES
    assert isinstance(networks["encoder"], Encoder)
    assert isinstance(networks["generator"], Generator)
    # Every network learns in exactly one optimiser.
    owned = [net for nets in game.optimisers().values() for net in nets]
    assert sorted(owned) == sorted(networks)
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(1))
    codes = networks["encoder"](x)
    assert codes.shape == (8, 4)
    prior.check_support(codes.detach())
    assert networks["generator"](codes).shape == (8, *shape)
    before = {k: [p.detach().clone() for p in v.parameters()] for k, v in networks.items()}
    drive(game, networks, play, [x], lambda n: prior.sample(n))
    for key, net in networks.items():
        changed = [
            not torch.equal(a, b) for a, b in zip(before[key], net.parameters(), strict=True)
        ]
        assert any(changed), f"{name}: {key} did not learn"


def test_vae_steps_reduce_its_loss_on_a_tiny_problem() -> None:
    prior = GaussianPrior(2)
    # l2: at the default weight its term is the sum of squared errors (a Gaussian decoder).
    game, networks, play = build("vae", "mlp", prior, data_loss="l2")
    assert isinstance(play, VAEPlay)
    stream = torch.Generator().manual_seed(3)
    mixing = torch.tensor([[3.0, 1.5], [-1.5, 3.0]])
    batches = [torch.randn(64, 2, generator=stream) @ mixing for _ in range(100)]
    held, noise = batches[0], torch.randn(64, 2, generator=stream)
    with torch.no_grad():
        start = float(play.losses(held, noise).loss)
    drive(game, networks, play, batches, lambda n: torch.randn(n, 2, generator=stream), lr=1e-2)
    with torch.no_grad():
        end = float(play.losses(held, noise).loss)
    assert end < 0.5 * start, (start, end)  # measured: about 20 -> 4.6


def test_options_are_checked_when_the_game_is_configured() -> None:
    refused: list[tuple[str, str, float]] = [
        ("vae", "beta", -1.0),
        ("aae", "critic_width", 0),
        ("ali", "dropout", 1.0),
    ]
    for name, option, value in refused:
        with pytest.raises(ComponentOptionsError, match=option):
            agekit.create("game", name, **{option: value})
    assert isinstance(agekit.create("game", "ali"), ALI)
    assert isinstance(agekit.create("game", "aae"), AAE)
