"""Batch-norm statistics for evaluation and inference, re-estimated from real data.

While training, the encoder's running statistics mix real and generated batches (the encoder sees
at least as many generated batches as real ones), so eval-mode codes of real images would be
normalised partly with the fakes' statistics. agekit replaces them wherever a trained model is
used: the encoder's from real training images, the generator's twice, from prior samples and from
the codes of those images (see :class:`GeneratorStatistics`), each as an exact average over the
batches (momentum None), with no parameter touched.

:func:`estimate_statistics` computes them with one fixed protocol (:data:`STATISTICS_IMAGES`
images drawn with :data:`STATISTICS_SEED`, batches of :data:`STATISTICS_BATCH`) on copies of the
networks; the trainer stores the result in every checkpoint, and :func:`agekit.model.load_trained`
loads it for evaluation, the image commands and :mod:`agekit.evaluation.inference` alike, so that
what a user
samples is what evaluation scores.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from agekit.components import DataSource, Encoder, Generator, Prior
from agekit.metrics.classifier import load_split

__all__ = [
    "CONDITIONAL_PROTOCOL",
    "STATISTICS_BATCH",
    "STATISTICS_IMAGES",
    "STATISTICS_SEED",
    "EvaluationStatistics",
    "GeneratorStatistics",
    "estimate_statistics",
    "reestimate_batchnorm",
]

#: The protocol entry of a conditional model, whose running statistics are kept.
CONDITIONAL_PROTOCOL = "running statistics from training (conditional data: not re-estimated)"
#: Real training images (a seeded random subset when the split is larger) and prior samples the
#: statistics are estimated from.
STATISTICS_IMAGES = 2048
#: Batch size of the estimation; each batch weighs the same in the average.
STATISTICS_BATCH = 256
#: Seed of the image subset and of the prior samples. Fixed, not the evaluation's seed: the
#: statistics belong to the checkpoint, so every consumer and every evaluation seed sees the same.
STATISTICS_SEED = 0


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


def _buffers(module: nn.Module) -> dict[str, Tensor]:
    return {name: buffer.detach().clone() for name, buffer in module.named_buffers()}


def _load_buffers(module: nn.Module, saved: Mapping[str, Tensor]) -> None:
    with torch.no_grad():
        for name, buffer in module.named_buffers():
            if name in saved:
                buffer.copy_(saved[name])


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
        _load_buffers(generator, self.prior if inputs == "prior" else self.codes)


@dataclass
class EvaluationStatistics:
    """Every batch-norm buffer a trained pair is evaluated and sampled with: the encoder's, the
    generator's two sets, and the protocol entry that says how they were estimated."""

    encoder: dict[str, Tensor]
    generator: GeneratorStatistics
    protocol: dict[str, Any]

    def load(
        self, encoder: Encoder, generator: Generator, inputs: Literal["prior", "codes"] = "prior"
    ) -> None:
        """Copy the statistics into the networks' buffers, the generator's set for ``inputs``."""
        _load_buffers(encoder, self.encoder)
        self.generator.load(generator, inputs)

    def to_state(self) -> dict[str, Any]:
        """CPU tensors and plain values, as a checkpoint (``weights_only``) holds them."""

        def cpu(buffers: dict[str, Tensor]) -> dict[str, Tensor]:
            return {name: value.cpu() for name, value in buffers.items()}

        return {
            "encoder": cpu(self.encoder),
            "generator_prior": cpu(self.generator.prior),
            "generator_codes": cpu(self.generator.codes),
            "protocol": dict(self.protocol),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> EvaluationStatistics:
        return cls(
            encoder=dict(state["encoder"]),
            generator=GeneratorStatistics(
                prior=dict(state["generator_prior"]), codes=dict(state["generator_codes"])
            ),
            protocol=dict(state["protocol"]),
        )


def reestimate_batchnorm(
    encoder: Encoder,
    generator: Generator,
    prior: Prior,
    data: DataSource,
    n_images: int = STATISTICS_IMAGES,
    batch_size: int = STATISTICS_BATCH,
    seed: int = STATISTICS_SEED,
) -> tuple[dict[str, Any], GeneratorStatistics | None]:
    """Replace the encoder's batch-norm statistics with real images' and re-estimate the
    generator's for prior samples and for real codes, in place; returns the protocol entry and
    the generator's two sets (None for conditional data, where nothing is re-estimated). The
    generator is left with the prior-sample statistics loaded. :func:`estimate_statistics` does
    the same on copies."""
    if data.condition_shape is not None:
        return {"batchnorm": CONDITIONAL_PROTOCOL}, None
    # In the networks' own dtype too: a run may train in float64 on float32 data.
    parameter = next(encoder.parameters())
    device, dtype = parameter.device, parameter.dtype
    x, _ = load_split(data, "train", n_images, seed=seed)
    images = [batch.to(device, dtype) for batch in x.split(batch_size)]
    _reestimate(encoder, images)
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        codes = [encoder(batch) for batch in images]
    encoder.train(was_training)
    _reestimate(generator, codes)
    from_codes = _buffers(generator)
    z = prior.sample(x.shape[0], torch.Generator().manual_seed(seed))
    _reestimate(generator, [batch.to(device, dtype) for batch in z.split(batch_size)])
    statistics = GeneratorStatistics(prior=_buffers(generator), codes=from_codes)
    return {
        "batchnorm": "re-estimated on real data",
        "encoder_statistics": f"{x.shape[0]} train images, batches of {batch_size}, seed {seed}",
        "generator_statistics": (
            f"{z.shape[0]} prior samples for metrics that decode z, codes e(x) of the same "
            f"{x.shape[0]} images for those that decode real codes (reconstruction)"
        ),
    }, statistics


class _LocalBatchNorm(_BatchNorm):
    """Batch norm over this process's batch only, for any input rank (as SyncBatchNorm accepts)."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


def _local_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose batch norms never wait for other processes: under torchrun
    only rank 0 writes checkpoints, so a SyncBatchNorm there would block on the idle ranks."""
    copied = copy.deepcopy(module)
    for layer in copied.modules():
        if isinstance(layer, nn.SyncBatchNorm):
            # Same buffers and parameters; only the forward changes to the per-process one.
            layer.__class__ = _LocalBatchNorm  # type: ignore[assignment]
    return copied


def estimate_statistics(
    encoder: Encoder,
    generator: Generator,
    prior: Prior,
    data: DataSource,
    n_images: int = STATISTICS_IMAGES,
    batch_size: int = STATISTICS_BATCH,
    seed: int = STATISTICS_SEED,
) -> EvaluationStatistics | None:
    """The statistics :func:`reestimate_batchnorm` gives, estimated on copies of the networks:
    their buffers, modes and torch's random state stay as they were, so a training run can call
    this between steps without changing what it does next. None for conditional data."""
    if data.condition_shape is not None:
        return None
    device = next(encoder.parameters()).device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        encoder_copy = _local_copy(encoder)
        generator_copy = _local_copy(generator)
        protocol, statistics = reestimate_batchnorm(
            encoder_copy,  # type: ignore[arg-type]  # a copy of the encoder
            generator_copy,  # type: ignore[arg-type]
            prior,
            data,
            n_images,
            batch_size,
            seed,
        )
    assert statistics is not None  # unconditional data
    return EvaluationStatistics(_buffers(encoder_copy), statistics, protocol)
