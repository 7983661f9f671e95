"""Conditional encoder/generator pair for colorization (paper section 3.2), for square or
rectangular sizes divisible by 8.

generator ``g(z | c)``: z (M values) expanded to M constant maps, concatenated with the condition
  c (e.g. L), then a small ResNet: a 3x3 stem to ``generator_width`` channels at full resolution,
  a stride-2 conv to twice that, ``blocks`` residual blocks (3x3 conv, BN, ReLU, 3x3 conv, BN, +
  skip) at half resolution, nearest upsampling and a 3x3 conv back to full resolution added to
  the stem's output (a U-Net-style skip, so edges of the condition stay sharp), and a 3x3 conv to
  the data's channels (ab) through tanh.
encoder ``e(x | c)`` (the "cond-conv" net): x and c concatenated (the Lab image), 4x4 stride-2
  convs ``encoder_width -> 2x -> 4x`` with LeakyReLU 0.2 (BN on all but the first), global average
  pooling and a linear layer to M; the base class projects onto the prior's support.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from agekit.backbones import check_latent, dcgan_init_
from agekit.components import (
    Backbone,
    ComponentInputError,
    Encoder,
    EncoderGenerator,
    Generator,
    Prior,
)

__all__ = ["ConditionalEncoder", "ConditionalGenerator", "ConditionalResNet"]


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class _Residual(nn.Module):
    def __init__(self, channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=not batch_norm),
            _norm(channels, batch_norm),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=not batch_norm),
            _norm(channels, batch_norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x + self.body(x))


def _check_pair(owner: nn.Module, x: Tensor, shape: tuple[int, ...], what: str) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise ComponentInputError(
            f"{type(owner).__name__}: expected {what} of shape (batch, "
            f"{', '.join(map(str, shape))}), got {tuple(x.shape)}"
        )


def _need_condition(owner: nn.Module, condition: Tensor | None, batch: int) -> Tensor:
    if condition is None:
        raise ComponentInputError(
            f"{type(owner).__name__} is conditional: pass the condition (e.g. the L channel)"
        )
    if condition.shape[0] != batch:
        raise ComponentInputError(
            f"{type(owner).__name__}: {condition.shape[0]} conditions for a batch of {batch}"
        )
    return condition


class ConditionalGenerator(Generator):
    def __init__(
        self,
        latent_dim: int,
        data_shape: tuple[int, int, int],
        condition_shape: tuple[int, int, int],
        width: int,
        blocks: int,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.data_shape = data_shape
        self.condition_shape = condition_shape
        cin = condition_shape[0] + latent_dim
        self.stem = nn.Sequential(
            nn.Conv2d(cin, width, 3, 1, 1, bias=not batch_norm),
            _norm(width, batch_norm),
            nn.ReLU(),
        )
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=not batch_norm),
            _norm(2 * width, batch_norm),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(*[_Residual(2 * width, batch_norm) for _ in range(blocks)])
        self.up = nn.Sequential(
            # nearest upsampling then a 3x3 conv: no checkerboard (a stride-2 transposed conv
            # drew a visible grid over flat regions of the colorizations)
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * width, width, 3, 1, 1, bias=not batch_norm),
            _norm(width, batch_norm),
            nn.ReLU(),
        )
        self.out = nn.Sequential(nn.Conv2d(width, data_shape[0], 3, 1, 1), nn.Tanh())

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ComponentInputError(
                f"{type(self).__name__}: expected codes of shape (batch, {self.latent_dim}), "
                f"got {tuple(z.shape)}"
            )
        condition = _need_condition(self, condition, z.shape[0])
        _check_pair(self, condition, self.condition_shape, "conditions")
        height, width = condition.shape[-2:]
        maps = z[:, :, None, None].expand(-1, -1, height, width).to(condition.dtype)
        stem = self.stem(torch.cat([condition, maps], dim=1))
        return self.out(stem + self.up(self.blocks(self.down(stem))))


class ConditionalEncoder(Encoder):
    def __init__(
        self,
        prior: Prior,
        data_shape: tuple[int, int, int],
        condition_shape: tuple[int, int, int],
        width: int,
        batch_norm: bool,
    ) -> None:
        super().__init__(prior)
        self.data_shape = data_shape
        self.condition_shape = condition_shape
        cin = data_shape[0] + condition_shape[0]
        self.net = nn.Sequential(
            nn.Conv2d(cin, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=not batch_norm),
            _norm(2 * width, batch_norm),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1, bias=not batch_norm),
            _norm(4 * width, batch_norm),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * width, prior.dim),
        )

    def raw(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        _check_pair(self, x, self.data_shape, "data")
        condition = _need_condition(self, condition, x.shape[0])
        _check_pair(self, condition, self.condition_shape, "conditions")
        return self.net(torch.cat([condition.to(x.dtype), x], dim=1))


class ConditionalResNet(Backbone):
    """The paper's colorization pair (section 3.2): a ResNet generator g(z | L) fed with z as
    constant maps, and a conv encoder e(x | L) on the Lab image. Needs ``condition_shape``.

    Options:
        generator_width: channels at full resolution (twice that in the residual blocks).
        encoder_width: channels of the encoder's first conv (then 2x, 4x).
        blocks: residual blocks at half resolution.
        batch_norm: batch norm in both nets (except the encoder's first conv and output layers).
    """

    def __init__(
        self,
        generator_width: int = 32,
        encoder_width: int = 32,
        blocks: int = 3,
        batch_norm: bool = True,
    ) -> None:
        for name, value in (
            ("generator_width", generator_width),
            ("encoder_width", encoder_width),
        ):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {blocks}")
        self.generator_width = generator_width
        self.encoder_width = encoder_width
        self.blocks = blocks
        self.batch_norm = batch_norm

    def build(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        prior: Prior,
        condition_shape: Sequence[int] | None = None,
    ) -> EncoderGenerator:
        if condition_shape is None:
            raise ValueError(
                "the cond-resnet backbone is conditional: it needs data with a condition "
                "(e.g. colour-crops or lab-folder), which gives condition_shape"
            )
        shape = tuple(int(s) for s in data_shape)
        cshape = tuple(int(s) for s in condition_shape)
        if len(shape) != 3 or len(cshape) != 3 or shape[1:] != cshape[1:]:
            raise ValueError(
                f"cond-resnet needs (C, H, W) data and condition of one size, got data_shape "
                f"{shape} and condition_shape {cshape}"
            )
        if shape[1] % 8 or shape[2] % 8:
            raise ValueError(f"cond-resnet needs H and W divisible by 8, got {shape}")
        check_latent(latent_dim, prior)
        data3 = (shape[0], shape[1], shape[2])
        cond3 = (cshape[0], cshape[1], cshape[2])
        generator = ConditionalGenerator(
            latent_dim, data3, cond3, self.generator_width, self.blocks, self.batch_norm
        )
        encoder = ConditionalEncoder(prior, data3, cond3, self.encoder_width, self.batch_norm)
        encoder.apply(dcgan_init_)
        generator.apply(dcgan_init_)
        return EncoderGenerator(encoder=encoder, generator=generator)

    def __repr__(self) -> str:
        return (
            f"ConditionalResNet(generator_width={self.generator_width}, "
            f"encoder_width={self.encoder_width}, blocks={self.blocks}, "
            f"batch_norm={self.batch_norm})"
        )
