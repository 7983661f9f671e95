"""Multi-process training on PyTorch's own engine (``torchrun`` + DistributedDataParallel).

Everything that talks to :mod:`torch.distributed` lives here, so :mod:`agekit.games.age` stays pure
and a single-process run never touches a process group.

The contract, for N processes and a configured (global) batch B:

- rank r trains on rows [r B/N, (r + 1) B/N) of the global batch a single process would draw
  (same seeded data permutation, same seeded z), so the N slices concatenated are that batch;
- with ``distributed.divergence = "global"`` the codes are all-gathered with gradients before the
  divergence, so the divergence is the single-process value on the global batch.

Gradient scaling (why no factor appears anywhere). Let C_r be rank r's codes, C = [C_1..C_N],
and take one process's loss on the global batch, L = D(C) + (1/B) sum_i l_i. Rank r minimises
L_r = D(gather(C_r)) + (N/B) sum_{i in r} l_i (a mean over its B/N rows). DDP averages:
g = (1/N) sum_r dL_r/dtheta.

- Reconstruction: (1/N) sum_r (N/B) sum_{i in r} dl_i = (1/B) sum_i dl_i, the global mean.
- Divergence: every rank evaluates the same D(C). The backward of
  ``torch.distributed.nn.functional.all_gather`` reduce-scatters with SUM, so the gradient that
  reaches C_r on rank r is sum_{r'} dD/dC_r (one copy from each rank's D) = N dD/dC_r, and
  (1/N) sum_r N dD/dC_r dC_r/dtheta = dD/dtheta. The N from the summing backward and the 1/N
  of DDP's average cancel exactly: the divergence term must NOT be multiplied by N. (A gather
  that routed only the local copy's gradient back would need the factor N instead.)

``tests/test_distributed.py`` checks this numerically in float64 against one process.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


class DistributedError(RuntimeError):
    """A multi-process run is misconfigured (the message says how to fix it)."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a ``torchrun`` job."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect() -> DistributedContext | None:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK), or None for a single process.

    ``torchrun --nproc-per-node 1`` is treated as a single process: a group of one would only add
    collectives that change nothing.
    """
    world = os.environ.get("WORLD_SIZE")
    if world is None or int(world) <= 1:
        return None
    try:
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except KeyError:
        raise DistributedError(
            "WORLD_SIZE is set but RANK is not; start multi-process runs with torchrun"
        ) from None
    return DistributedContext(rank, int(world), local_rank)


def device_for(context: DistributedContext, device: torch.device) -> torch.device:
    """Each process owns one GPU (cuda:LOCAL_RANK); CPU processes share the CPU."""
    if device.type != "cuda":
        return device
    if context.local_rank >= torch.cuda.device_count():
        raise DistributedError(
            f"LOCAL_RANK {context.local_rank} but only {torch.cuda.device_count()} CUDA device(s); "
            "use at most one process per GPU (torchrun --nproc-per-node)"
        )
    return torch.device("cuda", context.local_rank)


def init_process_group(context: DistributedContext, device: torch.device) -> None:
    """NCCL for CUDA, gloo for the CPU; a group already initialised by the caller is kept."""
    if dist.is_initialized():
        if dist.get_world_size() != context.world_size:
            raise DistributedError(
                f"a process group of size {dist.get_world_size()} exists, "
                f"but WORLD_SIZE is {context.world_size}"
            )
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")


def local_batch_size(global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        raise DistributedError(
            f"data.batch_size = {global_batch} is the global batch and must be divisible by the "
            f"number of processes ({world_size}); use a multiple of {world_size}"
        )
    return global_batch // world_size


def convert_sync_batchnorm(networks: Sequence[nn.Module], device: torch.device) -> None:
    """``distributed.sync_batchnorm``: the networks' BatchNorm layers normalise over all ranks.

    Converts child BatchNorm layers in place (the backbones' roots are containers), keeping the
    same Parameter objects, so optimisers built afterwards see them. CUDA only.
    """
    if device.type != "cuda":
        raise DistributedError(
            "distributed.sync_batchnorm needs CUDA devices (PyTorch's SyncBatchNorm does "
            "not run on the CPU); use a backbone without batch norm on the CPU"
        )
    for net in networks:
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        assert converted is net


@dataclass(frozen=True)
class TrainingNetworks:
    """The modules one training step calls: the network it updates through its trained version
    (DDP-wrapped under torchrun, so that backward averages gradients over processes) and the
    frozen one bare; with ``train.compile`` each is compiled."""

    encoder: nn.Module
    generator: nn.Module
    trained_encoder: nn.Module
    trained_generator: nn.Module


def wrap_for_training(
    encoder: nn.Module,
    generator: nn.Module,
    device: torch.device,
    ddp: bool,
    compile: bool,
) -> TrainingNetworks:
    """Wrap the networks once for training: DDP when ``ddp``, then ``torch.compile`` on every
    distinct module when ``compile``. In a single process without compile these are the given
    modules themselves."""
    train_encoder, train_generator = encoder, generator
    if ddp:
        ids = [device.index] if device.type == "cuda" else None
        train_encoder = DistributedDataParallel(encoder, device_ids=ids)
        train_generator = DistributedDataParallel(generator, device_ids=ids)
    if compile:
        compiled: dict[int, nn.Module] = {}
        for module in (encoder, generator, train_encoder, train_generator):
            if id(module) not in compiled:
                compiled[id(module)] = torch.compile(module)  # type: ignore[assignment]
        encoder, generator = compiled[id(encoder)], compiled[id(generator)]
        train_encoder = compiled[id(train_encoder)]
        train_generator = compiled[id(train_generator)]
    return TrainingNetworks(encoder, generator, train_encoder, train_generator)


def gather_codes(local: Tensor) -> Tensor:
    """All ranks' codes, concatenated in rank order, with gradients flowing back to each rank's
    own slice (summed over the ranks' copies of the loss; see the module docstring)."""
    from torch.distributed.nn.functional import all_gather

    # Its deprecation notice points to a private module (_functional_collectives); this public
    # function is the documented autograd all-gather and works on gloo and NCCL alike.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed.nn.functional", FutureWarning)
        return torch.cat(all_gather(local.contiguous()), dim=0)


def code_gatherer(mode: str) -> Callable[[Tensor], Tensor] | None:
    """The game's ``gather`` hook for ``distributed.divergence``; None keeps codes local."""
    if mode == "global":
        return gather_codes
    if mode == "per-rank":
        return None
    raise DistributedError(f"distributed.divergence: unknown mode {mode!r}")


def mean_over_ranks(values: Tensor) -> Tensor:
    """The element-wise mean over ranks (a NaN on any rank makes the result NaN on every rank,
    which is what lets every process stop together on a diverged step)."""
    values = values.detach().clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / dist.get_world_size()


def mean_terms(terms: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each term's mean over ranks (detached): the global-batch value of per-sample terms, and
    the same numbers on every rank."""
    means = mean_over_ranks(torch.stack([t.detach() for t in terms.values()]))
    return dict(zip(terms, means, strict=True))


def max_over_ranks(value: int, device: torch.device) -> int:
    """The largest of the ranks' values, on every rank."""
    tensor = torch.tensor([float(value)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any: decisions that end the loop must agree, or the
    ranks that carry on wait forever in the next collective."""
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
