"""Batches for training and fixed test batches for images, beside the data sets they draw from.

:class:`BatchStream` walks seeded epoch permutations with a resumable position, sharded over the
processes of a multi-process run; :func:`test_batch` and :func:`test_batch_conditioned` draw the
same test samples every time a run writes a grid or a command reconstructs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from agekit.components import DataSource
from agekit.training import distributed

__all__ = ["BatchStream", "test_batch", "test_batch_conditioned"]


class BatchStream:
    """Seeded epoch permutations with a resumable position (identical order after a resume).

    ``batch_size`` is the global batch. With ``world_size`` N > 1 every process walks the same
    permutation and returns only its rank's N-th of each global batch, so the N processes
    together see exactly the batches one process would, and the stream's state (the same on
    every rank) resumes under any N that divides the batch.
    """

    def __init__(
        self,
        data: DataSource,
        batch_size: int,
        device: torch.device,
        seed: int,
        workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.batch_size = batch_size
        self.local_batch = distributed.local_batch_size(batch_size, world_size)
        self.local_slice = slice(rank * self.local_batch, (rank + 1) * self.local_batch)
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        tensors = data.tensors("train")
        if tensors is not None:
            # Small embedded sets live on the device as one tensor: no DataLoader per batch.
            self.x_all: Tensor | None = tensors[0].to(device)
            conditions = data.conditions("train")
            self.condition_all = conditions.to(device) if conditions is not None else None
            self.dataset = None
            self.size = int(tensors[0].shape[0])
        else:
            self.x_all = None
            self.condition_all = None
            self.dataset = data.split("train")
            self.size = len(self.dataset)  # type: ignore[arg-type]
        if self.size < batch_size:
            raise ValueError(
                f"data.batch_size = {batch_size} exceeds the training split's {self.size} samples"
            )
        self.workers = workers
        self.epoch = 0
        self.position = 0
        self.permutation = torch.randperm(self.size, generator=self.generator)
        self._loader: Iterator[Any] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.size // self.batch_size  # the last incomplete batch is dropped

    def _new_epoch(self) -> None:
        self.epoch += 1
        self.position = 0
        self.permutation = torch.randperm(self.size, generator=self.generator)
        self._loader = None

    def next(self) -> Tensor:
        return self.next_conditioned()[0]

    def next_conditioned(self) -> tuple[Tensor, Tensor | None]:
        """The next batch x and its conditions (None for unconditional data)."""
        if self.position + self.batch_size > self.size:
            self._new_epoch()
        index = self.permutation[self.position : self.position + self.batch_size][self.local_slice]
        self.position += self.batch_size
        if self.x_all is not None:
            on_device = index.to(self.device)
            condition = None
            if self.condition_all is not None:
                condition = self.condition_all[on_device]
            return self.x_all[on_device], condition
        return self._load(index)

    def _load(self, index: Tensor) -> tuple[Tensor, Tensor | None]:
        if self._loader is None:
            remaining = self.permutation[self.position - self.batch_size :]
            batches = [
                remaining[i : i + self.batch_size][self.local_slice].tolist()
                for i in range(0, len(remaining) - self.batch_size + 1, self.batch_size)
            ]
            loader = torch.utils.data.DataLoader(
                self.dataset,  # type: ignore[arg-type]
                batch_sampler=batches,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
            )
            self._loader = iter(loader)
        batch = next(self._loader)
        x = batch[0].to(self.device, non_blocking=True)
        if len(batch) > 2:  # conditional sources give (x, label, condition)
            return x, batch[2].to(self.device, non_blocking=True)
        return x, None

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "position": self.position,
            "permutation": self.permutation,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.permutation = state["permutation"]
        self._loader = None


def test_batch_conditioned(data: DataSource, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Like :func:`test_batch`, with the samples' conditions (the data must be conditional)."""
    tensors = data.tensors("test")
    conditions = data.conditions("test")
    index = _test_index(data, tensors, n, seed)
    if tensors is not None and conditions is not None:
        return tensors[0][index], conditions[index]
    split = data.split("test")
    items = [split[int(i)] for i in index]
    return torch.stack([item[0] for item in items]), torch.stack([item[2] for item in items])


def test_batch(data: DataSource, n: int, seed: int = 0) -> Tensor:
    """``n`` test samples drawn with a fixed seed: the same images in every grid of a run, and
    a mix of classes (splits may be stored class by class)."""
    tensors = data.tensors("test")
    index = _test_index(data, tensors, n, seed)
    if tensors is not None:
        return tensors[0][index]
    split = data.split("test")
    return torch.stack([split[int(i)][0] for i in index])


def _test_index(
    data: DataSource, tensors: tuple[Tensor, Tensor] | None, n: int, seed: int
) -> Tensor:
    """The first ``n`` positions of a seeded permutation of the test split."""
    size = int(tensors[0].shape[0]) if tensors is not None else len(data.split("test"))  # type: ignore[arg-type]
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n]
