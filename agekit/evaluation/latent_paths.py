"""Paths in the latent space."""

from __future__ import annotations

import torch
from torch import Tensor

from agekit.components import Prior


def interpolate(start: Tensor, end: Tensor, steps: int, prior: Prior) -> Tensor:
    """``steps`` codes from ``start`` to ``end``, shape (steps, M).

    Euclidean priors: the straight segment, at constant speed.

    Sphere priors: the shorter great-circle arc, at constant angular speed (slerp); ``start`` and
    ``end`` are first projected onto the sphere. The first and last rows are ``start`` and ``end``.

    * Antipodal ends (``end = -start``) are joined by every great circle through them, all of
      length pi, and slerp's formula degenerates to 0 / 0. The path then takes a definite one:
      the circle through ``start`` and the coordinate axis least aligned with it, e_j with
      j = argmin |start_j| (the first such j on a tie), made orthogonal to ``start``; the midpoint
      is that unit vector. The choice depends only on the pair, so it is reproducible, and
      ``interpolate(end, start)`` runs along the same circle backwards. Ends count as antipodal
      when ``end`` is within about sqrt(machine epsilon) of ``-start`` (1.5e-8 rad in float64,
      3.5e-4 rad in float32): that close, rounding rather than the codes would decide the plane,
      so it is chosen as above and the small remaining offset to ``end`` is spread linearly along
      the path.
    * Ends that coincide to that precision give a (nearly) constant path, blended linearly.
    """
    t = torch.linspace(0, 1, steps, device=start.device, dtype=start.dtype)[:, None]
    if prior.support != "sphere":
        return (1 - t) * start + t * end
    start, end = prior.project(torch.stack([start, end]))
    cos = (start * end).sum()
    # end = cos * start + sin * u with u a unit vector orthogonal to start: the arc's frame.
    across = end - cos * start
    across = across - (across * start).sum() * start  # again: exactly orthogonal near 0 and pi
    sin = across.norm()
    tiny = torch.finfo(start.dtype).eps ** 0.5
    if float(sin) > tiny:
        u = across / sin
    elif float(cos) > 0:  # the same point: no plane is needed
        u = torch.zeros_like(start)
    else:
        u = _orthogonal_axis(start)
    angle = torch.atan2(sin, cos)  # accurate near 0 and pi, unlike arccos
    arc = torch.cos(t * angle) * start + torch.sin(t * angle) * u
    # Where the arc ends short of ``end``: rounding only, unless the ends were (nearly) antipodal
    # or equal, where it is below ~2 * tiny. Spread along t, so that the path ends at ``end``.
    miss = end - (torch.cos(angle) * start + torch.sin(angle) * u)
    return prior.project(arc + t * miss)


def _orthogonal_axis(code: Tensor) -> Tensor:
    """The unit vector along e_j - code_j * code, j = argmin |code_j|: orthogonal to the unit
    ``code`` and well conditioned (|code_j| <= 1/sqrt(M), so its norm is >= sqrt(1 - 1/M))."""
    j = int(code.abs().argmin())
    axis = -code[j] * code
    axis[j] += 1
    return axis / axis.norm()
