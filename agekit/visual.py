"""PNG grids of samples and reconstructions (torchvision's ``make_grid``/``save_image``)."""

from __future__ import annotations

from pathlib import Path

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
        save_image(scatter([reference, samples.float().cpu()]), path)
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
        save_image(scatter([real.cpu(), reconstruction.float().cpu()]), path)
        return
    raise ValueError(f"cannot draw data of shape {tuple(real.shape)}")


def _reference_points(data: DataSource) -> Tensor:
    tensors = data.tensors("test")
    if tensors is None:
        return torch.empty(0, 2)
    return tensors[0][:2500].float()


#: Colours of successive point sets: grey for the reference, then red, blue.
_COLOURS = torch.tensor([[0.6, 0.6, 0.6], [0.85, 0.1, 0.1], [0.1, 0.3, 0.9]])


def scatter(point_sets: list[Tensor], size: int = SCATTER_SIZE, margin: float = 0.25) -> Tensor:
    """Rasterise 2-D point sets onto one RGB canvas (3, size, size); later sets are drawn on top.

    The view is framed on the first (reference) set when it has points, so a few far-away
    samples cannot shrink the data to a dot; points outside the frame are drawn on its border.
    """
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
    return canvas
