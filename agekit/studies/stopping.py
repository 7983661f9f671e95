"""How a stop signal ends a study: :class:`StudyInterrupted` and the study's signal handlers."""

from __future__ import annotations

import signal

from agekit.training.progress import to_stderr
from agekit.training.signals import StopSignals


class StudyInterrupted(BaseException):
    """A stop signal ended the study; the run in progress (if any) wrote a checkpoint.

    A BaseException, so that the study's fail-soft handling of run errors never swallows it.
    """

    def __init__(self, signum: int, run_id: str | None = None, detail: str = "") -> None:
        super().__init__(signum, run_id, detail)
        self.signum = signum
        self.run_id = run_id
        self.detail = detail


class StudySignals(StopSignals):
    """While entered, the first SIGTERM/SIGINT is recorded; with ``raise_at_once`` (a study that
    trains in this process) every stop request also raises :class:`StudyInterrupted` where the
    program is. During training the trainer's own handlers take over (they finish the step and
    checkpoint) and give these back afterwards. A repeat of the first signal within
    :data:`agekit.training.signals.REPEAT_WINDOW_S` is the same request
    (:mod:`agekit.training.signals`)."""

    def __init__(self, raise_at_once: bool) -> None:
        super().__init__()
        self.raise_at_once = raise_at_once

    def on_first(self, signum: int) -> None:
        to_stderr(f"\nagekit: {signal.Signals(signum).name} received: stopping the study")
        if self.raise_at_once:
            raise StudyInterrupted(signum)

    def on_second(self, signum: int) -> None:
        if self.raise_at_once:
            raise StudyInterrupted(signum)
        name = signal.Signals(signum).name
        to_stderr(f"\nagekit: second signal ({name}): stopping the runs at once")
