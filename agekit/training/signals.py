"""Stop signals: schedulers' preemption (SIGTERM: SLURM, Kubernetes), a closed terminal or ssh
session (SIGHUP, where the platform has it) and Ctrl-C (SIGINT).

The first signal asks for a stop at the next safe point (the training loop finishes its step and
writes a checkpoint; a study stops starting runs); a second one stops at once. A repeat of the
*same* signal within :data:`REPEAT_WINDOW_S` of the first is the same request, not a second one:
a scheduler signals every process of a job, and a study passes the signal on to its runs'
processes, so one preemption can reach a process twice in quick succession.

Handlers are installed only from the main thread (Python's rule) and never over a signal the
process was told to ignore (``SIG_IGN``, e.g. SIGINT of a background job); the previous handlers
come back on exit.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, TypeVar

from agekit.runs import checkpoint as ckpt
from agekit.training.progress import to_stderr

#: The signals that ask a run or a study to stop.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT) + (
    (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()
)
#: Seconds after the first signal during which the same signal again is taken as a repeat of it.
REPEAT_WINDOW_S = 2.0

_Handlers = TypeVar("_Handlers", bound="StopSignals")


class StopSignals:
    """While entered, records the first stop signal (:attr:`received`) and counts distinct
    requests (:attr:`count`: repeats within the window are not counted); subclasses act in
    :meth:`on_first`, :meth:`on_second` and :meth:`on_repeat`, which run in the signal handler."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.count = 0
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}
        #: The first request came from :meth:`request`, not from a signal.
        self._requested = False

    def __enter__(self: _Handlers) -> _Handlers:
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue
            self._previous[signum] = previous
            signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def request(self, signum: int) -> None:
        """A stop request that did not come as a signal (a closed output stream), handled as the
        first ``signum``; only from the main thread, where the handlers run.

        It is never a second request, and a signal after it counts as the first: a closed
        terminal both fails the writes and sends SIGHUP, in either order, and the two must not
        add up to a stop without a checkpoint."""
        if self.received is not None:
            return
        self._handle(signum, None)
        self._requested = True

    def _handle(self, signum: int, frame: object) -> None:
        if self._requested:
            self._requested = False
            self.received, self.count = None, 0
        now = time.monotonic()
        if self.received == signum and now - self._first_at < REPEAT_WINDOW_S:
            self.on_repeat(signum)
            return
        self.count += 1
        if self.received is None:
            self.received, self._first_at = signum, now
            self.on_first(signum)
        else:
            self.on_second(signum)

    def on_first(self, signum: int) -> None:
        """The first stop request."""

    def on_second(self, signum: int) -> None:
        """A later request: another signal, or the same one after the repeat window."""

    def on_repeat(self, signum: int) -> None:
        """The first signal again, within the repeat window: by default, a note on stderr."""
        to_stderr(
            f"agekit: {signal.Signals(signum).name} again within {REPEAT_WINDOW_S:g} s: "
            "taken as the same request"
        )


class TrainingStopSignals(StopSignals):
    """The training loop's handlers: the first signal is recorded for the loop to stop at the next
    step boundary (it writes a checkpoint); a second one exits the process at once with the
    conventional status 128 + signal number, writing nothing. Only ``report`` processes (the
    main rank) print."""

    def __init__(self, checkpoint_dir: Path, report: bool = True) -> None:
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.report = report

    def on_first(self, signum: int) -> None:
        if self.report:
            to_stderr(
                f"\nagekit: {signal.Signals(signum).name} received: finishing the current step, "
                f"then writing a checkpoint to {self.checkpoint_dir} (send it again, "
                f"{REPEAT_WINDOW_S:g} s or more later, to stop at once without one)"
            )

    def on_second(self, signum: int) -> None:
        if self.report:
            last = ckpt.latest(self.checkpoint_dir)
            kept = f"the newest checkpoint is {last}" if last else "no checkpoint was written"
            to_stderr(
                f"\nagekit: second signal ({signal.Signals(signum).name}): stopped at once; {kept}"
            )
        os._exit(128 + signum)

    def on_repeat(self, signum: int) -> None:
        if self.report:
            super().on_repeat(signum)
