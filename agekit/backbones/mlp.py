"""Fully connected encoder/generator pairs for vector data (the 2-D toy sets and the like).

encoder    D (+K) -> hidden x depth -> M, then the prior's projection;
generator  M (+K) -> hidden x depth -> D, linear output (toy data is not bounded to [-1, 1]).

``depth`` counts hidden layers; each is Linear [-> BatchNorm1d] -> activation. Weights keep
PyTorch's default (Kaiming-uniform) initialisation: the DCGAN N(0, 0.02) init is tuned for wide
conv stacks and makes small MLPs start with vanishing activations.

With ``condition_shape=(K,)`` both networks take a (B, K) condition that is concatenated to their
input; without it they refuse a condition rather than ignoring it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from agekit.backbones import check_latent, reject_condition
from agekit.components import (
    Backbone,
    ComponentInputError,
    Encoder,
    EncoderGenerator,
    Generator,
    Prior,
)

__all__ = ["MLP", "MLPEncoder", "MLPGenerator"]

Activation = Literal["relu", "leaky_relu", "elu"]


def _activation(name: Activation) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if name == "elu":
        return nn.ELU()
    raise ValueError(f"unknown activation {name!r}; choose relu, leaky_relu or elu")


def mlp_layers(
    n_in: int, n_out: int, hidden: int, depth: int, activation: Activation, batch_norm: bool
) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers.append(nn.Linear(width, hidden, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(_activation(activation))
        width = hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def _join(
    owner: nn.Module, what: str, v: Tensor, size: int, condition: Tensor | None, csize: int
) -> Tensor:
    """Check (B, size) input and (B, csize) condition; return them concatenated."""
    name = type(owner).__name__
    if v.ndim != 2 or v.shape[1] != size:
        raise ComponentInputError(
            f"{name}: expected {what} of shape (batch, {size}), got {tuple(v.shape)}"
        )
    if csize == 0:
        reject_condition(owner, condition)
        return v
    if condition is None:
        raise ComponentInputError(
            f"{name} was built with condition_shape=({csize},) and needs a condition"
        )
    if condition.ndim != 2 or condition.shape != (v.shape[0], csize):
        raise ComponentInputError(
            f"{name}: expected a condition of shape ({v.shape[0]}, {csize}), "
            f"got {tuple(condition.shape)}"
        )
    return torch.cat([v, condition.to(v.dtype)], dim=1)


class MLPEncoder(Encoder):
    def __init__(self, prior: Prior, data_dim: int, condition_dim: int, net: nn.Sequential) -> None:
        super().__init__(prior)
        self.data_dim = data_dim
        self.condition_dim = condition_dim
        self.latent_dim = prior.dim
        self.net = net

    def raw(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.net(_join(self, "data", x, self.data_dim, condition, self.condition_dim))


class MLPGenerator(Generator):
    def __init__(
        self,
        latent_dim: int,
        data_dim: int,
        condition_dim: int,
        net: nn.Sequential,
        output_bound: float | None = None,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.data_dim = data_dim
        self.condition_dim = condition_dim
        self.net = net
        self.output_bound = output_bound

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        out = self.net(_join(self, "codes", z, self.latent_dim, condition, self.condition_dim))
        if self.output_bound is None:
            return out
        return self.output_bound * torch.tanh(out / self.output_bound)


class MLP(Backbone):
    """Multilayer perceptrons for (D,)-shaped data.

    Options:
        hidden: units per hidden layer.
        depth: number of hidden layers (0 gives a linear map).
        activation: "relu", "leaky_relu" (slope 0.2) or "elu".
        batch_norm: BatchNorm1d after each hidden linear layer.
        output_bound: the generator's output is b * tanh(out / b), inside (-b, b) per coordinate,
            as the image backbones' tanh keeps images inside [-1, 1]; None leaves it linear. Set it
            a little above the data's range. Without it the generator can place its samples far
            outside the data, where the encoder (piecewise linear, so direction-driven far away)
            spreads them over the sphere and the latent term is easily met: measured on ring8
            (configs/ring8.toml, 4,000 iterations), 0/8 modes in 2 of 2 seeds without a bound,
            8/8 in 2 of 2 with b = 1.5.
    """

    def __init__(
        self,
        hidden: int = 128,
        depth: int = 3,
        activation: Activation = "relu",
        batch_norm: bool = False,
        output_bound: float | None = None,
    ) -> None:
        if hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden}")
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        _activation(activation)  # fail at configuration time, not at build time
        self.hidden = hidden
        self.depth = depth
        self.activation: Activation = activation
        self.batch_norm = batch_norm
        if output_bound is not None and not (math.isfinite(output_bound) and output_bound > 0):
            raise ValueError(f"output_bound must be a positive number or None, got {output_bound}")
        self.output_bound = output_bound

    def build(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        prior: Prior,
        condition_shape: Sequence[int] | None = None,
    ) -> EncoderGenerator:
        shape = tuple(int(s) for s in data_shape)
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(
                f"the mlp backbone takes vector data of shape (D,), got data_shape {shape}; "
                "use the dcgan backbone for images"
            )
        check_latent(latent_dim, prior)
        cdim = 0
        if condition_shape is not None:
            cshape = tuple(int(s) for s in condition_shape)
            if len(cshape) != 1 or cshape[0] < 1:
                raise ValueError(f"the mlp backbone takes a condition of shape (K,), got {cshape}")
            cdim = cshape[0]
        data_dim = shape[0]
        options = (self.hidden, self.depth, self.activation, self.batch_norm)
        encoder = MLPEncoder(
            prior, data_dim, cdim, mlp_layers(data_dim + cdim, latent_dim, *options)
        )
        generator = MLPGenerator(
            latent_dim,
            data_dim,
            cdim,
            mlp_layers(latent_dim + cdim, data_dim, *options),
            self.output_bound,
        )
        return EncoderGenerator(encoder=encoder, generator=generator)

    def __repr__(self) -> str:
        return (
            f"MLP(hidden={self.hidden}, depth={self.depth}, activation={self.activation!r}, "
            f"batch_norm={self.batch_norm}, output_bound={self.output_bound})"
        )
