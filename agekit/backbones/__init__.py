"""Encoder/generator pairs: DCGAN-style convolutional nets for images, MLPs for vectors.

Helpers shared by the built-in backbones live here; plugins may use them too.
"""

from __future__ import annotations

from torch import Tensor, nn

from agekit.components import ComponentInputError, Prior

__all__ = ["check_latent", "dcgan_init_", "reject_condition"]


def check_latent(latent_dim: int, prior: Prior) -> None:
    """A pair built for one latent size must not be paired with a prior of another."""
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim}")
    if prior.dim != latent_dim:
        raise ValueError(
            f"latent_dim={latent_dim} does not match the prior's dim={prior.dim} ({prior!r})"
        )


def reject_condition(owner: nn.Module, condition: Tensor | None) -> None:
    """Unconditional nets keep the ``condition`` argument but refuse a value, never ignore it."""
    if condition is not None:
        raise ComponentInputError(
            f"{type(owner).__name__} was built without condition_shape and takes no condition"
        )


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al. 2016; also the AGE reference code), in place.

    Conv weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), all biases 0. Use with
    ``net.apply(dcgan_init_)``; seed torch's global generator first for reproducible weights.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
