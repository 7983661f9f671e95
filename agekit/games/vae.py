"""The variational autoencoder (Kingma & Welling, ICLR 2014), registered as ``vae``.

One update per iteration, of the encoder and the generator together, on the negative ELBO:

    loss = w * L_X(x, g(mu + sigma * eps)) + beta * KL(N(mu, sigma^2) || N(0, I))
    KL   = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)        (summed over the M dims)

where (mu, log sigma^2) are the encoder's 2M outputs, eps ~ N(0, I) is drawn through the prior's
sampler (the trainer's seeded stream), L_X is the configured data loss and w its weight (None: the
per-sample sum's scale, see :func:`agekit.games.common.resolve_data_weight`). Both terms are batch
means of per-sample values. The encoder's forward gives mu, the posterior mean: evaluation,
sampling and reconstruction use it as any encoder's code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from agekit.components import (
    Backbone,
    ComponentInputError,
    Divergence,
    Encoder,
    Generator,
    Prior,
    ReconstructionLoss,
)
from agekit.games.base import Game, GameBatch, GameParts, Phase, Play, StepLosses, refuse_sphere
from agekit.games.common import build_pair, feature_encoder, resolve_data_weight

__all__ = ["VAE", "GaussianEncoder", "VAEPlay", "gaussian_kl"]


class GaussianEncoder(Encoder):
    """A diagonal Gaussian posterior q(z | x) = N(mu, diag(exp(log_var))) over R^M.

    ``trunk`` gives 2M raw outputs: mu, then log sigma^2 (the parameterisation of Kingma & Welling's
    appendix C.2, which keeps sigma positive without a constraint). ``forward`` is the mean mu.
    """

    def __init__(self, prior: Prior, trunk: nn.Module) -> None:
        super().__init__(prior)
        self.trunk = trunk
        self.latent_dim = prior.dim

    def posterior(self, x: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(mu, log sigma^2), each (B, M)."""
        out = self.trunk(x, condition)
        if out.ndim != 2 or out.shape[1] != 2 * self.latent_dim:
            raise ComponentInputError(
                f"{type(self).__name__}: the trunk gave shape {tuple(out.shape)}, expected "
                f"(batch, {2 * self.latent_dim}): a mean and a log-variance per code dimension"
            )
        return out[:, : self.latent_dim], out[:, self.latent_dim :]

    def raw(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.posterior(x, condition)[0]


def gaussian_kl(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mean, diag(exp(log_var))) || N(0, I)) in nats, summed over dimensions, batch mean."""
    return 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(dim=1).mean()


class VAEPlay(Play):
    """The VAE bound to its networks: one update of encoder and generator together."""

    def __init__(
        self,
        encoder: GaussianEncoder,
        generator: Generator,
        data_loss: ReconstructionLoss,
        beta: float = 1.0,
        data_weight: float | None = None,
    ) -> None:
        self.encoder = encoder
        self.generator = generator
        self.data_loss = data_loss
        self.beta = beta
        self.data_weight = data_weight

    def phases(self) -> list[Phase]:
        return [Phase("autoencoder", self._phase, label="data_rec, kl")]

    def _phase(self, batch: GameBatch) -> StepLosses:
        return self.losses(batch.x, batch.sample_z(batch.size), batch.condition)

    def losses(self, x: Tensor, noise: Tensor, condition: Tensor | None = None) -> StepLosses:
        """The negative ELBO of batch ``x`` with standard normal ``noise`` (B, M) for the
        reparameterised sample (Kingma & Welling, section 2.4)."""
        mean, log_var = self.encoder.posterior(x, condition)
        z = mean + torch.exp(0.5 * log_var) * noise.to(mean.dtype)
        data_rec = self.data_loss(x, self.generator(z, condition))
        kl = gaussian_kl(mean, log_var)
        weight = resolve_data_weight(self.data_weight, self.data_loss, x)
        return StepLosses(weight * data_rec + self.beta * kl, {"data_rec": data_rec, "kl": kl})


class VAE(Game):
    """The VAE of Kingma & Welling (2014); ``beta`` != 1 is the beta-VAE (Higgins et al. 2017).

    Options:
        beta: weight of the KL term (1: the ELBO).
        data_weight: weight of the configured data loss; None (default) scales a per-element
            mean to the per-sample sum, the likelihood's scale (see ``docs/games.md``).

    It needs the standard Gaussian prior: the KL is in closed form against N(0, I), and the
    reparameterisation's noise comes from the prior's sampler.
    """

    term_labels: ClassVar[Mapping[str, str]] = {"data_rec": "L_X", "kl": "KL(q||p)"}
    uses_divergence = False

    def __init__(self, beta: float = 1.0, data_weight: float | None = None) -> None:
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if data_weight is not None and not data_weight > 0:
            raise ValueError(f"data_weight must be positive or None, got {data_weight}")
        self.beta = float(beta)
        self.data_weight = None if data_weight is None else float(data_weight)

    def check(self, prior: Prior, divergence: Divergence) -> None:
        del divergence  # the KL is the game's own; the configured divergence is not used
        refuse_sphere("vae", prior)
        if not (bool((prior.mean() == 0).all()) and bool((prior.variance() == 1).all())):
            raise ComponentInputError(
                f"game 'vae' has its KL in closed form against N(0, I) only; prior "
                f"{type(prior).__name__} has another mean or variance (use prior 'gaussian')"
            )

    def networks(
        self,
        backbone: Backbone,
        data_shape: Sequence[int],
        prior: Prior,
        condition_shape: Sequence[int] | None,
    ) -> dict[str, nn.Module]:
        # A sphere prior would have built an encoder that normalises mu (check() refuses it too,
        # but networks can be built without a check).
        refuse_sphere("vae", prior)
        trunk = feature_encoder(backbone, data_shape, 2 * prior.dim, condition_shape)
        generator = build_pair(backbone, data_shape, prior, condition_shape).generator
        return {"encoder": GaussianEncoder(prior, trunk), "generator": generator}

    def optimisers(self) -> dict[str, tuple[str, ...]]:
        return {"autoencoder": ("encoder", "generator")}

    def bind(self, parts: GameParts) -> VAEPlay:
        encoder = parts.networks["encoder"]
        if not isinstance(encoder, GaussianEncoder):
            raise ComponentInputError(
                f"game 'vae' needs the GaussianEncoder its networks() builds, got "
                f"{type(encoder).__name__}"
            )
        return VAEPlay(encoder, parts.generator, parts.data_loss, self.beta, self.data_weight)
