"""DDP on 2 gloo processes with the dcgan pair, whose batch norm makes each rank's output depend on
which samples share its batch.

Like tests/test_distributed.py, this file is started twice as a torchrun-like worker (RANK /
WORLD_SIZE / ... in the environment), so the trainer's own process group, data sharding, z
slicing, code gathering and DDP wrapping are under test, in float64. Two cases:

* synchronised batch norm: every batch-norm layer normalises with the statistics of the global
  batch, so 2 processes must equal 1 process on the global batch, up to summation order (the
  tolerances of tests/test_distributed.py; measured difference 8e-15 relative, while per-rank
  statistics change the gradients by 2x their norm here).
* per-rank batch norm (``distributed.sync_batchnorm = false``, the default): each rank normalises
  with its own half. That is not the global-batch computation, and the test says so in numbers:
  the ranks differ from the global-batch run by more than 1e-3 (relative), and they equal, to
  rtol 1e-9, one process whose batch-norm layers normalise each rank's contiguous half of the
  batch separately (the data and z slices are contiguous: rank r holds rows r*B/2 .. (r+1)*B/2).

Why the synchronised case does not set ``distributed.sync_batchnorm``: that flag converts the
layers to torch's ``nn.SyncBatchNorm``, whose kernels (``aten::batch_norm_stats`` and friends)
exist for CUDA only, and the trainer refuses it off CUDA (asserted below). With one process per
GPU it needs two GPUs. Here each worker gives the same layers (same Parameter objects and
buffers, class swapped in place before DDP wraps them on the first step) the computation
``nn.SyncBatchNorm`` does: mean and biased variance over every rank's samples, through
differentiable all-reduces, so that each rank's gradient also flows through the other ranks'
statistics, as SyncBatchNorm's backward does.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from test_distributed import (  # the tests folder is on sys.path in both roles
    in_float64,
    run_workers,
)
from torch import Tensor, nn

WORLD = 2
CASES = ("sync", "per-rank")


def _raw(sync_batchnorm: bool = False) -> dict[str, Any]:
    return {
        "name": "ddp-bn",
        "data": {"name": "digits", "batch_size": 16, "options": {"image_size": 32}},
        "prior": {"name": "sphere", "dim": 8},
        "divergence": {"name": "gaussian-kl"},
        "backbone": {"name": "dcgan", "options": {"width": 4}},
        "game": {"latent_weight": 1.0, "data_weight": 1.0, "fake_margin": math.inf},
        "distributed": {"sync_batchnorm": sync_batchnorm},
        "train": {
            "steps": 1,
            "device": "cpu",
            "log_every": 1,
            "checkpoint_every": 10**6,
            "image_every": 10**6,
            "grid_size": 4,
        },
    }


class _GlobalStatisticsBatchNorm(nn.BatchNorm2d):
    """What nn.SyncBatchNorm computes in training mode, on the CPU: the batch's statistics over
    every rank's samples (all ranks hold equally many), with the gradient flowing through them."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        count = x.numel() // x.shape[1] * WORLD
        mean = all_reduce(x.sum(dim=(0, 2, 3))) / count
        centred = x - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / count
        scale = torch.rsqrt(var + self.eps) * self.weight
        return centred * scale[None, :, None, None] + self.bias[None, :, None, None]


class _PerRankBatchNorm(nn.BatchNorm2d):
    """One process's stand-in for per-rank batch norm: each contiguous 1/WORLD of the batch is
    normalised with its own statistics (running statistics are not followed: nothing compared
    here reads them)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        return torch.cat(
            [
                F.batch_norm(part, None, None, self.weight, self.bias, True, 0.0, self.eps)
                for part in x.chunk(WORLD)
            ]
        )


def _swap_batchnorm(trainer: Any, kind: type[nn.BatchNorm2d]) -> int:
    # In place, before the first step: the optimisers and (later) DDP see the same Parameters.
    swapped = 0
    for net in (trainer.encoder, trainer.generator):
        for module in net.modules():
            if type(module) is nn.BatchNorm2d:
                module.__class__ = kind
                swapped += 1
    return swapped


def _one_step(run_dir: Path, batchnorm: type[nn.BatchNorm2d] | None) -> dict[str, Any]:
    from agekit.config import parse_config
    from agekit.training.trainer import Trainer

    trainer = Trainer(parse_config(_raw()), run_dir)
    assert trainer.stream.x_all is not None
    trainer.stream.x_all = trainer.stream.x_all.double()
    draw = trainer._sample_z
    trainer._sample_z = lambda n: draw(n).double()  # type: ignore[method-assign]
    trainer.write_images = lambda: None  # type: ignore[method-assign]
    layers = sum(isinstance(m, nn.BatchNorm2d) for m in trainer.encoder.modules()) + sum(
        isinstance(m, nn.BatchNorm2d) for m in trainer.generator.modules()
    )
    if batchnorm is not None:
        assert _swap_batchnorm(trainer, batchnorm) == layers
    record = trainer.train_step()
    nets = (("encoder", trainer.encoder), ("generator", trainer.generator))
    return {
        "layers": layers,
        "record": record,
        "params": {
            f"{net}.{name}": p.detach().clone()
            for net, module in nets
            for name, p in module.named_parameters()
        },
        "grads": {
            f"{net}.{name}": p.grad.detach().clone()
            for net, module in nets
            for name, p in module.named_parameters()
            if p.grad is not None
        },
    }


def _worker(out: Path) -> None:
    torch.set_default_dtype(torch.float64)
    rank = int(os.environ["RANK"])
    from agekit.config import parse_config
    from agekit.training import distributed
    from agekit.training.trainer import Trainer

    results: dict[str, Any] = {
        "sync": _one_step(out / f"sync-rank{rank}", _GlobalStatisticsBatchNorm),
        "per-rank": _one_step(out / f"per-rank-rank{rank}", None),
    }
    try:
        Trainer(parse_config(_raw(sync_batchnorm=True)), out / f"refused-rank{rank}")
    except distributed.DistributedError as exc:
        results["refusal"] = str(exc)
    torch.save(results, out / f"rank{rank}.pt")
    distributed.shutdown()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("ddp-bn")
    # The single-process references run here while the workers run (no WORLD_SIZE here).
    logs, codes, single = run_workers(
        [sys.executable, __file__, str(out)],
        120,
        "the DDP workers did not finish in 120 s",
        lambda: in_float64(
            lambda: {
                "global": _one_step(out / "global", None),
                "per-rank": _one_step(out / "per-rank-single", _PerRankBatchNorm),
            }
        ),
        WORLD,
    )
    for code, log in zip(codes, logs, strict=True):
        assert code == 0, log
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return single, ranks


def _assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == torch.float64
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12, msg=name)


def _assert_same_step(got: dict[str, Any], want: dict[str, Any]) -> None:
    for key in ("kl_real", "kl_fake_enc", "kl_fake", "data_rec", "latent_rec"):
        assert got["record"][key] == pytest.approx(want["record"][key], rel=1e-9), key
    _assert_close(got["grads"], want["grads"])
    _assert_close(got["params"], want["params"])


def _largest_relative_difference(got: dict[str, Tensor], want: dict[str, Tensor]) -> float:
    return max(float((got[n] - want[n]).norm() / want[n].norm()) for n in want)


def test_dcgan_has_batch_norm_in_both_networks(
    runs: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    single, _ = runs
    # 2 layers in the width-4 32 px encoder, 3 in the generator: what the two cases are about.
    assert single["global"]["layers"] >= 4
    assert len(single["global"]["grads"]) == len(single["global"]["params"])


def test_synchronised_batch_norm_equals_one_process_on_the_global_batch(
    runs: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    single, ranks = runs
    for rank in ranks:
        _assert_same_step(rank["sync"], single["global"])


def test_per_rank_batch_norm_normalises_each_half_by_itself(
    runs: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    single, ranks = runs
    for rank in ranks:
        # Not the global-batch step: each rank's statistics come from its own 8 samples ...
        difference = _largest_relative_difference(
            rank["per-rank"]["grads"], single["global"]["grads"]
        )
        assert difference > 1e-3
        # ... exactly the step of one process normalising each rank's half separately.
        _assert_same_step(rank["per-rank"], single["per-rank"])


def test_sync_batchnorm_flag_is_refused_on_the_cpu(
    runs: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, ranks = runs
    for rank in ranks:
        assert "sync_batchnorm needs CUDA" in rank.get("refusal", "not refused")


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
