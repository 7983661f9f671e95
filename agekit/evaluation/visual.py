"""PNG grids of samples and reconstructions (torchvision's ``make_grid``/``save_image``), and
scatter plots of 2-D vector data with a legend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.utils import save_image

from agekit.components import DataSource

#: Canvas size of a 2-D scatter plot, in pixels.
SCATTER_SIZE = 384


def _nrow(n: int) -> int:
    return max(1, round(n**0.5))


def save_samples(samples: Tensor, path: Path, data: DataSource) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples.ndim == 4:
        save_image(
            samples.float().cpu(),
            path,
            nrow=_nrow(len(samples)),
            normalize=True,
            value_range=(-1, 1),
            pad_value=1.0,
        )
        return
    if samples.ndim == 2 and samples.shape[1] == 2:
        reference = _reference_points(data)
        save_image(scatter([reference, samples.float().cpu()], labels=("data", "samples")), path)
        return
    raise ValueError(f"cannot draw samples of shape {tuple(samples.shape)}")


def save_pairs_grid(real: Tensor, reconstruction: Tensor, path: Path, data: DataSource) -> None:
    """Odd columns real, even columns their reconstructions (the paper's layout)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if real.ndim == 4:
        pairs = torch.stack([real.cpu(), reconstruction.float().cpu()], dim=1).flatten(0, 1)
        save_image(
            pairs,
            path,
            nrow=2 * _nrow(len(real)),
            normalize=True,
            value_range=(-1, 1),
            pad_value=1.0,
        )
        return
    if real.ndim == 2 and real.shape[1] == 2:
        canvas = scatter(
            [real.cpu(), reconstruction.float().cpu()], labels=("data", "reconstructions")
        )
        save_image(canvas, path)
        return
    raise ValueError(f"cannot draw data of shape {tuple(real.shape)}")


def save_grid(rows: Tensor, path: Path, signed: bool = True) -> None:
    """Images ``(R, K, C, H, W)`` as a grid of R rows of K, 2 px white padding; ``signed``: values
    in [-1, 1] (the networks' range), else [0, 1] (RGB from :mod:`agekit.util.lab`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = rows.flatten(0, 1).float().cpu()
    if signed:
        save_image(
            images, path, nrow=rows.shape[1], normalize=True, value_range=(-1, 1), pad_value=1.0
        )
    else:
        save_image(images, path, nrow=rows.shape[1], pad_value=1.0)


def _reference_points(data: DataSource) -> Tensor:
    tensors = data.tensors("test")
    if tensors is None:
        return torch.empty(0, 2)
    return tensors[0][:2500].float()


#: Colours of successive point sets: grey for the reference, then red, blue.
_COLOURS = torch.tensor([[0.6, 0.6, 0.6], [0.85, 0.1, 0.1], [0.1, 0.3, 0.9]])


def scatter(
    point_sets: list[Tensor],
    size: int = SCATTER_SIZE,
    margin: float = 0.25,
    labels: Sequence[str] | None = None,
) -> Tensor:
    """Rasterise 2-D point sets onto one RGB canvas (3, size, size); later sets are drawn on top.

    The view is framed on the first (reference) set when it has points, so a few far-away
    samples cannot shrink the data to a dot; points outside the frame are drawn on its border.
    ``labels`` (one per set) adds a legend in the top-left corner: each set's colour and name.
    """
    if labels is not None and len(labels) != len(point_sets):
        raise ValueError(f"{len(labels)} labels for {len(point_sets)} point sets")
    framing = point_sets[0] if len(point_sets[0]) else torch.cat([p for p in point_sets if len(p)])
    everything = framing
    low = everything.min(dim=0).values
    high = everything.max(dim=0).values
    span = (high - low).max().clamp_min(1e-6)
    centre = (high + low) / 2
    low = centre - span * (0.5 + margin)
    scale = (size - 1) / (span * (1 + 2 * margin))
    canvas = torch.ones(3, size, size)
    for index, points in enumerate(point_sets):
        if not len(points):
            continue
        pixels = ((points - low) * scale).round().long().clamp(0, size - 1)
        colour = _COLOURS[index % len(_COLOURS)]
        for dx in (0, 1):  # 2x2 dots stay visible when the grid is viewed scaled down
            for dy in (0, 1):
                cols = (pixels[:, 0] + dx).clamp(0, size - 1)
                rows = (size - 1 - pixels[:, 1] - dy).clamp(0, size - 1)
                canvas[:, rows, cols] = colour[:, None]
    if labels:
        canvas = _legend(canvas, [str(label) for label in labels])
    return canvas


def _legend(canvas: Tensor, labels: list[str]) -> Tensor:
    """A white box in the top-left corner: a swatch of each set's colour and its label."""
    from PIL import Image, ImageDraw, ImageFont

    pixels = (canvas.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(pixels.copy(), mode="RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    pad, swatch, gap = 4, 8, 3
    line = max(swatch, *(draw.textbbox((0, 0), text, font=font)[3] for text in labels)) + gap
    width = max(draw.textlength(text, font=font) for text in labels)
    right = int(2 * pad + swatch + gap + width + pad)
    bottom = int(2 * pad + line * len(labels))
    draw.rectangle((pad, pad, right, bottom), fill=(255, 255, 255), outline=(0, 0, 0))
    for index, text in enumerate(labels):
        top = 2 * pad + index * line
        colour = tuple(round(float(v) * 255) for v in _COLOURS[index % len(_COLOURS)])
        draw.rectangle((2 * pad, top, 2 * pad + swatch, top + swatch), fill=colour)
        draw.text((2 * pad + swatch + gap, top - 1), text, fill=(0, 0, 0), font=font)
    drawn = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255.0
    out = canvas.clone()  # only the legend's box changes: the points keep their exact colours
    out[:, pad : bottom + 1, pad : right + 1] = drawn[:, pad : bottom + 1, pad : right + 1]
    return out
