"""The training loop: devices, optimisers, schedule, checkpoints, logging, callbacks.

The objectives live in :mod:`agekit.games.age`; this module only decides when each one is minimised,
on which device, and what is written to disk. What the loop uses lives elsewhere: the model built
from a configuration (:mod:`agekit.model`), the batches (:mod:`agekit.datasets.stream`),
checkpoint files (:mod:`agekit.runs.checkpoint`), the progress display, TensorBoard and the training
log (:mod:`agekit.training.progress`), the non-finite guard (:mod:`agekit.training.guard`), the
stop signals
(:mod:`agekit.training.signals`), the images written as it goes (:mod:`agekit.training.snapshots`),
which
configuration changes a resume accepts (:mod:`agekit.config.changes`), and the DDP and compile
wrapping,
synchronised batch norm and collectives (:mod:`agekit.training.distributed`).

Longer than the ~400 lines other modules keep to, on purpose: it is one class, :class:`Trainer`.
The loop's state (step, optimisers, data position, RNGs), its checkpoint and resume, and where it
consults the guard, the signals and the other ranks must agree with one another, and reading them
side by side is how that is checked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from agekit.config import ExperimentConfig, config_to_dict
from agekit.config.changes import resume_refusal
from agekit.datasets.stream import BatchStream
from agekit.evaluation.batchnorm import estimate_statistics
from agekit.games.age import AGEGame
from agekit.games.regression import RegressionObjective
from agekit.model import (
    STATISTICS_KEY,
    DeviceUnavailable,
    build_adversary,
    build_model,
    resolve_device,
)
from agekit.runs import checkpoint as ckpt
from agekit.runs.lock import RunLock
from agekit.runs.provenance import PROVENANCE_KEY, provenance
from agekit.training import distributed
from agekit.training.guard import NonFiniteGuard, TrainingDiverged
from agekit.training.progress import (
    GuardedProgress,
    TensorBoardLog,
    append_record,
    plain_every,
    training_progress,
    truncate_records,
)
from agekit.training.signals import StopSignals, TrainingStopSignals
from agekit.training.snapshots import write_snapshots

#: Notes for the person running the trainer (a resume that fell back, a torn log line dropped);
#: ``agekit train`` prints them, other programs see them through :mod:`logging`.
log = logging.getLogger(__name__)

#: TrainingDiverged is raised from here for callers (``agekit.training.trainer.TrainingDiverged``).
__all__ = ["Callback", "TrainResult", "Trainer", "TrainingDiverged"]


#: The stop request a closed output stream makes: what a program without a handler would die of.
_BROKEN_STREAM = int(getattr(signal, "SIGPIPE", signal.SIGTERM))

#: Where the guard's error says it found NaN or inf when a checkpoint was due.
_UNSAVED = "the weights due in this step's checkpoint, which was not written"


class Callback(Protocol):
    def __call__(self, event: str, trainer: Trainer, record: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    status: str  # "complete" or "time-limit"
    last: dict[str, float]


class Trainer:
    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: str | Path | None = None,
        callbacks: Sequence[Callback] = (),
        progress: bool = False,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else config.run_dir()
        self.callbacks = list(callbacks)
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
        self.show_progress = progress and self.is_main
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
        o = config.optim
        self.opt_encoder = torch.optim.Adam(self.encoder.parameters(), lr=o.lr, betas=o.betas)
        self.opt_generator = torch.optim.Adam(self.generator.parameters(), lr=o.lr, betas=o.betas)
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
        self.adversary = build_adversary(config)
        self.step = 0
        self.elapsed = 0.0
        self.lr_scale = 1.0
        fixed = torch.Generator().manual_seed(t.seed + 3)
        self.fixed_z = self.model.prior.sample(t.grid_size, fixed).to(self.device)
        #: The game and the regression objective as this trainer plays them, on its wrapped
        #: networks: built once, on the first step (:meth:`_wrapped`).
        self._game: AGEGame | None = None
        self._regression: RegressionObjective | None = None
        self.guard = NonFiniteGuard(
            {"encoder": self.encoder, "generator": self.generator},
            self.checkpoint_dir,
            self.device,
            multi_process=self.dist is not None,
        )
        self._tensorboard = TensorBoardLog(self.run_dir / "tensorboard")
        #: The signal (SIGTERM, SIGINT) that stopped the last ``fit(handle_signals=True)``, if any.
        self.interrupted_by: int | None = None

    # paths ----------------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    # state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "step": self.step,
            "epoch": self.stream.epoch,
            "elapsed": self.elapsed,
            "lr_scale": self.lr_scale,
            "encoder": self.encoder.state_dict(),
            "generator": self.generator.state_dict(),
            "opt_encoder": self.opt_encoder.state_dict(),
            "opt_generator": self.opt_generator.state_dict(),
            "adversary_weight": self.adversary.weight if self.adversary else None,
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
        estimated on
        copies of the networks so that training goes on exactly as without them."""
        statistics = estimate_statistics(
            self.encoder, self.generator, self.model.prior, self.model.data
        )
        return None if statistics is None else statistics.to_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self.lr_scale = float(state["lr_scale"])
        self.encoder.load_state_dict(state["encoder"])
        self.generator.load_state_dict(state["generator"])
        self.opt_encoder.load_state_dict(state["opt_encoder"])
        self.opt_generator.load_state_dict(state["opt_generator"])
        if self.adversary is not None and state["adversary_weight"] is not None:
            self.adversary.weight = float(state["adversary_weight"])
        self.stream.load_state_dict(state["stream"])
        ckpt.restore_rng_state(state["rng"], self.z_generator)

    def save_checkpoint(self) -> Path:
        """Write this step's checkpoint; TrainingDiverged, writing nothing, if a weight is not
        finite (the error names the last checkpoint, which therefore holds finite weights)."""
        self.guard.step = self.step
        self.guard.check_weights(_UNSAVED, across_ranks=False)  # only this process writes
        path = self.checkpoint_dir / f"step_{self.step:08d}.pt"
        ckpt.save_atomic(self.state_dict(), path)
        ckpt.prune(self.checkpoint_dir, self.config.train.keep_checkpoints)
        self._emit("checkpoint", {"path": str(path), "step": self.step})
        return path

    def resume(self) -> bool:
        """Load the newest checkpoint of this run that loads; True when one was loaded.

        Newer checkpoints that do not load (damaged, truncated) are renamed ``*.unreadable`` and
        skipped, with a warning naming them; when none loads, CheckpointError names them all.
        """
        found = ckpt.load_newest(self.checkpoint_dir, map_location=self.device)
        if found is None:
            if self.is_main:
                log.warning(
                    "resume: no checkpoint in %s; starting a fresh run at step 0",
                    self.checkpoint_dir,
                )
            return False
        path, state, unreadable = found
        for bad, reason in unreadable if self.is_main else []:
            kept = bad
            with contextlib.suppress(OSError):  # kept in place if it cannot be renamed
                kept = ckpt.set_aside(bad)
            log.warning(
                "%s; kept as %s, resuming from the older %s instead", reason, kept.name, path.name
            )
        saved = ckpt.saved_config(state)
        # Only the science must match: a moved folder (out_dir, name), another device or cadence,
        # or a larger budget (train longer) still continues the same run.
        refusal = None if saved is None else resume_refusal(saved, config_to_dict(self.config))
        if refusal is not None:
            raise ckpt.CheckpointError(
                f"{path}: the run was started with a different configuration ({refusal}); "
                "use a new run folder or the original values"
            )
        self.load_state_dict(state)
        if self.is_main:
            log.info("resuming from %s (step %d)", path, self.step)
            self._truncate_metrics(self.step)
        return True

    def _truncate_metrics(self, step: int) -> None:
        """Drop log records after ``step`` (they will be redone) and torn lines."""
        torn = truncate_records(self.metrics_path, step)
        if torn:
            log.warning(
                "%s: dropped %d unreadable line%s (torn by a crash or a full disk)",
                self.metrics_path,
                torn,
                "" if torn == 1 else "s",
            )

    # the loop -------------------------------------------------------------------------------------
    def _budget_steps(self) -> int | None:
        t = self.config.train
        candidates = []
        if t.steps is not None:
            candidates.append(t.steps)
        if t.epochs is not None:
            candidates.append(t.epochs * self.stream.batches_per_epoch)
        return min(candidates) if candidates else None

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.train.precision == "bf16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _wrapped(self) -> tuple[AGEGame, RegressionObjective | None]:
        """The game (and the regression objective) on this trainer's wrapped networks.

        The wrapping (DDP, compile) is :func:`agekit.training.distributed.wrap_for_training`'s.
        Built on
        the first step, so that whatever a caller does to the modules after construction
        (loading a checkpoint, changing dtype) happens before DDP registers its buckets.
        """
        if self._game is not None:
            return self._game, self._regression
        nets = distributed.wrap_for_training(
            self.encoder,
            self.generator,
            self.device,
            ddp=self.dist is not None,
            compile=self.config.train.compile,
        )
        gather = None
        if self.dist is not None:
            gather = distributed.code_gatherer(self.config.distributed.divergence)
        self._game = self.model.game.with_networks(
            nets.encoder,  # type: ignore[arg-type]  # the model's encoder, perhaps compiled
            nets.generator,  # type: ignore[arg-type]
            trained_encoder=nets.trained_encoder,
            trained_generator=nets.trained_generator,
            gather=self.guard.codes_hook(gather),
        )
        if self.model.regression is not None:
            self._regression = RegressionObjective(
                nets.trained_generator,  # type: ignore[arg-type]
                self.model.regression.data_loss,
            )
        return self._game, self._regression

    def _sample_z(self, n: int) -> Tensor:
        # z is drawn on the CPU from its own generator so a run's noise is the same on every device;
        # under DDP every rank draws the global batch and keeps its slice, so the ranks' z are
        # disjoint and together equal a single process's z.
        z = self.model.prior.sample(n * self.world_size, self.z_generator)
        if self.world_size > 1:
            z = z[self.rank * n : (self.rank + 1) * n]
        return z.to(self.device, non_blocking=True)

    def _apply_lr_schedule(self) -> None:
        """Both optimisers' rate for the epoch of the batch last drawn from the stream."""
        o = self.config.optim
        if o.lr_drop_every is None:
            return
        epochs = self.stream.epoch + (1 if o.lr_drop_timing == "reference" else 0)
        scale = o.lr_drop_factor ** (epochs // o.lr_drop_every)
        if scale != self.lr_scale:
            self.lr_scale = scale
            for opt in (self.opt_encoder, self.opt_generator):
                for group in opt.param_groups:
                    group["lr"] = o.lr * scale

    def train_step(self) -> dict[str, float]:
        """One iteration: an encoder update, then ``gen_steps_per_encoder_step`` generator ones."""
        game, regression = self._wrapped()
        self.guard.step = self.step + 1  # NaN or inf in a term or a code stop the run, named
        batch = self.local_batch
        # condition is None for unconditional data, and then every call below is the same as
        # without it. For conditional data the divergences still see the whole batch of codes
        # (mixed conditions, paper section 3.2); fakes are g(z | the batch's own conditions).
        x, condition = self.stream.next_conditioned()
        # Only now: the stream enters a new epoch when it hands out that epoch's first batch, and
        # this batch's updates must run at its epoch's rate.
        self._apply_lr_schedule()
        if self.config.train.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
            if condition is not None and condition.ndim == 4:
                condition = condition.contiguous(memory_format=torch.channels_last)
        if regression is not None:
            return self._regression_step(regression, x, condition)
        adversary_weight = self.adversary.weight if self.adversary else 1.0

        self.encoder.requires_grad_(True)
        self.generator.requires_grad_(False)
        self.guard.phase_terms = "kl_fake_enc, kl_real"
        with self._autocast():
            enc = game.encoder_step(
                x, self._sample_z(batch), condition=condition, adversary_weight=adversary_weight
            )
        self.guard.check_terms(enc.terms | {"encoder_loss": enc.loss})
        self.opt_encoder.zero_grad(set_to_none=True)
        enc.loss.backward()
        self.opt_encoder.step()

        self.encoder.requires_grad_(False)
        self.generator.requires_grad_(True)
        gen_terms: dict[str, Tensor] = {}
        for _ in range(self.config.game.gen_steps_per_encoder_step):
            real = x if self.config.game.generator_data_weight > 0 else None
            self.guard.phase_terms = "kl_fake"
            with self._autocast():
                gen = game.generator_step(self._sample_z(batch), real, condition=condition)
            self.guard.check_terms(gen.terms | {"generator_loss": gen.loss})
            self.opt_generator.zero_grad(set_to_none=True)
            gen.loss.backward()
            self.opt_generator.step()
            gen_terms = gen.terms
        self.encoder.requires_grad_(True)
        self.generator.requires_grad_(True)

        terms = enc.terms | gen_terms
        if self.dist is not None:
            # The same numbers on every rank, so the adaptive adversary stays identical everywhere.
            terms = distributed.mean_terms(terms)
        record = {key: float(value.detach()) for key, value in terms.items()}
        record["adversary_weight"] = adversary_weight
        if self.adversary is not None:
            self.adversary.update(record["kl_real"], record["kl_fake_enc"], self.lr_scale)
        return record

    def _regression_step(
        self, objective: RegressionObjective, x: Tensor, condition: Tensor | None
    ) -> dict[str, float]:
        """The regression baseline: one generator update on data_loss(x, g(z | condition))."""
        self.generator.requires_grad_(True)
        with self._autocast():
            step = objective.generator_step(self._sample_z(self.local_batch), x, condition)
        self.guard.check_terms(step.terms | {"generator_loss": step.loss})
        self.opt_generator.zero_grad(set_to_none=True)
        step.loss.backward()
        self.opt_generator.step()
        terms = step.terms
        if self.dist is not None:
            terms = distributed.mean_terms(terms)
        return {key: float(value.detach()) for key, value in terms.items()}

    def fit(self, resume: bool = False, handle_signals: bool = False) -> TrainResult:
        """Train until the budget is spent; ``resume`` continues from the newest checkpoint.

        The run folder is locked for the whole call (:class:`agekit.runs.lock.RunLock`): while
        another process trains or evaluates there, RunFolderBusy names it and nothing is read
        or written. With ``handle_signals`` (``agekit train``), a SIGTERM (schedulers'
        preemption), SIGHUP (a closed terminal) or SIGINT (Ctrl-C), or a progress stream that
        can no longer be written (a closed pipe: taken as SIGPIPE), lets the step in progress
        finish, writes a checkpoint and returns with status ``"interrupted"`` and
        :attr:`interrupted_by` set; a second signal exits the process at once with status
        128 + signal number, writing nothing. Only from the main thread.
        """
        with self._run_lock():
            return self._fit(resume, handle_signals)

    @contextlib.contextmanager
    def _run_lock(self) -> Iterator[None]:
        """The run folder's lock, taken by the process that writes (rank 0); under torchrun
        every rank learns whether it was refused, so that all stop together."""
        lock = RunLock(self.run_dir)
        refusal: Exception | None = None
        if self.is_main:
            try:
                lock.__enter__()
            except Exception as exc:  # RunFolderBusy, or a folder that cannot be created
                refusal = exc
        try:
            if self.dist is not None and distributed.any_rank(refusal is not None, self.device):
                raise refusal or distributed.DistributedError(
                    f"{self.run_dir}: rank 0 could not lock the run folder (its error says why)"
                )
            if refusal is not None:
                raise refusal
            if lock.stale is not None:
                log.warning(
                    "%s: left by %s, which is no longer running; taken over", lock.path, lock.stale
                )
            yield
        finally:
            if self.is_main and refusal is None:
                lock.__exit__(None, None, None)

    def _fit(self, resume: bool, handle_signals: bool) -> TrainResult:
        self.interrupted_by = None
        if self.is_main:
            removed = ckpt.remove_fragments(self.checkpoint_dir)
            if removed:
                log.info(
                    "removed %s: left by a checkpoint write that was killed",
                    ", ".join(p.name for p in removed),
                )
        resumed = False
        if resume:
            resumed = self.resume()
            budget = self._budget_steps()
            if budget is not None and budget < self.step:
                raise ckpt.CheckpointError(
                    f"{self.run_dir}: the checkpoint is at step {self.step}, past this budget of "
                    f"{budget} steps (train.steps, train.epochs); a run cannot be shortened: "
                    f"give a budget of at least {self.step} steps, or use a new run folder"
                )
        elif ckpt.latest(self.checkpoint_dir) is not None:
            raise ckpt.CheckpointError(
                f"{self.run_dir} already holds checkpoints; pass --resume to continue that run "
                "or choose another run folder (nothing was overwritten)"
            )
        if not resumed and self.is_main and self.metrics_path.exists():
            # An attempt killed before its first checkpoint: its records would mix with ours.
            log.info("%s: starting over, dropping an earlier attempt's records", self.metrics_path)
            self._truncate_metrics(self.step)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            saved = {**config_to_dict(self.config), PROVENANCE_KEY: provenance()}
            (self.run_dir / "config.json").write_text(json.dumps(saved, indent=2) + "\n")
        # Every rank has read the checkpoint folder before rank 0 may write to it.
        distributed.barrier()
        t = self.config.train
        total = self._budget_steps()
        deadline = t.max_minutes * 60 if t.max_minutes is not None else math.inf
        status = "complete"
        last: dict[str, float] = {}
        window_start, window_steps = time.perf_counter(), 0
        signals = TrainingStopSignals(self.checkpoint_dir, self.is_main) if handle_signals else None
        # A closed pipe or a hung-up terminal silences the display, and with signals handled
        # stops the run as a signal would: with a checkpoint.
        progress = GuardedProgress(
            training_progress(
                self.show_progress, total, self.step, plain_every(total, t.log_every)
            ),
            sys.stderr,
            on_broken=None if signals is None else lambda _: signals.request(_BROKEN_STREAM),
        )
        self._emit("start", {"step": self.step})
        with signals or contextlib.nullcontext(), progress:
            while total is None or self.step < total:
                if signals is not None and self._stop_requested(signals):
                    status = "interrupted"
                    break
                stop = self.elapsed >= deadline
                if self.dist is not None and deadline < math.inf:
                    stop = distributed.any_rank(stop, self.device)  # clocks differ per rank
                if stop:
                    status = "time-limit"
                    break
                started = time.perf_counter()
                record = self.train_step()
                self.step += 1
                window_steps += 1
                self.elapsed += time.perf_counter() - started
                last = record
                if self.is_main and (self.step % t.log_every == 0 or self.step == total):
                    now = time.perf_counter()
                    rate = (
                        window_steps * self.config.data.batch_size / max(now - window_start, 1e-9)
                    )
                    window_start, window_steps = now, 0
                    entry = {
                        "step": self.step,
                        "epoch": self.stream.epoch,
                        "lr": self.config.optim.lr * self.lr_scale,
                        "images_per_s": rate,
                        "elapsed_s": self.elapsed,
                        **record,
                    }
                    self._log(entry)
                    progress.update(self.step, entry)
                if self.is_main and self.step % t.image_every == 0:
                    self.write_images()
                if self.step % t.checkpoint_every == 0:
                    self._check_before_checkpoint()
                    if self.is_main:
                        self.save_checkpoint()
                progress.update(self.step)
            self._check_before_checkpoint()
            # Still under the signal handlers: a second signal during this write exits at once
            # (the write is atomic: the older checkpoints stay as they were).
            if self.is_main:
                path = self.checkpoint_dir / f"step_{self.step:08d}.pt"
                if ckpt.latest(self.checkpoint_dir) != path:
                    self.save_checkpoint()
                if status != "interrupted":  # a preempted job has seconds left: no images
                    self.write_images()
        result = TrainResult(self.run_dir, self.step, self.stream.epoch, status, last)
        self._emit("end", {"step": self.step, "status": status})
        return result

    def _check_before_checkpoint(self) -> None:
        """The guard's weight check on every process, so that all stop at the same step when the
        checkpoint that rank 0 is about to write would hold NaN or inf."""
        self.guard.step = self.step
        self.guard.check_weights(_UNSAVED)

    def _stop_requested(self, signals: StopSignals) -> bool:
        """Whether a stop signal has arrived; under torchrun, on any rank (the ranks must stop
        at the same step, or the others wait forever in the next collective)."""
        received = signals.received or 0
        if self.dist is not None:
            received = distributed.max_over_ranks(received, self.device)
        if received:
            self.interrupted_by = received
        return bool(received)

    # outputs --------------------------------------------------------------------------------------
    def _log(self, entry: dict[str, Any]) -> None:
        append_record(self.metrics_path, entry)
        self._tensorboard.add(entry)
        self._emit("log", entry)

    def _emit(self, event: str, record: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback(event, self, record)

    def write_images(self) -> None:
        write_snapshots(
            self.run_dir / "images",
            self.step,
            self.encoder,
            self.generator,
            self.model.data,
            self.fixed_z,
            self.config.train.grid_size,
        )
