"""Batch-norm statistics re-estimated from real data, as evaluation and every consumer of a trained
model use them (agekit.evaluation.batchnorm)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

import agekit
from agekit.cli import main
from agekit.components import EvaluationContext, Metric, MetricResult
from agekit.config import Component, parse_config
from agekit.datasets import stream
from agekit.evaluation import inference, visual
from agekit.evaluation.batchnorm import estimate_statistics, reestimate_batchnorm
from agekit.evaluation.scoring import evaluate
from agekit.metrics.classifier import generate_samples
from agekit.model import STATISTICS_KEY, build_model, load_trained, use_evaluation_statistics
from agekit.registry import REGISTRY
from agekit.runs import checkpoint as ckpt
from agekit.training.trainer import Trainer
from agekit.util.network_modes import network_mode


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


# One protocol for every consumer: stored in checkpoints, loaded by evaluation, the commands and
# agekit.evaluation.inference
# ------------------------------------------------------------------------------
def _bn_raw(steps: int = 10) -> dict[str, Any]:
    return {
        "name": "tiny-bn",
        "data": {"name": "ring8", "batch_size": 32, "options": {"size": 512, "test_size": 64}},
        "prior": {"name": "sphere", "dim": 4},
        "backbone": {"name": "mlp", "options": {"hidden": 16, "depth": 2, "batch_norm": True}},
        "train": {
            "steps": steps,
            "checkpoint_every": steps,
            "image_every": 10**6,
            "log_every": steps,
            "device": "cpu",
            "seed": 0,
        },
    }


@pytest.fixture(scope="module")
def trained_bn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("bn") / "run"
    Trainer(parse_config(_bn_raw()), run).fit()
    return run


class _Decoded(Metric):
    """What evaluation decodes, kept in ``decoded`` by input: g(z) for the seed's z (the prior's
    statistics) or g(e(x)) of the commands' test images (the codes' statistics). A result holds
    numbers only, so the tensors travel beside it."""

    decoded: ClassVar[dict[str, Tensor]] = {}

    def __init__(self, n: int = 16, inputs: str = "prior") -> None:
        self.n = n
        self.inputs = inputs

    def __call__(self, context: EvaluationContext) -> MetricResult:
        if self.inputs == "prior":
            self.decoded["prior"] = generate_samples(context, self.n)
        else:
            x = stream.test_batch(context.data, self.n)
            with network_mode([context.encoder, context.generator], "eval"):
                self.decoded["codes"] = context.generator(context.encoder(x)).float().cpu()
        return MetricResult(values={}, protocol={"n": self.n, "inputs": self.inputs})


class _DecodedCodes(_Decoded):
    generator_inputs = "codes"

    def __init__(self, n: int = 16) -> None:
        super().__init__(n, "codes")


def test_a_cli_sample_is_the_sample_evaluation_scores(
    trained_bn: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: dict[str, Tensor] = {}
    monkeypatch.setattr(
        visual, "save_samples", lambda samples, path, data: drawn.update(sample=samples)
    )
    monkeypatch.setattr(
        visual, "save_pairs_grid", lambda x, recon, path, data: drawn.update(recon=recon)
    )
    png = str(trained_bn / "drawn.png")
    assert main(["sample", str(trained_bn), "--n", "16", "--seed", "3", "--device", "cpu",
                 "--out", png]) == 0  # fmt: skip
    assert main(["reconstruct", str(trained_bn), "--n", "16", "--device", "cpu", "--out", png]) == 0

    _Decoded.decoded.clear()
    REGISTRY.register("metric", "test-decoded-prior", _Decoded)
    REGISTRY.register("metric", "test-decoded-codes", _DecodedCodes)
    try:
        record = evaluate(
            trained_bn,
            [Component(name="test-decoded-prior"), Component(name="test-decoded-codes")],
            seed=3,
            device="cpu",
        )
    finally:
        REGISTRY.unregister("metric", "test-decoded-prior")
        REGISTRY.unregister("metric", "test-decoded-codes")
    # The same z, networks and statistics on the same device and batch: bit for bit.
    assert torch.equal(drawn["sample"], _Decoded.decoded["prior"])
    assert torch.equal(drawn["recon"], _Decoded.decoded["codes"])
    assert record["metrics"]["test-decoded-codes"] == {"protocol": {"n": 16, "inputs": "codes"}}
    assert record["batchnorm"]["source"] == "stored in the checkpoint when it was written"

    # agekit.evaluation.inference, from Python, draws them too.
    model, _ = load_trained(trained_bn, "cpu")
    assert torch.equal(inference.sample(model, 16, seed=3), drawn["sample"])


def test_a_checkpoint_stores_the_statistics_and_writing_it_changes_nothing(
    tmp_path: Path,
) -> None:
    trainer = Trainer(parse_config(_bn_raw()), tmp_path / "run")
    for _ in range(3):
        trainer.train_step()
        trainer.step += 1
    buffers = {
        f"{net}.{name}": value.clone()
        for net, module in (("encoder", trainer.encoder), ("generator", trainer.generator))
        for name, value in module.named_buffers()
    }
    momenta = [m.momentum for m in trainer.generator.modules() if isinstance(m, _BatchNorm)]
    rng = torch.get_rng_state()
    path = trainer.save_checkpoint()
    after = {
        f"{net}.{name}": value
        for net, module in (("encoder", trainer.encoder), ("generator", trainer.generator))
        for name, value in module.named_buffers()
    }
    assert buffers.keys() == after.keys()
    assert all(torch.equal(buffers[key], after[key]) for key in buffers)
    assert torch.equal(torch.get_rng_state(), rng)
    assert momenta == [m.momentum for m in trainer.generator.modules() if isinstance(m, _BatchNorm)]
    assert trainer.encoder.training and trainer.generator.training

    stored = ckpt.load(path)[STATISTICS_KEY]
    assert stored["protocol"]["encoder_statistics"] == "512 train images, batches of 256, seed 0"
    # The loaded networks re-estimated in place with the same protocol give the same numbers.
    model, _ = load_trained(path, "cpu", batchnorm="running")
    reestimate_batchnorm(model.pair.encoder, model.pair.generator, model.prior, model.data)
    for name, value in model.pair.encoder.named_buffers():
        assert torch.equal(stored["encoder"][name], value), name
    for name, value in model.pair.generator.named_buffers():
        assert torch.equal(stored["generator_prior"][name], value), name
    running = dict(trainer.encoder.named_buffers())["net.1.running_mean"]
    assert not torch.equal(stored["encoder"]["net.1.running_mean"], running)


def test_a_checkpoint_without_statistics_gets_them_estimated_with_a_warning(
    trained_bn: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = ckpt.latest(trained_bn / "checkpoints")
    assert source is not None
    state = ckpt.load(source)
    stored = state.pop(STATISTICS_KEY)
    old = tmp_path / "step_00000010.pt"
    ckpt.save_atomic(state, old)
    with caplog.at_level(logging.WARNING, logger="agekit"):
        model, _ = load_trained(old, "cpu")
    assert f"{old} holds no batch-norm statistics for evaluation" in caplog.text
    assert model.statistics is not None
    assert model.statistics.protocol["source"] == "estimated when the model was loaded"
    for name, value in stored["generator_codes"].items():
        assert torch.equal(model.statistics.generator.codes[name], value), name
    for name, value in stored["encoder"].items():
        assert torch.equal(model.statistics.encoder[name], value), name

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agekit"):
        load_trained(source, "cpu")
    assert "batch-norm" not in caplog.text  # a checkpoint that stores them: no note


def test_conditional_models_keep_their_running_statistics() -> None:
    raw = {
        "name": "cond",
        "data": {
            "name": "colour-crops",
            "batch_size": 8,
            "options": {"image_size": 16, "crops_per_image": 2},
        },
        "prior": {"name": "sphere", "dim": 3},
        "backbone": {
            "name": "cond-resnet",
            "options": {"generator_width": 4, "encoder_width": 4, "blocks": 1},
        },
        "train": {"steps": 1, "device": "cpu"},
    }
    model = build_model(parse_config(raw), torch.device("cpu"))
    before = {name: value.clone() for name, value in model.pair.generator.named_buffers()}
    assert use_evaluation_statistics(model) is None and model.statistics is None
    for name, value in model.pair.generator.named_buffers():
        assert torch.equal(before[name], value), name
    assert (
        estimate_statistics(model.pair.encoder, model.pair.generator, model.prior, model.data)
        is None
    )


def test_synchronised_batch_norm_is_estimated_without_collectives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Under torchrun only rank 0 writes checkpoints: a SyncBatchNorm forward there would wait for
    # the other ranks forever, so the estimate must run per-process layers with the same numbers.
    model = build_model(parse_config(_bn_raw()), torch.device("cpu"))
    plain = estimate_statistics(model.pair.encoder, model.pair.generator, model.prior, model.data)
    for net in (model.pair.encoder, model.pair.generator):
        assert torch.nn.SyncBatchNorm.convert_sync_batchnorm(net) is net

    def collective(*args: Any, **kwargs: Any) -> Tensor:
        raise AssertionError("SyncBatchNorm.forward ran")

    monkeypatch.setattr(torch.nn.SyncBatchNorm, "forward", collective)
    synced = estimate_statistics(model.pair.encoder, model.pair.generator, model.prior, model.data)
    assert plain is not None and synced is not None
    for name, value in plain.encoder.items():
        assert torch.equal(synced.encoder[name], value), name
    for name, value in plain.generator.prior.items():
        assert torch.equal(synced.generator.prior[name], value), name
    assert all(
        type(m) is torch.nn.SyncBatchNorm
        for m in model.pair.encoder.modules()
        if isinstance(m, _BatchNorm)
    )
