"""DDP on 2 gloo processes equals one process on the concatenated batch.

The test starts this file twice as a torchrun-like worker (RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT in the environment, the way torchrun starts `python -m agekit train`),
so the trainer's own detection, process-group set-up, data sharding, z slicing, code gathering
and DDP wrapping are what is under test.

Everything runs in float64 (default dtype; the float32 data and z are cast), so the only
differences between the two computations are summation orders: DDP sums two half-batch gradients
where one process sums one full batch, and the gathered codes are concatenated from two buffers.
Each such reordering costs a few ulp (~1e-16 relative) per operation; a few hundred operations
deep that stays below 1e-12. The tolerances (rtol 1e-9) leave a wide margin for that and are
still ~8 orders of magnitude below any real error: a wrong gradient factor (e.g. scaling the
divergence by the world size), a wrong slice of the data or of z, or a divergence computed on
the local half only all change values at order 1e-3 or more.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch

WORLD = 2
T = TypeVar("T")
DIVERGENCES = ("gaussian-kl", "kozachenko-leonenko")


def _raw(divergence: str, steps: int = 1) -> dict[str, Any]:
    return {
        "name": "ddp",
        "data": {"name": "ring8", "batch_size": 32, "options": {"size": 512, "test_size": 64}},
        "prior": {"name": "sphere", "dim": 4},
        "divergence": {"name": divergence},
        # No batch norm: without SyncBatchNorm each rank would normalise with its own half.
        "backbone": {"name": "mlp", "options": {"hidden": 16, "depth": 2}},
        # Small reconstruction weights and no margin, so the divergence dominates the gradients
        # and an error in its scaling cannot hide behind the reconstruction terms.
        "game": {"latent_weight": 1.0, "data_weight": 1.0, "fake_margin": math.inf},
        "train": {
            "steps": steps,
            "device": "cpu",
            "log_every": 1,
            "checkpoint_every": 2,
            "image_every": 10**6,
            "grid_size": 4,
        },
    }


def _float64_trainer(raw: dict[str, Any], run_dir: Path) -> Any:
    from agekit.config import parse_config
    from agekit.training.trainer import Trainer

    trainer = Trainer(parse_config(raw), run_dir)
    assert trainer.stream.x_all is not None
    trainer.stream.x_all = trainer.stream.x_all.double()
    draw = trainer._sample_z
    trainer._sample_z = lambda n: draw(n).double()  # type: ignore[method-assign]
    trainer.write_images = lambda: None  # type: ignore[method-assign]  # float32 test images
    return trainer


def _one_step(raw: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    trainer = _float64_trainer(raw, run_dir)
    record = trainer.train_step()
    return {
        "record": record,
        "params": {
            f"{net}.{name}": p.detach().clone()
            for net, module in (("encoder", trainer.encoder), ("generator", trainer.generator))
            for name, p in module.named_parameters()
        },
        # After a step the encoder holds its encoder-step gradient and the generator the one of
        # its last generator step (both averaged over ranks by DDP).
        "grads": {
            f"{net}.{name}": p.grad.detach().clone()
            for net, module in (("encoder", trainer.encoder), ("generator", trainer.generator))
            for name, p in module.named_parameters()
            if p.grad is not None
        },
    }


def _final_params(raw: dict[str, Any], run_dir: Path) -> dict[str, torch.Tensor]:
    trainer = _float64_trainer(raw, run_dir)
    trainer.fit()
    return {k: v.clone() for k, v in trainer.encoder.state_dict().items()} | {
        f"g.{k}": v.clone() for k, v in trainer.generator.state_dict().items()
    }


def _compute(out: Path, label: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for divergence in DIVERGENCES:
        results[divergence] = _one_step(_raw(divergence), out / f"step-{divergence}-{label}")
    results["fit"] = _final_params(_raw("kozachenko-leonenko", steps=3), out / f"fit-{label}")
    return results


def _worker(out: Path) -> None:
    torch.set_default_dtype(torch.float64)
    rank = int(os.environ["RANK"])
    results = _compute(out, f"rank{rank}")
    torch.save(results, out / f"rank{rank}.pt")

    from agekit.training import distributed

    distributed.shutdown()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_workers(command: list[str], world: int = WORLD) -> list[subprocess.Popen[str]]:
    """``world`` processes running ``command``, environment as torchrun sets it, one thread each."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    return procs


def run_workers(
    command: list[str],
    timeout: float,
    hung: str,
    alongside: Callable[[], T],
    world: int = WORLD,
) -> tuple[list[str], list[int], T]:
    """Start the workers, run ``alongside()`` here while they run, then wait for them.

    Returns their logs, their exit codes and what ``alongside`` returned; a worker that outlives
    ``timeout`` fails the test with ``hung`` and is killed.
    """
    procs = start_workers(command, world)
    try:
        result = alongside()
        logs = [proc.communicate(timeout=timeout)[0] for proc in procs]
    except subprocess.TimeoutExpired:
        pytest.fail(hung)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return logs, [proc.returncode for proc in procs], result


def in_float64(compute: Callable[[], T]) -> T:
    """``compute()`` with float64 as torch's default dtype, restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return compute()
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Any], list[dict[str, Any]], Path]:
    out = tmp_path_factory.mktemp("ddp")
    # The single-process reference runs here while the workers run (a group of one is not
    # created: this process has no WORLD_SIZE).
    logs, codes, single = run_workers(
        [sys.executable, __file__, str(out)],
        120,
        "the DDP workers did not finish in 120 s",
        lambda: in_float64(lambda: _compute(out, "single")),
    )
    for code, log in zip(codes, logs, strict=True):
        assert code == 0, log
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return single, ranks, out


def _assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == torch.float64
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_one_step_equals_single_process_on_the_global_batch(
    runs: tuple[dict[str, Any], list[dict[str, Any]], Path], divergence: str
) -> None:
    single, ranks, _ = runs
    want = single[divergence]
    for rank in ranks:
        got = rank[divergence]
        for key in ("kl_real", "kl_fake_enc", "kl_fake", "data_rec", "latent_rec"):
            assert got["record"][key] == pytest.approx(want["record"][key], rel=1e-9), key
        _assert_close(got["grads"], want["grads"])
        _assert_close(got["params"], want["params"])
    # Both halves of the divergence gradient matter here: the step moved every parameter.
    assert len(want["grads"]) == len(want["params"])


def test_three_iterations_of_fit_match_and_only_rank_0_writes(
    runs: tuple[dict[str, Any], list[dict[str, Any]], Path],
) -> None:
    single, ranks, out = runs
    for rank in ranks:
        _assert_close(rank["fit"], single["fit"])
    written = out / "fit-rank0"
    assert [p.name for p in sorted((written / "checkpoints").iterdir())] == [
        "step_00000002.pt",
        "step_00000003.pt",
    ]
    records = [json.loads(line) for line in (written / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert not (out / "fit-rank1").exists()
    assert not (out / "step-gaussian-kl-rank1").exists()


def test_batch_must_divide_over_processes() -> None:
    from agekit.training.distributed import DistributedError, local_batch_size

    assert local_batch_size(64, 4) == 16
    with pytest.raises(DistributedError, match="divisible by the number of processes"):
        local_batch_size(30, 4)


_DIVERGING_RANK = """
import json, os, sys
import torch
from agekit.training import distributed
from agekit.config import parse_config
from agekit.training.trainer import Trainer, TrainingDiverged

trainer = Trainer(parse_config(json.loads(sys.argv[1])), sys.argv[2])
step = trainer.train_step

def poisoned_on_rank_1():
    if trainer.step == 3 and trainer.rank == 1:  # this rank's codes only become NaN
        with torch.no_grad():
            next(trainer.encoder.parameters()).fill_(float("nan"))
    return step()

trainer.train_step = poisoned_on_rank_1
try:
    trainer.fit()
except TrainingDiverged as exc:
    print(f"diverged: {exc}", flush=True)
    # Leave without tearing gloo down: the ranks stop at the same call, and whichever destroys
    # its group first can make gloo abort the other's teardown (seen once: rank 0 exited -6 after
    # printing this message), which is not what this test is about.
    os._exit(3)
distributed.shutdown()
"""


def test_per_rank_divergence_nan_on_one_rank_stops_every_rank(tmp_path: Path) -> None:
    # With distributed.divergence = "per-rank" each rank checks its own codes; rank 1's NaN must
    # stop rank 0 too (at the same call), not leave it waiting in DDP's gradient all-reduce.
    raw = _raw("gaussian-kl", steps=10) | {"distributed": {"divergence": "per-rank"}}
    command = [sys.executable, "-c", _DIVERGING_RANK, json.dumps(raw), str(tmp_path / "run")]
    hung = "a rank hung after another rank's codes became NaN"
    logs, codes, _ = run_workers(command, 60, hung, lambda: None)
    assert codes == [3, 3], logs
    for log in logs:
        assert "diverged: step 4: non-finite value in the codes entering kl_fake_enc" in log, log


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
