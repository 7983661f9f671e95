"""The images a training run writes as it goes: samples from a fixed z and test reconstructions.

``images/samples_STEP.png`` and ``images/reconstructions_STEP.png`` (odd columns real, even
columns g(e(x))), drawn with :mod:`agekit.evaluation.visual`. For conditional data the samples are
k test
conditions x k fixed codes (one row per condition, so a row shows how much z changes the output)
and everything is drawn through ``data.display`` (RGB for colorization).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from agekit.components import DataSource, Encoder, Generator
from agekit.datasets.stream import test_batch, test_batch_conditioned
from agekit.evaluation.visual import save_pairs_grid, save_samples
from agekit.util.network_modes import network_mode

__all__ = ["write_snapshots"]


def write_snapshots(
    folder: Path,
    step: int,
    encoder: Encoder,
    generator: Generator,
    data: DataSource,
    fixed_z: Tensor,
    grid_size: int,
) -> dict[str, Path]:
    """Write the step's samples (from ``fixed_z``) and reconstructions of ``grid_size`` test
    samples into ``folder``, with both networks in eval mode (their modes come back after);
    return the files written, by name (``samples``, ``reconstructions``)."""
    tag = f"{step:08d}"
    written = {name: folder / f"{name}_{tag}.png" for name in ("samples", "reconstructions")}
    with network_mode([encoder, generator], "eval"):
        if data.condition_shape is not None:
            _write_conditional(written, encoder, generator, data, fixed_z, grid_size)
            return written
        save_samples(generator(fixed_z), written["samples"], data)
        test = test_batch(data, grid_size).to(fixed_z.device)
        recon = generator(encoder(test))
        save_pairs_grid(test, recon, written["reconstructions"], data)
    return written


def _write_conditional(
    written: dict[str, Path],
    encoder: Encoder,
    generator: Generator,
    data: DataSource,
    fixed_z: Tensor,
    grid_size: int,
) -> None:
    k = max(1, round(grid_size**0.5))
    x, condition = test_batch_conditioned(data, grid_size, seed=0)
    x, condition = x.to(fixed_z.device), condition.to(fixed_z.device)
    rows = condition[:k].repeat_interleave(k, dim=0)  # k <= grid_size = len(fixed_z)
    samples = generator(fixed_z[:k].repeat(k, 1), rows)
    save_samples(data.display(samples, rows), written["samples"], data)
    recon = generator(encoder(x, condition), condition)
    save_pairs_grid(
        data.display(x, condition),
        data.display(recon, condition),
        written["reconstructions"],
        data,
    )
