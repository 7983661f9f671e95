"""The AGE game: the two objectives of the paper (eq. 5 and 6), and nothing else.

Pure: given an encoder, a generator, a prior, a divergence and two reconstruction losses, it turns
batches into losses. It owns no optimiser, no device and no loop (that is the trainer's job), so
the same objectives serve the trainer, the tests and any custom loop a researcher writes.

Signs, as the trainer minimises every loss it is given:
    generator loss = D(e(g(z))) + lambda * L_Z(z, e(g(z)))      [+ w * L_X(x, g(e(x)))]
    encoder loss   = D(e(x)) - a * D(e(g(z))) + mu * L_X(x, g(e(x)))  [+ w * L_Z(z, e(g(z)))]
where a is the adversary weight (1 in the paper; the adaptive safeguard moves it), and generated
images are detached in the encoder step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from agekit.components import Divergence, Encoder, Generator, Prior, ReconstructionLoss
from agekit.config import GameConfig
from agekit.games.base import Game, GameBatch, GameParts, Phase, Play, StepLosses
from agekit.util.filters import low_pass

#: The game's terms as the training log names them (``metrics.jsonl`` keys -> labels), in the
#: order progress lines and study figures show them. The keys say ``kl`` after the paper's
#: divergence whatever divergence is configured, so that every run folder's log reads alike; the
#: labels name the divergence D of the configuration.
TERM_LABELS: dict[str, str] = {
    "kl_real": "D(e(x))",
    "kl_fake": "D(e(g(z)))",
    "data_rec": "L_X",
    "latent_rec": "L_Z",
}


def _config_default(name: str) -> Any:
    """The default of ``[game] name`` in a configuration file."""
    return GameConfig.model_fields[name].default


@dataclass(frozen=True)
class GameWeights:
    """The weights of the two objectives; each field means what ``[game]`` of the same name does.

    The defaults are :class:`agekit.config.GameConfig`'s, so an :class:`AGEGame` built in Python
    without weights plays the game of a configuration file whose ``[game]`` table is empty.
    """

    latent_weight: float = _config_default("latent_weight")  # lambda
    data_weight: float = _config_default("data_weight")  # mu
    generator_data_weight: float = _config_default("generator_data_weight")
    encoder_latent_weight: float = _config_default("encoder_latent_weight")
    #: The encoder's reward for D(e(g(z))) is min(D, fake_margin); None (or inf) leaves it uncapped.
    fake_margin: float | None = _config_default("fake_margin")


class AGEGame(Play):
    """The AGE game bound to its networks: the encoder's and the generator's updates."""

    def __init__(
        self,
        encoder: Encoder,
        generator: Generator,
        prior: Prior,
        divergence: Divergence,
        data_loss: ReconstructionLoss,
        latent_loss: ReconstructionLoss,
        weights: GameWeights | None = None,
        gather: Callable[[Tensor], Tensor] | None = None,
        latent_filter: Callable[[Tensor], Tensor] | None = None,
        *,
        trained_encoder: nn.Module | None = None,
        trained_generator: nn.Module | None = None,
        adversary: AdaptiveAdversaryWeight | None = None,
        gen_steps_per_encoder_step: int = 2,
    ) -> None:
        self.encoder = encoder
        self.generator = generator
        #: How each step calls the network it updates (the encoder in the encoder step, the
        #: generator in the generator step); the other network is called as ``encoder`` or
        #: ``generator``. The same modules unless given: a multi-process trainer passes its
        #: DistributedDataParallel wrappers here, whose backward averages gradients over processes,
        #: while the frozen network is called bare (DDP must not expect gradients for parameters
        #: that are switched off).
        self.trained_encoder: nn.Module = encoder if trained_encoder is None else trained_encoder
        self.trained_generator: nn.Module = (
            generator if trained_generator is None else trained_generator
        )
        self.prior = prior
        self.divergence = divergence
        self.data_loss = data_loss
        self.latent_loss = latent_loss
        self.weights = weights or GameWeights()
        #: Applied to codes before the divergence only (reconstruction losses stay per sample):
        #: a multi-process trainer passes a gradient-carrying all-gather so that the divergence, a
        #: batch statistic, sees the global batch. None is the identity.
        self.gather = gather
        #: Applied to g(z) before L_Z only (the divergence still sees g(z) as it is): with a
        #: low-pass here the generator cannot satisfy lambda L_Z by hiding z in fine structure.
        self.latent_filter = latent_filter
        #: The adaptive weight on D(e(g(z))) in the encoder step; None keeps it at 1.
        self.adversary = adversary
        self.gen_steps_per_encoder_step = gen_steps_per_encoder_step

    def phases(self) -> list[Phase]:
        """An encoder update, then ``gen_steps_per_encoder_step`` generator updates, each on
        fresh codes; the generator's data term sees the iteration's real batch."""
        return [
            Phase("encoder", self._encoder_phase, label="kl_fake_enc, kl_real"),
            Phase("generator", self._generator_phase, self.gen_steps_per_encoder_step, "kl_fake"),
        ]

    def _encoder_phase(self, batch: GameBatch) -> StepLosses:
        return self.encoder_step(
            batch.x,
            batch.sample_z(batch.size),
            condition=batch.condition,
            adversary_weight=self.adversary_weight,
        )

    def _generator_phase(self, batch: GameBatch) -> StepLosses:
        real = batch.x if self.weights.generator_data_weight > 0 else None
        return self.generator_step(batch.sample_z(batch.size), real, condition=batch.condition)

    @property
    def adversary_weight(self) -> float:
        return self.adversary.weight if self.adversary is not None else 1.0

    def after_iteration(self, record: dict[str, float], lr_ratio: float) -> None:
        record["adversary_weight"] = self.adversary_weight
        if self.adversary is not None:
            self.adversary.update(record["kl_real"], record["kl_fake_enc"], lr_ratio)

    def state_dict(self) -> dict[str, Any]:
        return {"adversary_weight": self.adversary.weight if self.adversary else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.adversary is not None and state.get("adversary_weight") is not None:
            self.adversary.weight = float(state["adversary_weight"])

    def with_networks(
        self,
        encoder: Encoder,
        generator: Generator,
        trained_encoder: nn.Module | None = None,
        trained_generator: nn.Module | None = None,
        gather: Callable[[Tensor], Tensor] | None = None,
    ) -> AGEGame:
        """The same game (prior, divergence, losses, weights, filter) played by other modules: a
        trainer's wrapped networks, or copies of them. ``gather`` replaces this game's."""
        return AGEGame(
            encoder,
            generator,
            self.prior,
            self.divergence,
            self.data_loss,
            self.latent_loss,
            self.weights,
            gather=gather,
            latent_filter=self.latent_filter,
            trained_encoder=trained_encoder,
            trained_generator=trained_generator,
            adversary=self.adversary,
            gen_steps_per_encoder_step=self.gen_steps_per_encoder_step,
        )

    def _divergence(self, codes: Tensor) -> Tensor:
        if self.gather is not None:
            codes = self.gather(codes)
        return self.divergence(codes, self.prior)

    def generator_step(
        self, z: Tensor, x: Tensor | None = None, condition: Tensor | None = None
    ) -> StepLosses:
        """Eq. (5): the generator pulls e(g(z)) onto the prior and keeps z recoverable."""
        w = self.weights
        encoder, generator = self.encoder, self.trained_generator
        fake = generator(z, condition)
        fake_codes = encoder(fake, condition)
        kl_fake = self._divergence(fake_codes)
        if self.latent_filter is not None:
            latent_rec = self.latent_loss(z, encoder(self.latent_filter(fake), condition))
        else:
            latent_rec = self.latent_loss(z, fake_codes)
        loss = kl_fake + w.latent_weight * latent_rec
        terms = {"kl_fake": kl_fake, "latent_rec": latent_rec}
        if w.generator_data_weight > 0:
            if x is None:
                raise ValueError("generator_data_weight > 0 needs a real batch x")
            data_rec = self.data_loss(x, generator(encoder(x, condition), condition))
            loss = loss + w.generator_data_weight * data_rec
            terms["data_rec"] = data_rec
        return StepLosses(loss, terms)

    def encoder_step(
        self,
        x: Tensor,
        z: Tensor,
        condition: Tensor | None = None,
        fake_condition: Tensor | None = None,
        adversary_weight: float = 1.0,
    ) -> StepLosses:
        """Eq. (6): the encoder spreads real codes over the prior, pushes generated codes away
        from it, and keeps x recoverable from e(x)."""
        w = self.weights
        encoder, generator = self.trained_encoder, self.generator
        with torch.no_grad():
            fake = generator(z, fake_condition if fake_condition is not None else condition)
        fake_codes = encoder(fake, fake_condition if fake_condition is not None else condition)
        real_codes = encoder(x, condition)
        kl_fake = self._divergence(fake_codes)
        kl_real = self._divergence(real_codes)
        adversarial = kl_fake if w.fake_margin is None else torch.clamp(kl_fake, max=w.fake_margin)
        loss = kl_real - adversary_weight * adversarial
        if w.data_weight > 0:
            data_rec = self.data_loss(x, generator(real_codes, condition))
            loss = loss + w.data_weight * data_rec
        else:  # still logged, but it must not put the generator into the encoder's graph
            with torch.no_grad():
                data_rec = self.data_loss(x, generator(real_codes, condition))
        terms = {"kl_real": kl_real, "kl_fake_enc": kl_fake, "data_rec": data_rec}
        if w.encoder_latent_weight > 0:
            latent_rec = self.latent_loss(z, fake_codes)
            loss = loss + w.encoder_latent_weight * latent_rec
            terms["latent_rec_enc"] = latent_rec
        return StepLosses(loss, terms)


class AdaptiveAdversaryWeight:
    """The adaptive weight on D(e(g(z))) in the encoder step, as ``age.py`` on the reference
    code's unmerged ``cAGE`` branch updates it (see :class:`agekit.config.AdaptiveAdversary`).

    The encoder step's ``adversary_weight``. After every iteration it grows by ``increase``;
    then, when either divergence of the iteration is above ``threshold``, it drops by
    ``decrease``, floored at 0; both steps are scaled by the learning rate's ratio to its start.
    An iteration above the threshold therefore nets ``increase - decrease``, as in the branch.
    """

    def __init__(
        self,
        increase: float,
        decrease: float,
        threshold: float,
        initial: float,
        maximum: float | None = None,
    ) -> None:
        self.increase, self.decrease, self.threshold = increase, decrease, threshold
        self.maximum = math.inf if maximum is None else maximum
        self.weight = initial

    def update(self, kl_real: float, kl_fake: float, lr_ratio: float) -> float:
        self.weight = min(self.maximum, self.weight + self.increase * lr_ratio)
        if kl_real > self.threshold or kl_fake > self.threshold:
            self.weight = max(0.0, self.weight - self.decrease * lr_ratio)
        return self.weight


class AGE(Game):
    """The game of the paper (eq. 5 and 6) with agekit's safeguards as options; registered as
    ``age``. Its options are ``[game]``'s own keys (:class:`agekit.config.GameConfig`), and their
    defaults are the same."""

    term_labels = TERM_LABELS

    def __init__(
        self,
        latent_weight: float = _config_default("latent_weight"),
        data_weight: float = _config_default("data_weight"),
        generator_data_weight: float = _config_default("generator_data_weight"),
        encoder_latent_weight: float = _config_default("encoder_latent_weight"),
        gen_steps_per_encoder_step: int = _config_default("gen_steps_per_encoder_step"),
        fake_margin: float = _config_default("fake_margin"),
        latent_filter: Literal["none", "gaussian", "median"] = _config_default("latent_filter"),
        latent_filter_sigma: float = _config_default("latent_filter_sigma"),
        adaptive_adversary: dict[str, float | None] | None = None,
    ) -> None:
        self.weights = GameWeights(
            latent_weight=latent_weight,
            data_weight=data_weight,
            generator_data_weight=generator_data_weight,
            encoder_latent_weight=encoder_latent_weight,
            fake_margin=None if math.isinf(fake_margin) else fake_margin,
        )
        self.gen_steps_per_encoder_step = gen_steps_per_encoder_step
        self.latent_filter = low_pass(latent_filter, latent_filter_sigma)
        #: The adaptive adversary's settings with its threshold resolved (the resolver puts the
        #: divergence's units in), or None.
        self.adaptive_adversary = adaptive_adversary

    def bind(self, parts: GameParts) -> AGEGame:
        adversary = None
        if self.adaptive_adversary is not None:
            settings = self.adaptive_adversary
            threshold = settings.get("threshold")
            if threshold is None:
                raise ValueError(
                    "game.adaptive_adversary needs its threshold resolved in the divergence's "
                    "units (agekit.resolve.Resolver does) before the game is bound"
                )
            adversary = AdaptiveAdversaryWeight(
                increase=float(settings["increase"] or 0.0),
                decrease=float(settings["decrease"] or 0.0),
                threshold=threshold,
                initial=float(settings["initial"] or 0.0),
                maximum=settings.get("maximum"),
            )
        return AGEGame(
            parts.encoder,
            parts.generator,
            parts.prior,
            parts.divergence,
            parts.data_loss,
            parts.latent_loss,
            self.weights,
            gather=parts.gather,
            latent_filter=self.latent_filter,
            adversary=adversary,
            gen_steps_per_encoder_step=self.gen_steps_per_encoder_step,
        )
