"""What a trainer trains with: :class:`TrainingParts`, the base of
:class:`agekit.training.trainer.Trainer`, which adds the optimisers, the step, the checkpoint state
and the loop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from agekit.config import ExperimentConfig
from agekit.datasets.stream import BatchStream
from agekit.games.base import Play
from agekit.model import build_model
from agekit.runs.layout import RunFolder
from agekit.training import distributed
from agekit.training.devices import DeviceUnavailable, resolve_device
from agekit.training.guard import NonFiniteGuard

__all__ = ["TrainingParts"]


class TrainingParts:
    """The process's place (its rank under torchrun, its device), the model built from the
    configuration and its networks as a step plays them (wrapped for DDP and compile), the batches,
    the codes' random stream, the non-finite guard and the run folder's paths."""

    def __init__(self, config: ExperimentConfig, run_dir: str | Path | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else config.run_dir()
        device = resolve_device(config.train.device)
        #: Set under torchrun (WORLD_SIZE > 1): this process's rank; None in a single process.
        self.dist = distributed.detect()
        if self.dist is not None:
            device = distributed.device_for(self.dist, device)
            distributed.init_process_group(self.dist, device)
        self.device = device
        self.rank = self.dist.rank if self.dist is not None else 0
        self.world_size = self.dist.world_size if self.dist is not None else 1
        self.is_main = self.rank == 0
        #: This process's share of the global ``data.batch_size``.
        self.local_batch = distributed.local_batch_size(config.data.batch_size, self.world_size)
        self.model = build_model(config, self.device)
        if self.dist is not None and config.distributed.sync_batchnorm:
            pair = self.model.pair
            distributed.convert_sync_batchnorm((pair.encoder, pair.generator), self.device)
        self.encoder = self.model.pair.encoder
        self.generator = self.model.pair.generator
        t = config.train
        if t.precision == "bf16" and self.device.type != "cuda":
            raise DeviceUnavailable("train.precision = 'bf16' needs a CUDA device")
        if t.compile and self.device.type != "cuda":
            raise DeviceUnavailable("train.compile = true is supported on CUDA devices only")
        if t.channels_last:
            self.encoder.to(memory_format=torch.channels_last)
            self.generator.to(memory_format=torch.channels_last)
        self.stream = BatchStream(
            self.model.data,
            config.data.batch_size,
            self.device,
            t.seed + 1,
            config.data.workers,
            rank=self.rank,
            world_size=self.world_size,
        )
        self.z_generator = torch.Generator().manual_seed(t.seed + 2)
        fixed = torch.Generator().manual_seed(t.seed + 3)
        self.fixed_z = self.model.prior.sample(t.grid_size, fixed).to(self.device)
        #: Every network the game trains, by name (``encoder``, ``generator``, and any the game
        #: adds: a critic, a discriminator).
        self.networks = self.model.networks
        #: The game as this trainer plays it, on its wrapped networks: bound once, on the first
        #: step (:meth:`_play`), with the state a resumed checkpoint holds for it.
        self._bound: Play | None = None
        self._pending_game_state: dict[str, Any] | None = None
        self.guard = NonFiniteGuard(
            dict(self.networks),
            self.checkpoint_dir,
            self.device,
            multi_process=self.dist is not None,
        )

    # the run folder -------------------------------------------------------------------------------
    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def checkpoint_dir(self) -> Path:
        return self.folder.checkpoints

    @property
    def metrics_path(self) -> Path:
        return self.folder.metrics

    # what a step plays with -----------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.train.precision == "bf16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _play(self) -> Play:
        """The game bound to this trainer's networks, with the non-finite guard on its codes.

        Under torchrun or ``train.compile`` the networks are wrapped
        (:func:`agekit.training.distributed.wrap_for_training`) and a game must say how it plays
        wrapped networks (``with_networks``, as the AGE game does). Bound on the first step, so
        that whatever a caller does to the modules after construction (loading a checkpoint,
        changing dtype) happens before DDP registers its buckets.
        """
        if self._bound is not None:
            return self._bound
        gather = None
        if self.dist is not None:
            gather = distributed.code_gatherer(self.config.distributed.divergence)
        gather = self.guard.codes_hook(gather)
        if self.dist is None and not self.config.train.compile:
            self._bound = self.model.rules.bind(replace(self.model.parts, gather=gather))
        else:
            self._bound = self._wrapped_play(gather)
        if self._pending_game_state is not None:
            self._bound.load_state_dict(self._pending_game_state)
            self._pending_game_state = None  # it holds a whole checkpoint's tensors
        return self._bound

    def _wrapped_play(self, gather: Callable[[Tensor], Tensor] | None) -> Play:
        with_networks = getattr(self.model.game, "with_networks", None)
        if with_networks is None:
            raise distributed.DistributedError(
                f"game {self.config.game.game_name!r} trains in one process without "
                "train.compile only: it does not say how to play DDP-wrapped or compiled networks"
            )
        nets = distributed.wrap_for_training(
            self.encoder,
            self.generator,
            self.device,
            ddp=self.dist is not None,
            compile=self.config.train.compile,
        )
        play: Play = with_networks(
            nets.encoder,
            nets.generator,
            trained_encoder=nets.trained_encoder,
            trained_generator=nets.trained_generator,
            gather=gather,
        )
        return play

    def _sample_z(self, n: int) -> Tensor:
        # z is drawn on the CPU from its own generator so a run's noise is the same on every device;
        # under DDP every rank draws the global batch and keeps its slice, so the ranks' z are
        # disjoint and together equal a single process's z.
        z = self.model.prior.sample(n * self.world_size, self.z_generator)
        if self.world_size > 1:
            z = z[self.rank * n : (self.rank + 1) * n]
        return z.to(self.device, non_blocking=True)
