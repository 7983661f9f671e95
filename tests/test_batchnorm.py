"""Batch-norm statistics re-estimated from real data before evaluation (agekit.batchnorm)."""

from __future__ import annotations

import torch

import agekit
from agekit.batchnorm import reestimate_batchnorm


def test_encoder_statistics_come_from_real_images_only() -> None:
    torch.manual_seed(0)
    data = agekit.create("dataset", "ring8")
    prior = agekit.create("prior", "sphere", dim=4)
    backbone = agekit.create("backbone", "mlp", hidden=8, depth=2, batch_norm=True)
    pair = backbone.build(data.shape, 4, prior)
    encoder, generator = pair.encoder, pair.generator
    first = next(m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm1d))
    # Running statistics as training leaves them: polluted by inputs far from the data.
    encoder.train()
    with torch.no_grad():
        encoder(torch.full((64, *data.shape), 50.0))
    encoder.eval()
    x, _ = data.tensors("train")
    x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:300]]
    protocol, statistics = reestimate_batchnorm(
        encoder, generator, prior, data, n_images=300, batch_size=64
    )
    # The first batch norm sees the first linear layer's output; its re-estimated mean is the
    # mean of that output over exactly the 300 images (an equal-weight average over batches of
    # 64, 64, 64, 64, 44 is not the plain mean, so compare with what cumulative averaging gives).
    linear = next(m for m in encoder.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        batch_means = torch.stack([linear(b).mean(0) for b in x.split(64)])
    # float32 networks, as evaluated; the default float32 tolerance (1.3e-6 relative) holds.
    torch.testing.assert_close(first.running_mean, batch_means.mean(0))
    assert first.momentum == 0.1 and not encoder.training  # settings restored
    assert "300 train images" in protocol["encoder_statistics"]

    # The generator: one set of statistics for prior samples, one for the codes of the same
    # images (the encoder as re-estimated, in eval mode), loaded on demand.
    assert statistics is not None
    gen_linear = next(m for m in generator.modules() if isinstance(m, torch.nn.Linear))
    gen_norm = next(m for m in generator.modules() if isinstance(m, torch.nn.BatchNorm1d))
    with torch.no_grad():
        code_means = torch.stack([gen_linear(encoder(b)).mean(0) for b in x.split(64)])
    statistics.load(generator, "codes")
    torch.testing.assert_close(gen_norm.running_mean, code_means.mean(0))
    statistics.load(generator, "prior")
    assert not torch.allclose(gen_norm.running_mean, code_means.mean(0))
