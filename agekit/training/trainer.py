"""The training loop: :class:`Trainer` adds to what it trains with (:class:`TrainingParts`: the
process's device, the model, the batches) the optimisers, one iteration of the game
(:meth:`Trainer.train_step`), the state a checkpoint keeps and the loop (:meth:`Trainer.fit`),
whose clocks are in :mod:`agekit.training.loop` and whose start and resume policy are in
:mod:`agekit.training.startup`. :class:`TrainingHooks` is what a caller runs at its events.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from agekit.config import ExperimentConfig, config_to_dict
from agekit.evaluation.batchnorm import estimate_statistics
from agekit.games.base import GameBatch, Phase
from agekit.model import STATISTICS_KEY
from agekit.runs import checkpoint as ckpt
from agekit.runs.provenance import PROVENANCE_KEY, provenance
from agekit.training import distributed, startup
from agekit.training.devices import DeviceUnavailable
from agekit.training.guard import TrainingDiverged
from agekit.training.loop import Cadence, StopVotes, Throughput, training_display
from agekit.training.parts import TrainingParts
from agekit.training.progress import append_record
from agekit.training.signals import TrainingStopSignals
from agekit.training.snapshots import write_snapshots
from agekit.training.tracking import Tracking, run_info

#: Notes for the person running the trainer (which checkpoint a run resumed from);
#: ``agekit train`` prints them, other programs see them through :mod:`logging`.
log = logging.getLogger(__name__)

#: DeviceUnavailable and TrainingDiverged are raised from here for callers.
__all__ = ["DeviceUnavailable", "TrainResult", "Trainer", "TrainingDiverged", "TrainingHooks"]

#: Where the guard's error says it found NaN or inf when a checkpoint was due.
_UNSAVED = "the weights due in this step's checkpoint, which was not written"


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    status: str  # "complete", "time-limit" or "interrupted"
    last: dict[str, float]


class TrainingHooks:
    """What a caller runs at the training loop's events: subclass it, override the methods you
    need (the others do nothing) and pass instances as ``Trainer(..., hooks=[...])``.

    Hooks run in the order given: ``on_start`` and ``on_end`` on every rank, ``on_log`` and
    ``on_checkpoint`` on the rank that writes (rank 0). An exception a hook raises propagates out
    of :meth:`Trainer.fit` as one from the loop itself would.
    """

    def on_start(self, trainer: Trainer, step: int) -> None:
        """Before the first step of :meth:`Trainer.fit`, at ``step`` (a resumed run's, or 0)."""

    def on_log(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        """``entry`` was just appended to the training log (``metrics.jsonl``)."""

    def on_checkpoint(self, trainer: Trainer, path: Path, step: int) -> None:
        """The checkpoint of ``step`` was just written to ``path``."""

    def on_end(self, trainer: Trainer, result: TrainResult) -> None:
        """:meth:`Trainer.fit` is about to return ``result`` (not called when it raises)."""


class Trainer(TrainingParts):
    """Trains the model of ``config`` in ``run_dir`` (default: the configuration's own run folder):
    :meth:`fit` to the budget, or :meth:`train_step` by step; ``progress`` shows a progress bar or
    lines on stderr (rank 0 only)."""

    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: str | Path | None = None,
        hooks: Sequence[TrainingHooks] = (),
        progress: bool = False,
    ) -> None:
        super().__init__(config, run_dir)
        self.hooks = list(hooks)
        self.show_progress = progress and self.is_main
        o = config.optim
        #: The networks each of the game's optimisers updates, by the optimiser's name.
        self.trains = self.model.rules.optimisers()
        #: One Adam per optimiser the game declares (AGE's: ``encoder`` and ``generator``).
        self.optimisers = {
            name: torch.optim.Adam(
                [q for net in networks for q in self.networks[net].parameters()],
                lr=o.lr,
                betas=o.betas,
            )
            for name, networks in self.trains.items()
        }
        self.step = 0
        self.elapsed = 0.0
        self.lr_scale = 1.0
        #: The experiment trackers of the configuration's ``[[loggers]]`` (rank 0 only).
        self.tracking = Tracking.of(config) if self.is_main else Tracking()
        #: The signal (SIGTERM, SIGINT) that stopped the last ``fit(handle_signals=True)``, if any.
        self.interrupted_by: int | None = None

    # state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "step": self.step,
            "epoch": self.stream.epoch,
            "elapsed": self.elapsed,
            "lr_scale": self.lr_scale,
            **{name: network.state_dict() for name, network in self.networks.items()},
            **{f"opt_{name}": opt.state_dict() for name, opt in self.optimisers.items()},
            **self._game_state(),
            "stream": self.stream.state_dict(),
            "rng": ckpt.rng_state(self.z_generator),
            "config": config_to_dict(self.config),
            PROVENANCE_KEY: provenance(),
            # What evaluation, the image commands and agekit.evaluation.inference use the networks
            # with.
            STATISTICS_KEY: self._evaluation_statistics(),
        }

    def _evaluation_statistics(self) -> dict[str, Any] | None:
        """The batch-norm statistics a checkpoint stores (:mod:`agekit.evaluation.batchnorm`),
        estimated on copies of the networks so that training goes on exactly as without them."""
        statistics = estimate_statistics(
            self.encoder, self.generator, self.model.prior, self.model.data
        )
        return None if statistics is None else statistics.to_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self.lr_scale = float(state["lr_scale"])
        for name, network in self.networks.items():
            network.load_state_dict(state[name])
        for name, opt in self.optimisers.items():
            opt.load_state_dict(state[f"opt_{name}"])
        # The game's own state (AGE's adversary weight) goes to the play when it is bound.
        if self._bound is not None:
            self._bound.load_state_dict(state)
        else:
            self._pending_game_state = dict(state)
        self.stream.load_state_dict(state["stream"])
        ckpt.restore_rng_state(state["rng"], self.z_generator)

    def _game_state(self) -> dict[str, Any]:
        if self._bound is not None:
            return self._bound.state_dict()
        if self._pending_game_state is not None:
            self.model.game.load_state_dict(self._pending_game_state)
        return self.model.game.state_dict()

    @property
    def opt_encoder(self) -> torch.optim.Optimizer:
        return self.optimisers["encoder"]

    @property
    def opt_generator(self) -> torch.optim.Optimizer:
        return self.optimisers["generator"]

    def save_checkpoint(self) -> Path:
        """Write this step's checkpoint; TrainingDiverged, writing nothing, if a weight is not
        finite (the error names the last checkpoint, which therefore holds finite weights)."""
        self.guard.step = self.step
        self.guard.check_weights(_UNSAVED, across_ranks=False)  # only this process writes
        path = ckpt.step_path(self.checkpoint_dir, self.step)
        ckpt.save_atomic(self.state_dict(), path)
        ckpt.prune(self.checkpoint_dir, self.config.train.keep_checkpoints)
        for hooks in self.hooks:
            hooks.on_checkpoint(self, path, self.step)
        return path

    def resume(self) -> bool:
        """Load the newest checkpoint of this run that loads; True when one was loaded.

        Newer checkpoints that do not load (damaged, truncated) are renamed ``*.unreadable`` and
        skipped, with a warning naming them; when none loads, CheckpointError names them all.
        """
        found = startup.newest_resumable(
            self.checkpoint_dir, self.config, self.device, self.is_main
        )
        if found is None:
            return False
        path, state = found
        self.load_state_dict(state)
        if self.is_main:
            log.info("resuming from %s (step %d)", path, self.step)
            startup.restart_log(self.metrics_path, self.step)
        return True

    # one step -------------------------------------------------------------------------------------
    def _budget_steps(self) -> int | None:
        t = self.config.train
        candidates = []
        if t.steps is not None:
            candidates.append(t.steps)
        if t.epochs is not None:
            candidates.append(t.epochs * self.stream.batches_per_epoch)
        return min(candidates) if candidates else None

    def _apply_lr_schedule(self) -> None:
        """Both optimisers' rate for the epoch of the batch last drawn from the stream."""
        o = self.config.optim
        if o.lr_drop_every is None:
            return
        epochs = self.stream.epoch + (1 if o.lr_drop_timing == "reference" else 0)
        scale = o.lr_drop_factor ** (epochs // o.lr_drop_every)
        if scale != self.lr_scale:
            self.lr_scale = scale
            for opt in self.optimisers.values():
                for group in opt.param_groups:
                    group["lr"] = o.lr * scale

    def train_step(self) -> dict[str, float]:
        """One iteration: every phase of the game in turn (AGE's: an encoder update, then
        ``gen_steps_per_encoder_step`` generator updates), each stepping its own optimiser."""
        play = self._play()
        self.guard.step = self.step + 1  # NaN or inf in a term or a code stop the run, named
        # condition is None for unconditional data. For conditional data the divergences still
        # see the whole batch of codes (mixed conditions, paper section 3.2); fakes are
        # g(z | the batch's own conditions).
        x, condition = self.stream.next_conditioned()
        # After the draw: the stream enters a new epoch when it hands out that epoch's first
        # batch, and this batch's updates must run at its epoch's rate.
        self._apply_lr_schedule()
        if self.config.train.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
            if condition is not None and condition.ndim == 4:
                condition = condition.contiguous(memory_format=torch.channels_last)
        batch = GameBatch(x, condition, self._sample_z, self.local_batch)
        terms: dict[str, Tensor] = {}
        for phase in play.phases():
            for _ in range(phase.repeat):
                terms |= self._update(phase, batch)
        for network in self.networks.values():
            network.requires_grad_(True)
        if self.dist is not None:
            # The same numbers on every rank, so a game's state (the adaptive adversary) stays
            # identical everywhere.
            terms = distributed.mean_terms(terms)
        record = {key: float(value.detach()) for key, value in terms.items()}
        play.after_iteration(record, self.lr_scale)
        return record

    def _update(self, phase: Phase, batch: GameBatch) -> dict[str, Tensor]:
        """One update: only the phase's optimiser's networks learn (the others' parameters ask
        for no gradient, so backward skips them)."""
        learning = self.trains[phase.optimiser]
        for name, network in self.networks.items():
            network.requires_grad_(name in learning)
        self.guard.phase_terms = phase.label
        with self._autocast():
            losses = phase.losses(batch)
        self.guard.check_terms(losses.terms | {f"{phase.optimiser}_loss": losses.loss})
        optimiser = self.optimisers[phase.optimiser]
        optimiser.zero_grad(set_to_none=True)
        losses.loss.backward()
        optimiser.step()
        return losses.terms

    def fit(self, resume: bool = False, handle_signals: bool = False) -> TrainResult:
        """Train until the budget is spent; ``resume`` continues from the newest checkpoint.

        The run folder is locked for the whole call: while another process trains or evaluates
        there, RunFolderBusy names it and nothing is read or written. With ``handle_signals``
        (``agekit train``; only from the main thread), SIGTERM, SIGHUP, SIGINT or a progress
        stream that can no longer be written (taken as SIGPIPE) lets the step in progress finish,
        writes a checkpoint and returns with status ``"interrupted"`` and :attr:`interrupted_by`
        set; a second signal exits at once with status 128 + signal number, writing nothing.
        """
        multi_process = self.dist is not None
        with startup.shared_run_lock(self.run_dir, self.is_main, self.device, multi_process):
            return self._fit(resume, handle_signals)

    def _start(self, resume: bool) -> None:
        """Before the first step: clear what a killed checkpoint write left, resume or refuse to
        overwrite a run, and record the configuration; every rank returns together."""
        self.interrupted_by = None
        if self.is_main:
            startup.clear_fragments(self.checkpoint_dir)
        resumed = False
        if resume:
            resumed = self.resume()
            startup.check_budget(self.run_dir, self.step, self._budget_steps())
        else:
            startup.refuse_overwrite(self.run_dir, self.checkpoint_dir)
        if not resumed and self.is_main and self.metrics_path.exists():
            # An attempt killed before its first checkpoint: its records would mix with ours.
            log.info("%s: starting over, dropping an earlier attempt's records", self.metrics_path)
            startup.restart_log(self.metrics_path, self.step)
        if self.is_main:
            startup.record_config(self.folder.config, self.config)
        # Every rank has read the checkpoint folder before rank 0 may write to it.
        distributed.barrier()

    def _fit(self, resume: bool, handle_signals: bool) -> TrainResult:
        self._start(resume)
        with self.tracking.session(run_info(self.config, self.run_dir, self.step)) as tracked:
            result = self._train(handle_signals)
            tracked.status = result.status
        for hooks in self.hooks:
            hooks.on_end(self, result)
        return result

    def _train(self, handle_signals: bool) -> TrainResult:
        """The loop, from the step :meth:`_start` settled to the budget or a stop."""
        t = self.config.train
        total = self._budget_steps()
        due = Cadence(t.log_every, t.image_every, t.checkpoint_every, total)
        throughput = Throughput(self.config.data.batch_size)
        signals = TrainingStopSignals(self.checkpoint_dir, self.is_main) if handle_signals else None
        stops = StopVotes(signals, t.max_minutes, self.device, self.dist is not None)
        progress = training_display(self.show_progress, total, self.step, t.log_every, signals)
        status = "complete"
        last: dict[str, float] = {}
        for hooks in self.hooks:
            hooks.on_start(self, self.step)
        with signals or contextlib.nullcontext(), progress:
            while total is None or self.step < total:
                if (stop := stops.poll(self.elapsed)) is not None:
                    status, self.interrupted_by = stop, stops.signal
                    break
                started = time.perf_counter()
                last = self.train_step()
                self.step += 1
                self.elapsed += time.perf_counter() - started
                throughput.count()
                if self.is_main and due.log(self.step):
                    progress.update(self.step, self._log(last, throughput.rate()))
                if self.is_main and due.images(self.step):
                    self.write_images()
                if due.checkpoint(self.step):
                    self._check_before_checkpoint()
                    if self.is_main:
                        self.save_checkpoint()
                progress.update(self.step)
            # The final checkpoint, still under the signal handlers: a second signal during this
            # write exits at once (the write is atomic: the older checkpoints stay as they were).
            self._check_before_checkpoint()
            path = ckpt.step_path(self.checkpoint_dir, self.step)
            if self.is_main and ckpt.latest(self.checkpoint_dir) != path:
                self.save_checkpoint()
            if self.is_main and status != "interrupted":  # a preempted job has seconds left
                self.write_images()
        return TrainResult(self.run_dir, self.step, self.stream.epoch, status, last)

    def _check_before_checkpoint(self) -> None:
        """The guard's weight check on every process, so that all stop at the same step when the
        checkpoint that rank 0 is about to write would hold NaN or inf."""
        self.guard.step = self.step
        self.guard.check_weights(_UNSAVED)

    # outputs --------------------------------------------------------------------------------------
    def _log(self, record: dict[str, float], images_per_s: float) -> dict[str, Any]:
        """Append this step's training-log entry (``metrics.jsonl``, the configured loggers), pass
        it to the hooks and return it."""
        entry = {
            "step": self.step,
            "epoch": self.stream.epoch,
            "lr": self.config.optim.lr * self.lr_scale,
            "images_per_s": images_per_s,
            "elapsed_s": self.elapsed,
            **record,
        }
        append_record(self.metrics_path, entry)
        self.tracking.scalars(entry)
        for hooks in self.hooks:
            hooks.on_log(self, entry)
        return entry

    def write_images(self) -> None:
        """This step's samples and reconstructions in the run folder, and to the loggers."""
        written = write_snapshots(
            self.folder.images,
            self.step,
            self.encoder,
            self.generator,
            self.model.data,
            self.fixed_z,
            self.config.train.grid_size,
        )
        self.tracking.images(written, self.step)
