"""The adversarial autoencoder (Makhzani et al., ICLR workshop 2016), registered as ``aae``.

A deterministic encoder e, a generator g and a code critic c (an MLP on codes, one logit). Two
updates per iteration:

    autoencoder  w * L_X(x, g(e(x))) + a * BCE(c(e(x)), 1)                   (encoder, generator)
    critic       BCE(c(z), 1) + BCE(c(e(x)), 0),  z ~ prior, e(x) detached  (critic)

where BCE(l, 1) = softplus(-l) and BCE(l, 0) = softplus(l), each a batch mean, L_X is the
configured data loss with weight w (None: the per-sample sum's scale, as the ``vae`` game) and
a is ``adversarial_weight``. The encoder's codes already lie on the prior's support (its forward
projects them), so the critic compares points of the same space for either prior.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from agekit.components import Backbone, Encoder, Generator, Prior, ReconstructionLoss
from agekit.games.base import Game, GameBatch, GameParts, Phase, Play, StepLosses
from agekit.games.common import (
    build_pair,
    check_positive,
    critic_loss,
    fool_loss,
    mlp_critic,
    resolve_data_weight,
)

__all__ = ["AAE", "AAEPlay"]


class AAEPlay(Play):
    """The AAE bound to its networks: the autoencoder's update, then the critic's."""

    def __init__(
        self,
        encoder: Encoder,
        generator: Generator,
        critic: nn.Module,
        data_loss: ReconstructionLoss,
        adversarial_weight: float = 1.0,
        data_weight: float | None = None,
    ) -> None:
        self.encoder = encoder
        self.generator = generator
        #: codes (B, M) -> logits (B,) or (B, 1): how likely each code is a prior sample.
        self.critic = critic
        self.data_loss = data_loss
        self.adversarial_weight = adversarial_weight
        self.data_weight = data_weight

    def phases(self) -> list[Phase]:
        return [
            Phase("autoencoder", self._autoencoder_phase, label="data_rec, fool"),
            Phase("critic", self._critic_phase, label="critic"),
        ]

    def _autoencoder_phase(self, batch: GameBatch) -> StepLosses:
        return self.autoencoder_step(batch.x, batch.condition)

    def _critic_phase(self, batch: GameBatch) -> StepLosses:
        return self.critic_step(batch.x, batch.sample_z(batch.size), batch.condition)

    def _logits(self, codes: Tensor) -> Tensor:
        return self.critic(codes).reshape(-1)

    def autoencoder_step(self, x: Tensor, condition: Tensor | None = None) -> StepLosses:
        """Reconstruct x through its code, and make the code pass the critic for a prior sample
        (the reconstruction and regularisation phases of Makhzani et al. section 2, in one
        update)."""
        codes = self.encoder(x, condition)
        data_rec = self.data_loss(x, self.generator(codes, condition))
        fool = fool_loss(None, self._logits(codes))
        weight = resolve_data_weight(self.data_weight, self.data_loss, x)
        loss = weight * data_rec + self.adversarial_weight * fool
        return StepLosses(loss, {"data_rec": data_rec, "fool": fool})

    def critic_step(self, x: Tensor, z: Tensor, condition: Tensor | None = None) -> StepLosses:
        """Tell prior samples ``z`` from the codes of ``x``."""
        # The encoder does not learn here; without a graph through it the step costs less.
        with torch.no_grad():
            codes = self.encoder(x, condition)
        logits = self._logits(torch.cat([z.to(codes.dtype), codes]))
        critic = critic_loss(logits[: z.shape[0]], logits[z.shape[0] :])
        return StepLosses(critic, {"critic": critic})


class AAE(Game):
    """The adversarial autoencoder of Makhzani et al. (2016), with a deterministic encoder.

    Options:
        adversarial_weight: weight of the encoder's fool-the-critic term (1: the paper's).
        data_weight: weight of the configured data loss; None (default) scales a per-element
            mean to the per-sample sum, as the ``vae`` game does.
        critic_width, critic_depth: the critic's hidden layers (ReLU); the paper's MNIST critic
            has two of 1000 units.

    Both priors work: the critic sees codes on the prior's support and prior samples.
    """

    term_labels: ClassVar[Mapping[str, str]] = {
        "data_rec": "L_X",
        "fool": "fool critic",
        "critic": "critic BCE",
    }
    uses_divergence = False

    def __init__(
        self,
        adversarial_weight: float = 1.0,
        data_weight: float | None = None,
        critic_width: int = 1000,
        critic_depth: int = 2,
    ) -> None:
        if not adversarial_weight >= 0:
            raise ValueError(f"adversarial_weight must be >= 0, got {adversarial_weight}")
        if data_weight is not None and not data_weight > 0:
            raise ValueError(f"data_weight must be positive or None, got {data_weight}")
        check_positive("critic_width", critic_width)
        check_positive("critic_depth", critic_depth)
        self.adversarial_weight = float(adversarial_weight)
        self.data_weight = None if data_weight is None else float(data_weight)
        self.critic_width = critic_width
        self.critic_depth = critic_depth

    def networks(
        self,
        backbone: Backbone,
        data_shape: Sequence[int],
        prior: Prior,
        condition_shape: Sequence[int] | None,
    ) -> dict[str, nn.Module]:
        pair = build_pair(backbone, data_shape, prior, condition_shape)
        critic = mlp_critic(prior.dim, self.critic_width, self.critic_depth, nn.ReLU)
        return {"encoder": pair.encoder, "generator": pair.generator, "critic": critic}

    def optimisers(self) -> dict[str, tuple[str, ...]]:
        return {"autoencoder": ("encoder", "generator"), "critic": ("critic",)}

    def bind(self, parts: GameParts) -> AAEPlay:
        return AAEPlay(
            parts.encoder,
            parts.generator,
            parts.networks["critic"],
            parts.data_loss,
            self.adversarial_weight,
            self.data_weight,
        )
