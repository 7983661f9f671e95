"""Low-pass filters (agekit.util.filters), the game's latent filter and the speckle measure."""

from __future__ import annotations

import pytest
import torch

import agekit
from agekit.games.age import AGEGame, GameWeights
from agekit.metrics.sample_quality import speckle_ratio
from agekit.util.filters import gaussian_blur, low_pass, median_filter


def _strokes(n: int = 8, seed: int = 0) -> torch.Tensor:
    """Images of random 3-pixel-wide bars in [-1, 1]: smooth shapes with edges, no speckle."""
    g = torch.Generator().manual_seed(seed)
    images = -torch.ones(n, 1, 16, 16, dtype=torch.float64)
    for i in range(n):
        row, col = torch.randint(2, 12, (2,), generator=g).tolist()
        images[i, 0, row : row + 3, 2:14] = 1.0
        images[i, 0, 2:14, col : col + 3] = 1.0
    return images


def _speckle(images: torch.Tensor, fraction: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(images.shape, generator=g, dtype=torch.float64) < fraction
    return torch.where(flip, -images, images)


def test_median_filter_removes_isolated_pixels_and_keeps_bars() -> None:
    clean = _strokes()
    # 3-wide bars survive a 3x3 median except their corners (4 of 9 window pixels inside).
    changed = (median_filter(clean) != clean).double().mean()
    assert 0 < changed < 0.05
    dotted = clean.clone()
    dotted[:, 0, 0, 0] = 1.0  # isolated bright pixels, one in a corner (edge replication)
    dotted[:, 0, 15, 7] = 1.0
    torch.testing.assert_close(median_filter(dotted), median_filter(clean))


def test_median_filter_matches_scipy() -> None:
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = scipy_ndimage.median_filter(x.numpy(), size=(1, 1, 3, 3), mode="nearest")
    torch.testing.assert_close(median_filter(x), torch.from_numpy(expected))


def test_gaussian_blur_keeps_constants_and_damps_the_checkerboard() -> None:
    constant = torch.full((1, 1, 12, 12), 0.3, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(constant, 1.0), constant)
    checker = (torch.arange(12)[:, None] + torch.arange(12)[None, :]) % 2 * 2.0 - 1.0
    blurred = gaussian_blur(checker.double()[None, None], 1.0)
    # sigma = 1 px: the Nyquist frequency keeps exp(-2 pi^2 sigma^2 / 4) = 0.7 % of its amplitude
    # for an infinite kernel; the +-2 sigma truncation leaves a few percent.
    assert blurred[..., 3:-3, 3:-3].abs().max() < 0.05


def test_low_pass_names() -> None:
    assert low_pass("none") is None
    assert low_pass("median") is median_filter
    with pytest.raises(ValueError, match="unknown low-pass filter 'box'"):
        low_pass("box")


def test_speckle_ratio_is_one_for_clean_images_and_grows_with_speckle() -> None:
    clean = _strokes(32)
    assert speckle_ratio(_strokes(32, seed=5), clean) == pytest.approx(1.0, rel=0.3)
    assert speckle_ratio(_speckle(_strokes(32, seed=5), 0.05), clean) > 2.0
    assert speckle_ratio(_speckle(_strokes(32, seed=5), 0.15), clean) > speckle_ratio(
        _speckle(_strokes(32, seed=5), 0.05), clean
    )


def _image_game(latent_filter: object) -> AGEGame:
    torch.manual_seed(0)
    prior = agekit.create("prior", "sphere", dim=4)
    pair = agekit.create("backbone", "dcgan", width=4).build((1, 32, 32), 4, prior)
    return AGEGame(
        pair.encoder,
        pair.generator,
        prior,
        agekit.create("divergence", "gaussian-kl"),
        agekit.create("loss", "l1"),
        agekit.create("loss", "l2"),
        GameWeights(latent_weight=3.0),
        latent_filter=latent_filter,  # type: ignore[arg-type]
    )


def test_latent_filter_feeds_the_latent_term_only() -> None:
    seen: list[torch.Tensor] = []

    def record_and_blank(images: torch.Tensor) -> torch.Tensor:
        seen.append(images)
        return torch.zeros_like(images)

    game = _image_game(record_and_blank)
    game.encoder.eval()  # batch statistics would make the codes depend on the batch's company
    game.generator.eval()
    z = game.prior.sample(8, torch.Generator().manual_seed(1))
    out = game.generator_step(z)
    fake = game.generator(z)
    torch.testing.assert_close(seen[0], fake)
    blank_codes = game.encoder(torch.zeros_like(fake))
    torch.testing.assert_close(out.terms["latent_rec"], ((z - blank_codes) ** 2).mean(1).mean())
    torch.testing.assert_close(
        out.terms["kl_fake"], game.divergence(game.encoder(fake), game.prior)
    )
    torch.testing.assert_close(out.loss, out.terms["kl_fake"] + 3.0 * out.terms["latent_rec"])


def test_encoder_input_blur_makes_codes_blind_to_pixel_scale_patterns() -> None:
    prior = agekit.create("prior", "sphere", dim=4)
    torch.manual_seed(0)
    plain = agekit.create("backbone", "dcgan", width=4).build((1, 32, 32), 4, prior).encoder
    torch.manual_seed(0)
    blurred = agekit.create("backbone", "dcgan", width=4, input_blur=1.0)
    blind = blurred.build((1, 32, 32), 4, prior).encoder
    plain.eval()
    blind.eval()
    x = torch.zeros(4, 1, 32, 32)
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 - 0.5).expand_as(
        x
    )  # zero-mean
    plain_shift = (plain.raw(x + checker) - plain.raw(x)).norm()
    blind_shift = (blind.raw(x + checker) - blind.raw(x)).norm()
    assert blind_shift < 0.1 * plain_shift
    with pytest.raises(ValueError, match="input_blur"):
        agekit.create("backbone", "dcgan", input_blur=-1.0)
