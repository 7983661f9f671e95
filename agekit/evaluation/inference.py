"""Using a trained model: samples, reconstructions, interpolations, colorizations, colour transfer.

Every function takes a :class:`agekit.model.Model` (from :func:`agekit.model.load_trained` or
:func:`agekit.model.build_model`) and tensors or image files, and returns tensors on the CPU; none
of them writes a file (the ``agekit`` commands of the same names draw the results). The networks
run in eval mode without gradients, and their previous train/eval mode is restored afterwards.

Batch norm: a model from :func:`~agekit.model.load_trained` carries the statistics evaluation
scores it with (``model.statistics``, :mod:`agekit.evaluation.batchnorm`): the encoder's from real
images,
the generator's for prior samples where it decodes z (:func:`sample`) and for codes of real data
where it decodes codes (:func:`reconstruct`, :func:`interpolate`). So ``sample(model, n, seed)``
decodes the same z with the same networks as evaluation with that seed does. A model from
:func:`~agekit.model.build_model` (``model.statistics`` None) runs with its running statistics;
colorization models always do.

Image tensors follow the model's data: images in [-1, 1] as ``(N, C, H, W)`` for unconditional
image data, vectors ``(N, D)`` for vector data; colorization works in RGB in [0, 1],
``(N, 3, H, W)``. Conventions of the paper: ``e`` is the encoder, ``g`` the generator, codes live
on the prior's support.

>>> from agekit.model import load_trained
>>> from agekit import inference
>>> model, _ = load_trained("runs/mnist5k", "cpu")
>>> images = inference.sample(model, 16, seed=0)              # g(z), (16, 1, 32, 32)
>>> pairs = inference.reconstruct(model, images)              # g(e(x))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from agekit.evaluation.latent_paths import interpolate as _great_circle
from agekit.util.lab import network_to_rgb, rgb_to_network
from agekit.util.network_modes import network_mode

if TYPE_CHECKING:
    from agekit.model import Model

__all__ = [
    "InferenceError",
    "colorize",
    "condition_size",
    "device_of",
    "encode",
    "interpolate",
    "lightness_only",
    "read_rgb",
    "read_rgb_batch",
    "reconstruct",
    "require_conditional",
    "require_unconditional",
    "sample",
    "transfer",
]


class InferenceError(ValueError):
    """A request that does not fit the model or its input: an unconditional command on a
    colorization model (or the reverse), an image file that is missing or cannot be read."""


def device_of(model: Model) -> torch.device:
    """The device the model's generator lives on (inputs are moved there)."""
    return next(model.pair.generator.parameters()).device


def require_unconditional(model: Model, what: str = "this") -> None:
    """Raise :class:`InferenceError` when ``model`` is conditional (a colorization model)."""
    if model.data.condition_shape is not None:
        raise InferenceError(
            f"{what} needs an unconditional model; this one is conditional "
            f"({model.config.data.name}): use colorize or transfer"
        )


def require_conditional(model: Model, what: str = "this") -> None:
    """Raise :class:`InferenceError` unless ``model`` is conditional (a colorization model)."""
    if model.data.condition_shape is None:
        raise InferenceError(
            f"this model was trained on unconditional data ({model.config.data.name}); "
            f"{what} needs a colorization model (e.g. data colour-crops or lab-folder)"
        )


def condition_size(model: Model) -> int:
    """The side in pixels of a conditional model's images (its condition's last dimension)."""
    require_conditional(model, "condition_size")
    shape = model.data.condition_shape
    assert shape is not None
    return int(shape[-1])


@contextmanager
def _evaluating(model: Model) -> Iterator[None]:
    """Eval mode and no gradients inside; each network's previous mode restored after."""
    with network_mode([model.pair.encoder, model.pair.generator], "eval"):
        yield


# unconditional models ----------------------------------------------------------------------------
def sample(model: Model, n: int, seed: int = 0) -> Tensor:
    """``n`` samples g(z), z drawn from the prior with ``seed`` (the same seed gives the same
    samples). Returns ``(n, *data shape)`` on the CPU."""
    require_unconditional(model, "sample")
    if n < 1:
        raise InferenceError(f"n must be at least 1, got {n}")
    z = model.prior.sample(n, torch.Generator().manual_seed(seed)).to(device_of(model))
    generator = model.generator_for("prior")
    with _evaluating(model):
        return generator(z).float().cpu()


def encode(model: Model, x: Tensor) -> Tensor:
    """The codes e(x) of data ``x`` (``(N, *data shape)``), ``(N, latent dim)`` on the CPU."""
    require_unconditional(model, "encode")
    with _evaluating(model):
        return model.pair.encoder(x.to(device_of(model))).float().cpu()


def reconstruct(model: Model, x: Tensor) -> Tensor:
    """Reconstructions g(e(x)) of data ``x`` (``(N, *data shape)``), same shape, on the CPU."""
    require_unconditional(model, "reconstruct")
    generator = model.generator_for("codes")
    with _evaluating(model):
        return generator(model.pair.encoder(x.to(device_of(model)))).float().cpu()


def interpolate(model: Model, start: Tensor, end: Tensor, steps: int) -> Tensor:
    """Decoded paths between the codes of ``start[i]`` and ``end[i]``: great circles on the
    sphere prior, straight lines otherwise (:func:`agekit.evaluation.latent_paths.interpolate`),
    ``steps`` points
    each, ends included. ``start`` and ``end`` are ``(R, *data shape)``; returns
    ``(R, steps, *data shape)`` on the CPU."""
    require_unconditional(model, "interpolate")
    if start.shape != end.shape:
        raise InferenceError(
            f"start and end differ in shape: {tuple(start.shape)} and {tuple(end.shape)}"
        )
    if steps < 2:
        raise InferenceError(f"steps must be at least 2 (the two ends), got {steps}")
    device = device_of(model)
    # The path runs between codes of real data, so the generator decodes it as it does codes.
    generator = model.generator_for("codes")
    with _evaluating(model):
        codes_start = model.pair.encoder(start.to(device))
        codes_end = model.pair.encoder(end.to(device))
        rows = [
            generator(_great_circle(a, b, steps, model.prior)).float().cpu()
            for a, b in zip(codes_start, codes_end, strict=True)
        ]
    if not rows:
        return torch.empty(0, steps, *start.shape[1:])
    return torch.stack(rows)


# image files ------------------------------------------------------------------------------------
def read_rgb(path: str | Path, size: int) -> Tensor:
    """An image file (any PIL-readable RGB or grayscale) as ``(3, size, size)`` RGB in [0, 1],
    resized (shorter side, bilinear) and centre-cropped like the ``image-folder`` data set.

    Raises :class:`InferenceError` naming the file when it is missing or not an image.
    """
    from agekit.datasets.local import UnreadableImageError, load_square_rgb

    path = Path(path)
    if not path.is_file():
        raise InferenceError(f"{path}: no such image file")
    try:
        return load_square_rgb(path, size).float() / 255.0
    except UnreadableImageError as exc:
        raise InferenceError(str(exc)) from None


def read_rgb_batch(paths: Sequence[str | Path], size: int) -> Tensor:
    """:func:`read_rgb` of several files, stacked: ``(len(paths), 3, size, size)``."""
    if not paths:
        raise InferenceError("no image files given")
    return torch.stack([read_rgb(path, size) for path in paths])


# colorization models (conditional on the lightness L) -------------------------------------------
def lightness_only(rgb: Tensor) -> Tensor:
    """The grayscale version a colorization model sees: ``rgb`` (``(N, 3, H, W)`` in [0, 1]) with
    its colour (a, b in Lab) set to zero, as RGB in [0, 1]."""
    x, condition = rgb_to_network(rgb)
    return network_to_rgb(torch.zeros_like(x), condition)


def colorize(model: Model, rgb: Tensor, n: int, seed: int = 0) -> Tensor:
    """``n`` colorizations g(z | L) of each image of ``rgb`` (``(B, 3, H, W)`` in [0, 1], H = W =
    :func:`condition_size`), one per code z drawn from the prior with ``seed`` (the same codes for
    every image). Returns RGB in [0, 1], ``(B, n, 3, H, W)``, on the CPU."""
    require_conditional(model, "colorize")
    if n < 1:
        raise InferenceError(f"n must be at least 1, got {n}")
    _check_size(model, rgb)
    device = device_of(model)
    _, condition = rgb_to_network(rgb.float().cpu())
    z = model.prior.sample(n, torch.Generator().manual_seed(seed)).to(device)
    rows = []
    with _evaluating(model):
        for image in range(len(rgb)):
            cond = condition[image : image + 1].expand(n, -1, -1, -1)
            ab = model.pair.generator(z, cond.to(device)).float().cpu()
            rows.append(network_to_rgb(ab, cond))
    if not rows:
        return torch.empty(0, n, *rgb.shape[1:])
    return torch.stack(rows)


def transfer(model: Model, source: Tensor, target: Tensor) -> Tensor:
    """Colour transfer g(e(x_source | L_source) | L_target): the colour code of each ``source``
    image applied to the lightness of the matching ``target`` image. Both are ``(B, 3, H, W)`` (or
    one ``(3, H, W)`` image) RGB in [0, 1]; returns RGB in [0, 1] of the same shape, on the CPU."""
    require_conditional(model, "transfer")
    single = source.ndim == 3
    if single:
        source, target = source[None], target[None]
    if source.shape != target.shape:
        raise InferenceError(
            f"source and target differ in shape: {tuple(source.shape)} and {tuple(target.shape)}"
        )
    _check_size(model, source)
    device = device_of(model)
    x1, l1 = rgb_to_network(source.float().cpu())
    _, l2 = rgb_to_network(target.float().cpu())
    with _evaluating(model):
        code = model.pair.encoder(x1.to(device), l1.to(device))
        ab = model.pair.generator(code, l2.to(device)).float().cpu()
    out = network_to_rgb(ab, l2)
    return out[0] if single else out


def _check_size(model: Model, rgb: Tensor) -> None:
    size = condition_size(model)
    if rgb.ndim != 4 or rgb.shape[1] != 3 or tuple(rgb.shape[-2:]) != (size, size):
        raise InferenceError(
            f"expected RGB images of shape (N, 3, {size}, {size}) for this model, "
            f"got {tuple(rgb.shape)} (read_rgb(path, {size}) reads a file at this size)"
        )
