"""Batch-norm statistics for evaluation, re-estimated from real data.

While training, the encoder's running statistics mix real and generated batches (the encoder sees
at least as many generated batches as real ones), so eval-mode codes of real images would be
normalised partly with the fakes' statistics. Before evaluation agekit replaces them: the
encoder's from real training images, the generator's from its inputs at sampling time (prior
samples), each as an exact average over the batches (momentum None), with no parameter touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from agekit.components import DataSource, Encoder, Generator, Prior

__all__ = ["has_batchnorm", "reestimate_batchnorm"]


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in module.modules())


def _reestimate(module: nn.Module, batches: Sequence[Tensor]) -> None:
    layers = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    if not layers:
        return
    momenta = [m.momentum for m in layers]
    was_training = module.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch weighs the same
    module.train()
    try:
        with torch.no_grad():
            for inputs in batches:
                module(inputs)
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        module.train(was_training)


def reestimate_batchnorm(
    encoder: Encoder,
    generator: Generator,
    prior: Prior,
    data: DataSource,
    n_images: int = 2048,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Replace both networks' batch-norm running statistics; returns the protocol entry."""
    from agekit.metrics.classifier import load_split  # the metrics' data plumbing

    if data.condition_shape is not None:
        return {
            "batchnorm": "running statistics from training (conditional data: not re-estimated)"
        }
    device = next(encoder.parameters()).device
    x, _ = load_split(data, "train", n_images, seed=seed)
    _reestimate(encoder, [batch.to(device) for batch in x.split(batch_size)])
    z = prior.sample(x.shape[0], torch.Generator().manual_seed(seed))
    _reestimate(generator, [batch.to(device) for batch in z.split(batch_size)])
    return {
        "batchnorm": "re-estimated before evaluation",
        "encoder_statistics": f"{x.shape[0]} train images, batches of {batch_size}",
        "generator_statistics": f"{z.shape[0]} prior samples, batches of {batch_size}",
    }
