"""The DCGAN and MLP backbones: shapes, supports, ranges, initialisation, errors, compilation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

import agekit
from agekit.backbones.dcgan import DCGAN
from agekit.backbones.mlp import MLP
from agekit.components import ComponentInputError, EncoderGenerator, Prior
from agekit.priors import GaussianPrior, SpherePrior
from agekit.registry import ComponentOptionsError


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # These tensors are tiny; intra-op threads only add spin-wait overhead, which dominates (1 s per
    # forward instead of 20 ms) when other processes share the 2 cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(
    size: int, channels: int, nz: int, prior_cls: type[Prior] = SpherePrior, **options: object
) -> EncoderGenerator:
    torch.manual_seed(0)
    backbone = agekit.create("backbone", "dcgan", **{"width": 8, **options})
    return backbone.build((channels, size, size), nz, prior_cls(nz))


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("nz", [2, 16, 100])
def test_dcgan_shapes_support_and_range(size: int, channels: int, nz: int) -> None:
    pair = build(size, channels, nz)
    x = torch.rand(5, channels, size, size) * 2 - 1
    codes = pair.encoder(x)
    assert codes.shape == (5, nz)
    torch.testing.assert_close(codes.norm(dim=1), torch.ones(5))
    out = pair.generator(codes)
    assert out.shape == (5, channels, size, size)
    assert out.min() >= -1 and out.max() <= 1
    # A prior sample (the generator's other input) also works, in eval mode too.
    pair.generator.eval()
    assert pair.generator(SpherePrior(nz).sample(3)).shape == (3, channels, size, size)


@pytest.mark.parametrize("size", [32, 64])
def test_dcgan_gaussian_prior_codes_are_unconstrained(size: int) -> None:
    pair = build(size, 1, 16, GaussianPrior)
    x = torch.rand(8, 1, size, size) * 2 - 1
    codes = pair.encoder(x)
    assert codes.shape == (8, 16)
    assert not torch.allclose(codes.norm(dim=1), torch.ones(8), atol=1e-2)
    torch.testing.assert_close(codes, pair.encoder.raw(x))


def test_raw_vs_projected() -> None:
    pair = build(32, 3, 16)
    x = torch.rand(4, 3, 32, 32)
    raw = pair.encoder.raw(x)
    torch.testing.assert_close(pair.encoder(x), raw / raw.norm(dim=1, keepdim=True))


def test_generator_accepts_4d_codes_and_channels_last() -> None:
    pair = build(32, 3, 16)
    pair.generator.eval()
    z = SpherePrior(16).sample(2)
    flat = pair.generator(z)
    torch.testing.assert_close(pair.generator(z[:, :, None, None]), flat)
    pair.generator.to(memory_format=torch.channels_last)
    torch.testing.assert_close(pair.generator(z), flat, atol=1e-5, rtol=1e-4)
    x = flat.contiguous(memory_format=torch.channels_last)
    assert pair.encoder(x).shape == (2, 16)


def test_dcgan_init_statistics() -> None:
    torch.manual_seed(0)
    pair = DCGAN(width=64).build((3, 64, 64), 64, SpherePrior(64))
    for net in (pair.encoder, pair.generator):
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                if m.weight.numel() > 10_000:
                    assert abs(m.weight.std().item() - 0.02) < 0.002
                    assert abs(m.weight.mean().item()) < 0.002
                if m.bias is not None:
                    assert torch.count_nonzero(m.bias) == 0
            elif isinstance(m, nn.BatchNorm2d):
                assert abs(m.weight.mean().item() - 1) < 0.01
                assert m.weight.std().item() < 0.05
                assert torch.count_nonzero(m.bias) == 0


def test_reference_32px_layout_and_parameter_counts() -> None:
    # Counts of the reference dcgan32px pair (ndf = ngf = 64, nc = 1), derived by hand:
    # encoder 1*64*16 + 64*128*16 + 2*128 + 128*256*16 + 2*256 + (256*16 + 1)*nz,
    # generator nz*512*16 + 2*512 + 512*256*16 + 2*256 + 256*128*16 + 128*128*16 + 2*2*128
    #   + 128 + 1.
    counts = {}
    for nz in (16, 64, 128):
        pair = DCGAN().build((1, 32, 32), nz, SpherePrior(nz))
        counts[nz] = (n_params(pair.encoder), n_params(pair.generator))
        assert counts[nz] == (657_152 + 4097 * nz, 2_885_761 + 8192 * nz)
    print("dcgan32 width 64 nc 1 (encoder, generator):", counts)
    pair = DCGAN().build((1, 32, 32), 16, SpherePrior(16))
    convs = [m for m in pair.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 16]
    assert [c.bias is not None for c in convs] == [False, False, False, True]
    assert any(isinstance(m, nn.AvgPool2d) for m in pair.encoder.modules())
    gconvs = [m for m in pair.generator.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert [c.out_channels for c in gconvs] == [512, 256, 128, 128, 1]
    assert gconvs[-1].kernel_size == (1, 1) and gconvs[-1].bias is not None
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in pair.encoder.modules())
    assert n_bn == 2


def test_widths_and_batch_norm_options() -> None:
    pair = build(64, 3, 16, encoder_width=4, generator_width=12, batch_norm=False)
    first_enc = next(m for m in pair.encoder.modules() if isinstance(m, nn.Conv2d))
    first_gen = next(m for m in pair.generator.modules() if isinstance(m, nn.ConvTranspose2d))
    assert first_enc.out_channels == 4 and first_gen.out_channels == 96
    assert not any(isinstance(m, nn.BatchNorm2d) for m in pair.encoder.modules())
    assert pair.generator(torch.randn(3, 16)).shape == (3, 3, 64, 64)
    # Without batch norm the inner convs carry a bias instead.
    assert first_gen.bias is not None


@pytest.mark.parametrize(
    "shape", [(3, 28, 28), (3, 128, 128), (3, 32, 64), (32, 32), (0, 32, 32), (1, 2, 32, 32)]
)
def test_unsupported_image_shape_is_a_clear_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"32.*64"):
        DCGAN().build(shape, 16, SpherePrior(16))


def test_build_errors() -> None:
    with pytest.raises(ValueError, match="does not match the prior"):
        DCGAN().build((1, 32, 32), 16, SpherePrior(8))
    with pytest.raises(ValueError, match="conditional"):
        DCGAN().build((1, 32, 32), 16, SpherePrior(16), condition_shape=(1, 32, 32))
    with pytest.raises(ComponentOptionsError, match="width"):
        agekit.create("backbone", "dcgan", width=0)
    with pytest.raises(ComponentOptionsError):
        agekit.create("backbone", "dcgan", depth=3)


def test_call_errors() -> None:
    pair = build(32, 1, 16)
    with pytest.raises(ComponentInputError, match=r"\(batch, 1, 32, 32\)"):
        pair.encoder(torch.rand(2, 3, 32, 32))
    with pytest.raises(ComponentInputError, match=r"\(batch, 16\)"):
        pair.generator(torch.rand(2, 15))
    with pytest.raises(ComponentInputError, match="condition"):
        pair.encoder(torch.rand(2, 1, 32, 32), torch.rand(2, 1))
    with pytest.raises(ComponentInputError, match="condition"):
        pair.generator(torch.rand(2, 16), torch.rand(2, 1))


def test_dcgan_trains_one_step() -> None:
    pair = build(32, 1, 8)
    params = [*pair.encoder.parameters(), *pair.generator.parameters()]
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    loss = (pair.generator(pair.encoder(x)) - x).abs().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


def test_dcgan_traces_without_graph_breaks() -> None:
    # backend="eager" runs only the graph capture: fullgraph=True fails on any graph break, which is
    # what data-dependent Python control flow would cause. Inductor codegen is the slow test below.
    torch._dynamo.reset()
    pair = build(32, 1, 8)
    x = torch.rand(4, 1, 32, 32)
    enc = torch.compile(pair.encoder, backend="eager", fullgraph=True)
    gen = torch.compile(pair.generator, backend="eager", fullgraph=True)
    torch.testing.assert_close(enc(x), pair.encoder(x))
    z = SpherePrior(8).sample(4)
    torch.testing.assert_close(gen(z), pair.generator(z))


@pytest.mark.slow
def test_dcgan_compiles_with_inductor() -> None:
    torch._dynamo.reset()
    pair = build(32, 1, 8)
    pair.encoder.eval()
    pair.generator.eval()
    x = torch.rand(4, 1, 32, 32)
    enc = torch.compile(pair.encoder, fullgraph=True)
    torch.testing.assert_close(enc(x), pair.encoder(x), atol=1e-5, rtol=1e-4)
    z = SpherePrior(8).sample(4)
    gen = torch.compile(pair.generator, fullgraph=True)
    torch.testing.assert_close(gen(z), pair.generator(z), atol=1e-5, rtol=1e-4)


# MLP -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu"])
@pytest.mark.parametrize("depth", [0, 1, 3])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_shapes(activation: str, depth: int, batch_norm: bool) -> None:
    backbone = agekit.create(
        "backbone", "mlp", hidden=32, depth=depth, activation=activation, batch_norm=batch_norm
    )
    pair = backbone.build((2,), 4, SpherePrior(4))
    codes = pair.encoder(torch.randn(10, 2))
    assert codes.shape == (10, 4)
    torch.testing.assert_close(codes.norm(dim=1), torch.ones(10))
    assert pair.generator(codes).shape == (10, 2)
    n_linear = sum(isinstance(m, nn.Linear) for m in pair.encoder.modules())
    assert n_linear == depth + 1


def test_mlp_gaussian_and_linear_output() -> None:
    torch.manual_seed(0)
    pair = MLP(hidden=16, depth=2).build((3,), 5, GaussianPrior(5))
    codes = pair.encoder(torch.randn(64, 3) * 10)
    assert codes.shape == (64, 5)
    assert not torch.allclose(codes.norm(dim=1), torch.ones(64), atol=1e-2)
    # Linear output layer: the generator is not squashed into [-1, 1].
    assert pair.generator(torch.randn(64, 5) * 100).abs().max() > 1


def test_mlp_output_bound() -> None:
    torch.manual_seed(0)
    unbounded = MLP(hidden=16, depth=2).build((2,), 3, SpherePrior(3))
    bounded = MLP(hidden=16, depth=2, output_bound=1.5).build((2,), 3, SpherePrior(3))
    bounded.generator.load_state_dict(unbounded.generator.state_dict())
    z = torch.randn(256, 3, dtype=torch.float64) * 1000
    raw = unbounded.generator.double()(z)
    out = bounded.generator.double()(z)
    assert raw.abs().max() > 10  # far outside the bound without it
    assert out.abs().max() <= 1.5  # tanh saturates to exactly 1 in float64 far out
    # b tanh(out / b): the identity to first order near 0, saturating at +-b.
    torch.testing.assert_close(out, 1.5 * torch.tanh(raw / 1.5), rtol=1e-12, atol=1e-12)
    with pytest.raises(ComponentOptionsError, match="output_bound"):
        agekit.create("backbone", "mlp", output_bound=0.0)


def test_mlp_condition() -> None:
    pair = MLP(hidden=16, depth=1).build((2,), 3, SpherePrior(3), condition_shape=(5,))
    c = torch.randn(7, 5)
    codes = pair.encoder(torch.randn(7, 2), c)
    assert codes.shape == (7, 3)
    assert pair.generator(codes, c).shape == (7, 2)
    with pytest.raises(ComponentInputError, match="needs a condition"):
        pair.generator(codes)
    with pytest.raises(ComponentInputError, match=r"\(7, 5\)"):
        pair.encoder(torch.randn(7, 2), torch.randn(7, 4))


def test_mlp_errors() -> None:
    with pytest.raises(ValueError, match=r"\(D,\)"):
        MLP().build((1, 28, 28), 4, SpherePrior(4))
    with pytest.raises(ComponentOptionsError):
        agekit.create("backbone", "mlp", activation="tanh")
    with pytest.raises(ComponentOptionsError):
        agekit.create("backbone", "mlp", depth=-1)
    pair = MLP().build((2,), 4, SpherePrior(4))
    with pytest.raises(ComponentInputError, match=r"\(batch, 2\)"):
        pair.encoder(torch.randn(3, 3))
    with pytest.raises(ComponentInputError, match="condition"):
        pair.generator(torch.randn(3, 4), torch.randn(3, 1))
