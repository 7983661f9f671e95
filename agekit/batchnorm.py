"""Batch-norm statistics for evaluation, re-estimated from real data.

While training, the encoder's running statistics mix real and generated batches (the encoder sees
at least as many generated batches as real ones), so eval-mode codes of real images would be
normalised partly with the fakes' statistics. Before evaluation agekit replaces them: the
encoder's from real training images, the generator's twice, from prior samples and from the
codes of those images (see :class:`GeneratorStatistics`), each as an exact average over the
batches (momentum None), with no parameter touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from agekit.components import DataSource, Encoder, Generator, Prior
from agekit.metrics.classifier import load_split

__all__ = ["GeneratorStatistics", "reestimate_batchnorm"]


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


@dataclass
class GeneratorStatistics:
    """The generator's batch-norm buffers re-estimated for each kind of input it decodes.

    In training the generator normalises every batch with that batch's own statistics, and its
    batches are of two kinds: prior samples z (samples) and codes of real images e(x)
    (reconstructions). Where the two differ, one set of running statistics serves one use and
    spoils the other, so evaluation keeps both and loads the one a metric's use calls for.
    """

    prior: dict[str, Tensor]
    codes: dict[str, Tensor]

    def load(self, generator: Generator, inputs: Literal["prior", "codes"]) -> None:
        saved = self.prior if inputs == "prior" else self.codes
        with torch.no_grad():
            for name, buffer in generator.named_buffers():
                if name in saved:
                    buffer.copy_(saved[name])


def _buffers(module: nn.Module) -> dict[str, Tensor]:
    return {name: buffer.detach().clone() for name, buffer in module.named_buffers()}


def reestimate_batchnorm(
    encoder: Encoder,
    generator: Generator,
    prior: Prior,
    data: DataSource,
    n_images: int = 2048,
    batch_size: int = 256,
    seed: int = 0,
) -> tuple[dict[str, Any], GeneratorStatistics | None]:
    """Replace the encoder's batch-norm statistics with real images' and re-estimate the
    generator's for prior samples and for real codes; returns the protocol entry and the
    generator's two sets (None for conditional data, where nothing is re-estimated). The
    generator is left with the prior-sample statistics loaded."""
    if data.condition_shape is not None:
        return {
            "batchnorm": "running statistics from training (conditional data: not re-estimated)"
        }, None
    device = next(encoder.parameters()).device
    x, _ = load_split(data, "train", n_images, seed=seed)
    images = [batch.to(device) for batch in x.split(batch_size)]
    _reestimate(encoder, images)
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        codes = [encoder(batch) for batch in images]
    encoder.train(was_training)
    _reestimate(generator, codes)
    from_codes = _buffers(generator)
    z = prior.sample(x.shape[0], torch.Generator().manual_seed(seed))
    _reestimate(generator, [batch.to(device) for batch in z.split(batch_size)])
    statistics = GeneratorStatistics(prior=_buffers(generator), codes=from_codes)
    return {
        "batchnorm": "re-estimated before evaluation",
        "encoder_statistics": f"{x.shape[0]} train images, batches of {batch_size}",
        "generator_statistics": (
            f"{z.shape[0]} prior samples for metrics that decode z, codes e(x) of the same "
            f"{x.shape[0]} images for those that decode real codes (reconstruction)"
        ),
    }, statistics
