"""Paths in the latent space."""

from __future__ import annotations

import torch
from torch import Tensor

from agekit.components import Prior


def interpolate(start: Tensor, end: Tensor, steps: int, prior: Prior) -> Tensor:
    """``steps`` codes from ``start`` to ``end``: along the great circle on the sphere, straight
    otherwise. Shape (steps, M)."""
    t = torch.linspace(0, 1, steps, device=start.device, dtype=start.dtype)[:, None]
    if prior.support != "sphere":
        return (1 - t) * start + t * end
    cos = torch.clamp((start * end).sum(), -1.0, 1.0)
    angle = torch.arccos(cos)
    if float(angle) < 1e-6:  # the same point: every step is that point
        return start.expand(steps, -1).clone()
    # Antipodal ends have no unique great circle; slerp then picks the one the rounding gives.
    sin = torch.sin(angle)
    path = (torch.sin((1 - t) * angle) * start + torch.sin(t * angle) * end) / sin
    return prior.project(path)
