"""The clocks of :meth:`agekit.training.trainer.Trainer.fit`: which periodic outputs a step is due
(:class:`Cadence`), the images per second its log reports (:class:`Throughput`), whether to stop
before the next step (:class:`StopVotes`), and its guarded progress display
(:func:`training_display`)."""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass

import torch

from agekit.training import distributed
from agekit.training.progress import GuardedProgress, plain_every, training_progress
from agekit.training.signals import StopSignals

__all__ = ["Cadence", "StopVotes", "Throughput", "training_display"]

#: The stop request a closed output stream makes: what a program without a handler would die of.
BROKEN_STREAM = int(getattr(signal, "SIGPIPE", signal.SIGTERM))


@dataclass(frozen=True)
class Cadence:
    """Which of the loop's periodic outputs are due once ``step`` steps are done (``train``'s
    ``log_every``, ``image_every`` and ``checkpoint_every``)."""

    log_every: int
    image_every: int
    checkpoint_every: int
    #: The step budget (None: none), whose last step is logged whatever ``log_every`` says.
    total: int | None = None

    def log(self, step: int) -> bool:
        return step % self.log_every == 0 or step == self.total

    def images(self, step: int) -> bool:
        return step % self.image_every == 0

    def checkpoint(self, step: int) -> bool:
        return step % self.checkpoint_every == 0


class Throughput:
    """Images per second over the steps counted since the last :meth:`rate` (or since it was
    made): the training log's ``images_per_s``, for the global batch of every rank together."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._start = time.perf_counter()
        self._steps = 0

    def count(self) -> None:
        """One more step in the window."""
        self._steps += 1

    def rate(self) -> float:
        """The window's images per second; the next window starts here."""
        now = time.perf_counter()
        rate = self._steps * self.batch_size / max(now - self._start, 1e-9)
        self._start, self._steps = now, 0
        return rate


class StopVotes:
    """Whether the run stops before its next step: a stop signal (``signals``, when the trainer
    handles them) or the wall-clock budget ``max_minutes`` spent, checked in that order.

    With ``multi_process`` (torchrun) every rank votes and all get the same answer: the ranks
    must stop at the same step, or the others wait forever in the next collective, and each
    rank's clock and signals are its own.
    """

    def __init__(
        self,
        signals: StopSignals | None,
        max_minutes: float | None,
        device: torch.device,
        multi_process: bool = False,
    ) -> None:
        self.signals = signals
        self.deadline = max_minutes * 60 if max_minutes is not None else math.inf
        self.device = device
        self.multi_process = multi_process
        #: The signal that stopped the run, once one has.
        self.signal: int | None = None

    def poll(self, elapsed: float) -> str | None:
        """``"interrupted"`` (:attr:`signal` says by what), ``"time-limit"`` after ``elapsed``
        seconds of training, or None to go on."""
        if self.signals is not None:
            received = self.signals.received or 0
            if self.multi_process:
                received = distributed.max_over_ranks(received, self.device)
            if received:
                self.signal = received
                return "interrupted"
        stop = elapsed >= self.deadline
        if self.multi_process and self.deadline < math.inf:
            stop = distributed.any_rank(stop, self.device)
        return "time-limit" if stop else None


def training_display(
    enabled: bool,
    total: int | None,
    completed: int,
    log_every: int,
    signals: StopSignals | None,
) -> GuardedProgress:
    """The progress display on stderr (:func:`agekit.training.progress.training_progress`),
    guarded: a closed pipe or a hung-up terminal silences it and, with ``signals`` handled, stops
    the run as a signal would, with a checkpoint."""
    inner = training_progress(enabled, total, completed, plain_every(total, log_every))
    on_broken = None if signals is None else lambda _: signals.request(BROKEN_STREAM)
    return GuardedProgress(inner, sys.stderr, on_broken=on_broken)
