"""Adversarially learned inference (Dumoulin et al., ICLR 2017), the same game as the
bidirectional GAN (Donahue et al., ICLR 2017); registered as ``ali``.

A joint discriminator D(x, z) tells the encoder's pairs (x, e(x)), x from the data, from the
generator's pairs (g(z), z), z from the prior. Two updates per iteration:

    discriminator  BCE(D(x, e(x)), 1) + BCE(D(g(z), z), 0)      e(x), g(z) detached
    generator      BCE(D(x, e(x)), 0) + BCE(D(g(z), z), 1)      (encoder and generator)

with BCE(l, 1) = softplus(-l), BCE(l, 0) = softplus(l), each a batch mean: the losses of the ALI
code (``ALI.compute_losses`` in IshmaelBelghazi/ALI, ``ali/bricks.py``), whose generator loss is
the discriminator's with the labels swapped (the non-saturating form). There is no
reconstruction term: the encoder learns to invert g only through D.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from agekit.components import Backbone, Encoder, Generator, Prior
from agekit.games.base import Game, GameBatch, GameParts, Phase, Play, StepLosses
from agekit.games.common import (
    build_pair,
    check_positive,
    critic_loss,
    feature_encoder,
    fool_loss,
    mlp_critic,
)

__all__ = ["ALI", "ALIPlay", "JointDiscriminator"]


def _leaky_relu() -> nn.Module:
    return nn.LeakyReLU(0.2)


class JointDiscriminator(nn.Module):
    """D(x, z): features of x from ``trunk`` (linear output; a leaky ReLU follows), concatenated
    with z, then an MLP to one logit, as ALI's D(x, z) joins its x and z branches (z enters as
    it is here: ALI's z branch is two more layers, which the joint MLP can absorb)."""

    def __init__(
        self,
        trunk: nn.Module,
        features: int,
        latent_dim: int,
        width: int,
        depth: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.activation = _leaky_relu()
        self.head = mlp_critic(features + latent_dim, width, depth, _leaky_relu, dropout)

    def forward(self, x: Tensor, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """Logits (B,): how likely each pair is (x, e(x)) rather than (g(z), z)."""
        features = self.activation(self.trunk(x, condition))
        return self.head(torch.cat([features, z.to(features.dtype)], dim=1)).reshape(-1)


class ALIPlay(Play):
    """ALI bound to its networks: the discriminator's update, then the encoder's and the
    generator's together."""

    def __init__(self, encoder: Encoder, generator: Generator, discriminator: nn.Module) -> None:
        self.encoder = encoder
        self.generator = generator
        #: (x, z, condition) -> logits (B,) or (B, 1).
        self.discriminator = discriminator

    def phases(self) -> list[Phase]:
        return [
            Phase("discriminator", self._discriminator_phase, label="discriminator"),
            Phase("generator", self._generator_phase, label="generator"),
        ]

    def _discriminator_phase(self, batch: GameBatch) -> StepLosses:
        return self.discriminator_step(batch.x, batch.sample_z(batch.size), batch.condition)

    def _generator_phase(self, batch: GameBatch) -> StepLosses:
        return self.generator_step(batch.x, batch.sample_z(batch.size), batch.condition)

    def _logits(
        self, x: Tensor, codes: Tensor, fake: Tensor, z: Tensor, condition: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """D on the real pairs and the fake pairs, in one batch as the ALI code does: batch-norm
        layers in the trunk then normalise both with the same statistics."""
        pairs_x = torch.cat([x, fake.to(x.dtype)])
        pairs_z = torch.cat([codes, z.to(codes.dtype)])
        both = None if condition is None else torch.cat([condition, condition])
        logits = self.discriminator(pairs_x, pairs_z, both).reshape(-1)
        return logits[: x.shape[0]], logits[x.shape[0] :]

    def discriminator_step(
        self, x: Tensor, z: Tensor, condition: Tensor | None = None
    ) -> StepLosses:
        # Encoder and generator do not learn here; without their graphs the step costs less.
        with torch.no_grad():
            codes = self.encoder(x, condition)
            fake = self.generator(z, condition)
        real_logits, fake_logits = self._logits(x, codes, fake, z, condition)
        loss = critic_loss(real_logits, fake_logits)
        return StepLosses(loss, {"discriminator": loss})

    def generator_step(self, x: Tensor, z: Tensor, condition: Tensor | None = None) -> StepLosses:
        codes = self.encoder(x, condition)
        fake = self.generator(z, condition)
        real_logits, fake_logits = self._logits(x, codes, fake, z, condition)
        loss = fool_loss(real_logits, fake_logits)
        return StepLosses(loss, {"generator": loss})


class ALI(Game):
    """ALI / BiGAN with a deterministic encoder (BiGAN's; ALI's is Gaussian, see docs/games.md).

    Options:
        feature_width: outputs of D's x trunk (the configured backbone's encoder built at this
            latent size); 512, the width of ALI's CIFAR-10 D(x).
        joint_width, joint_depth: D's joint MLP on [features, z] (leaky ReLU 0.2); ALI's
            CIFAR-10 D(x, z) has two layers of 1024.
        dropout: dropout before each of the joint MLP's linear layers; 0.2, the rate ALI applies
            to its discriminator's inputs (0 turns it off).

    Both priors work: z and e(x) lie on the prior's support either way.
    """

    term_labels: ClassVar[Mapping[str, str]] = {"discriminator": "D BCE", "generator": "E,G BCE"}
    uses_divergence = False

    def __init__(
        self,
        feature_width: int = 512,
        joint_width: int = 1024,
        joint_depth: int = 2,
        dropout: float = 0.2,
    ) -> None:
        check_positive("feature_width", feature_width)
        check_positive("joint_width", joint_width)
        check_positive("joint_depth", joint_depth)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.feature_width = feature_width
        self.joint_width = joint_width
        self.joint_depth = joint_depth
        self.dropout = float(dropout)

    def networks(
        self,
        backbone: Backbone,
        data_shape: Sequence[int],
        prior: Prior,
        condition_shape: Sequence[int] | None,
    ) -> dict[str, nn.Module]:
        pair = build_pair(backbone, data_shape, prior, condition_shape)
        trunk = feature_encoder(backbone, data_shape, self.feature_width, condition_shape)
        discriminator = JointDiscriminator(
            trunk, self.feature_width, prior.dim, self.joint_width, self.joint_depth, self.dropout
        )
        return {
            "encoder": pair.encoder,
            "generator": pair.generator,
            "discriminator": discriminator,
        }

    def optimisers(self) -> dict[str, tuple[str, ...]]:
        # The ALI code's "generator parameters" are the encoder's and the decoder's.
        return {"discriminator": ("discriminator",), "generator": ("encoder", "generator")}

    def bind(self, parts: GameParts) -> ALIPlay:
        return ALIPlay(parts.encoder, parts.generator, parts.networks["discriminator"])
