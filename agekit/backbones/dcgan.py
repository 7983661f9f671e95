"""DCGAN-style encoder/generator pairs for 32 px and 64 px images, as in the AGE reference code.

32 px (the reference code's ``dcgan32px``):
  encoder   nc -> ndf -> 2ndf -> 4ndf (4x4 stride-2 convs, LeakyReLU 0.2, batch norm on all but the
            first) -> 4x4 stride-2 conv to nz with bias (2x2) -> 2x2 average pool -> nz.
  generator nz (1x1) -> 8ngf (4x4) -> 4ngf (8x8) -> 2ngf (16x16) -> 2ngf (32x32), transposed 4x4
            convs with batch norm and ReLU, then a 1x1 conv to nc with bias and tanh.
64 px (the standard DCGAN shapes, ``dcgan64px``):
  encoder   nc -> ndf -> 2ndf -> 4ndf -> 8ndf (4x4 stride-2, 64 -> 4 px) -> 4x4 valid conv to nz
            with bias.
  generator nz -> 8ngf (4x4) -> 4ngf -> 2ngf -> ngf (32x32) -> transposed 4x4 conv to nc, tanh.

The encoder returns raw (B, nz) codes from :meth:`Encoder.raw`; the base class's ``forward`` maps
them onto the prior's support. Images are expected in [-1, 1], which is also the generator's range.
All control flow depends on shapes only, so the nets trace under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from agekit.backbones import check_latent, dcgan_init_, reject_condition
from agekit.components import (
    Backbone,
    ComponentInputError,
    Encoder,
    EncoderGenerator,
    Generator,
    Prior,
)
from agekit.util.filters import gaussian_blur

__all__ = ["DCGAN", "DCGANEncoder", "DCGANGenerator"]

SUPPORTED_SIZES = (32, 64)


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


def _down(cin: int, cout: int, batch_norm: bool) -> list[nn.Module]:
    # Without batch norm the conv needs its own bias: BN's shift is what made the bias redundant.
    return [
        nn.Conv2d(cin, cout, 4, 2, 1, bias=not batch_norm),
        _norm(cout, batch_norm),
        nn.LeakyReLU(0.2),
    ]


def _up(cin: int, cout: int, batch_norm: bool, *, first: bool = False) -> list[nn.Module]:
    stride, padding = (1, 0) if first else (2, 1)
    return [
        nn.ConvTranspose2d(cin, cout, 4, stride, padding, bias=not batch_norm),
        _norm(cout, batch_norm),
        nn.ReLU(),
    ]


def encoder_layers(nc: int, size: int, nz: int, ndf: int, batch_norm: bool = True) -> nn.Sequential:
    """The encoder trunk: (B, nc, size, size) -> (B, nz, 1, 1), raw (not projected)."""
    # The first layer never has batch norm (DCGAN practice: normalising raw pixels hurts).
    layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
    layers += _down(ndf, ndf * 2, batch_norm) + _down(ndf * 2, ndf * 4, batch_norm)
    if size == 32:  # 4x4 here
        layers += [nn.Conv2d(ndf * 4, nz, 4, 2, 1, bias=True), nn.AvgPool2d(2)]
    else:  # 64 px: 8x8 here
        layers += _down(ndf * 4, ndf * 8, batch_norm)
        layers += [nn.Conv2d(ndf * 8, nz, 4, 1, 0, bias=True)]
    return nn.Sequential(*layers)


def generator_layers(
    nc: int, size: int, nz: int, ngf: int, batch_norm: bool = True
) -> nn.Sequential:
    """The generator: (B, nz, 1, 1) -> (B, nc, size, size) in [-1, 1]."""
    layers: list[nn.Module] = _up(nz, ngf * 8, batch_norm, first=True)
    layers += _up(ngf * 8, ngf * 4, batch_norm) + _up(ngf * 4, ngf * 2, batch_norm)
    if size == 32:
        # The reference keeps 2ngf channels at full resolution and maps to colours with a 1x1 conv.
        layers += _up(ngf * 2, ngf * 2, batch_norm)
        layers += [nn.Conv2d(ngf * 2, nc, 1, bias=True)]
    else:
        layers += _up(ngf * 2, ngf, batch_norm)
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False)]
    layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class DCGANEncoder(Encoder):
    """Images (B, C, H, W) -> codes (B, nz) on the prior's support.

    With ``input_blur`` > 0 the encoder reads its input through a fixed Gaussian low-pass of that
    standard deviation (pixels): codes then cannot depend on pixel-scale patterns, so neither
    player can use them (neither to carry z nor to tell fakes from real images).
    """

    def __init__(
        self,
        prior: Prior,
        data_shape: tuple[int, int, int],
        net: nn.Sequential,
        input_blur: float = 0.0,
    ) -> None:
        super().__init__(prior)
        self.data_shape = data_shape
        self.latent_dim = prior.dim
        self.net = net
        self.input_blur = input_blur

    def raw(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        reject_condition(self, condition)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.data_shape:
            raise ComponentInputError(
                f"{type(self).__name__}: expected images of shape (batch, "
                f"{', '.join(map(str, self.data_shape))}), got {tuple(x.shape)}"
            )
        if self.input_blur > 0:
            x = gaussian_blur(x, self.input_blur)
        return self.net(x).flatten(1)


class DCGANGenerator(Generator):
    """Codes (B, nz) -> images (B, C, H, W) in [-1, 1]."""

    def __init__(
        self, latent_dim: int, data_shape: tuple[int, int, int], net: nn.Sequential
    ) -> None:
        super().__init__()
        self.data_shape = data_shape
        self.latent_dim = latent_dim
        self.net = net

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        reject_condition(self, condition)
        # (B, nz, 1, 1) is accepted too, so codes can come straight from a conv trunk.
        if (
            z.ndim not in (2, 4)
            or z.shape[1] != self.latent_dim
            or math.prod(z.shape[1:]) != self.latent_dim
        ):
            raise ComponentInputError(
                f"{type(self).__name__}: expected codes of shape (batch, {self.latent_dim}), "
                f"got {tuple(z.shape)}"
            )
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


class DCGAN(Backbone):
    """The AGE paper's DCGAN-like encoder and generator for 32x32 and 64x64 images.

    Options:
        width: base channel count (ndf for the encoder, ngf for the generator); 64 in the paper.
        encoder_width, generator_width: override ``width`` for one network.
        batch_norm: batch norm after every conv except the encoder's first and the output layers;
            without it those convs get a bias instead.
        input_blur: standard deviation (pixels) of a fixed Gaussian low-pass in front of the
            encoder; 0 (the paper's networks) reads pixels as they are.
    """

    def __init__(
        self,
        width: int = 64,
        encoder_width: int | None = None,
        generator_width: int | None = None,
        batch_norm: bool = True,
        input_blur: float = 0.0,
    ) -> None:
        if input_blur < 0:
            raise ValueError(f"input_blur must be >= 0 (pixels), got {input_blur}")
        self.input_blur = input_blur
        for name, value in (
            ("width", width),
            ("encoder_width", encoder_width),
            ("generator_width", generator_width),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        self.width = width
        self.encoder_width = encoder_width if encoder_width is not None else width
        self.generator_width = generator_width if generator_width is not None else width
        self.batch_norm = batch_norm

    def build(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        prior: Prior,
        condition_shape: Sequence[int] | None = None,
    ) -> EncoderGenerator:
        if condition_shape is not None:
            raise ValueError(
                "the dcgan backbone is unconditional and does not take condition_shape; "
                "conditional DCGAN networks are not provided by it (use a conditional backbone)"
            )
        shape = tuple(int(s) for s in data_shape)
        supported = " or ".join(f"(C, {s}, {s})" for s in SUPPORTED_SIZES)
        if (
            len(shape) != 3
            or shape[0] < 1
            or shape[1] != shape[2]
            or shape[1] not in SUPPORTED_SIZES
        ):
            raise ValueError(
                f"the dcgan backbone supports square images of {supported} with C >= 1 channels "
                f"(sizes {', '.join(map(str, SUPPORTED_SIZES))} px), got data_shape {shape}; "
                "resize the data or use another backbone"
            )
        check_latent(latent_dim, prior)
        nc, size = shape[0], shape[1]
        image_shape = (nc, size, size)
        encoder = DCGANEncoder(
            prior,
            image_shape,
            encoder_layers(nc, size, latent_dim, self.encoder_width, self.batch_norm),
            self.input_blur,
        )
        generator = DCGANGenerator(
            latent_dim,
            image_shape,
            generator_layers(nc, size, latent_dim, self.generator_width, self.batch_norm),
        )
        encoder.apply(dcgan_init_)
        generator.apply(dcgan_init_)
        return EncoderGenerator(encoder=encoder, generator=generator)

    def __repr__(self) -> str:
        return (
            f"DCGAN(encoder_width={self.encoder_width}, generator_width={self.generator_width}, "
            f"batch_norm={self.batch_norm}, input_blur={self.input_blur})"
        )
