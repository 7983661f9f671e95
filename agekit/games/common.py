"""What the built-in ``vae``, ``aae`` and ``ali`` games share: building a backbone's networks at a
latent size other than the prior's, the scale of the data term, MLP critics, and the logistic
(binary cross-entropy) losses of a critic and of the players it judges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from agekit.components import Backbone, ReconstructionLoss
from agekit.games.base import build_pair
from agekit.priors.standard import GaussianPrior

__all__ = [
    "build_pair",
    "check_positive",
    "critic_loss",
    "feature_encoder",
    "fool_loss",
    "mlp_critic",
    "resolve_data_weight",
]


def feature_encoder(
    backbone: Backbone,
    data_shape: Sequence[int],
    width: int,
    condition_shape: Sequence[int] | None,
) -> nn.Module:
    """The backbone's encoder with ``width`` raw outputs. It is built for a Gaussian prior of that
    width, whose projection is the identity, so its forward gives the trunk's last linear layer
    untouched (a sphere prior would normalise it)."""
    return build_pair(backbone, data_shape, GaussianPrior(width), condition_shape).encoder


def resolve_data_weight(weight: float | None, loss: ReconstructionLoss, x: Tensor) -> float:
    """The data term's weight: ``weight`` when given; None is the per-sample SUM's scale.

    agekit's element-wise losses (``l1``, ``l2``) average over a sample's elements by default
    (``reduction = "mean"``), the AGE reference code's scale. A likelihood, and so the ELBO a VAE
    maximises, sums over them: with ``l1`` the sum is the negative log-likelihood of a Laplace
    decoder of scale 1, with ``l2`` twice that of a Gaussian decoder of variance 1/2, up to
    constants. At the mean's scale the data term is D times too weak against a KL summed over
    the M code dimensions (D = 1024 for 32 px MNIST), and the posterior collapses onto the prior.
    So None multiplies a mean-reduced loss by D; a loss that already sums, or has no per-element
    reduction (``cosine``), is used as it is.
    """
    if weight is not None:
        return weight
    if getattr(loss, "reduction", None) == "mean":
        return float(x[0].numel())
    return 1.0


def check_positive(name: str, value: int) -> None:
    """Network sizes come from options: refuse a non-positive one when the game is configured."""
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")


def mlp_critic(
    n_in: int, width: int, depth: int, activation: Callable[[], nn.Module], dropout: float = 0.0
) -> nn.Sequential:
    """``n_in`` -> (dropout, linear ``width``, activation) x ``depth`` -> dropout, linear 1.

    Dropout comes before every linear layer, the input's included, as ALI applies it to its
    discriminator's inputs and hidden layers; 0 leaves it out.
    """
    layers: list[nn.Module] = []
    size = n_in
    for _ in range(depth):
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(size, width), activation()]
        size = width
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(size, 1))
    return nn.Sequential(*layers)


def critic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The critic's binary cross-entropy: real labelled 1, fake 0, each side a batch mean.

    ``softplus(-l) = -log sigmoid(l)`` and ``softplus(l) = -log(1 - sigmoid(l))``, written this
    way (as the ALI code does) because they stay finite for any logit.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def fool_loss(real_logits: Tensor | None, fake_logits: Tensor) -> Tensor:
    """The players' side with the labels swapped: fake labelled 1 (and real 0 when given).

    This is the non-saturating form (Goodfellow et al. 2014, section 3): minimising
    ``-log D(fake)`` instead of ``log(1 - D(fake))`` keeps the gradient alive when the critic
    wins early.
    """
    loss = F.softplus(-fake_logits).mean()
    if real_logits is not None:
        loss = loss + F.softplus(real_logits).mean()
    return loss
