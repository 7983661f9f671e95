"""The run's experiment trackers as the training loop drives them: :class:`Tracking` holds the
loggers a configuration's ``[[loggers]]`` names (:mod:`agekit.loggers`), opens them for a
:meth:`~agekit.training.trainer.Trainer.fit` (:meth:`Tracking.session`), passes on every
training-log entry and image grid, and closes them however training ends.

Nothing here imports a tracking library: each logger imports its own when it starts, so a run
that names no logger imports none, and one that names a logger imports only that one's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from agekit.config import ExperimentConfig, config_to_dict
from agekit.loggers.base import Logger, RunInfo, RunStatus
from agekit.resolve import Resolver

__all__ = ["Outcome", "Tracking", "run_info"]


@dataclass
class Outcome:
    """How a tracked session ended: set :attr:`status` (the training result's) before the
    session's block ends; a block left by an exception is ``failed`` (``interrupted`` for Ctrl-C
    or a second stop signal)."""

    status: str = "failed"


def run_info(config: ExperimentConfig, run_dir: Path, step: int) -> RunInfo:
    """What the loggers of the run in ``run_dir`` learn when it starts (or resumes) at ``step``:
    the configuration's name as the experiment, the folder's name as the run's."""
    name = run_dir.resolve().name or config.name
    return RunInfo(run_dir, config.name, name, step, config_to_dict(config))


class Tracking:
    """The loggers of one run, on the process that writes (rank 0); empty elsewhere. Entries and
    images reach the loggers during a :meth:`session` only (between their start and finish)."""

    def __init__(self, loggers: Sequence[Logger] = ()) -> None:
        self.loggers = list(loggers)
        #: The loggers started by the session in progress.
        self._open: list[Logger] = []

    @classmethod
    def of(cls, config: ExperimentConfig) -> Tracking:
        """The configuration's loggers, built (ConfigError naming the entry for an unknown name,
        a refused option or a library that is not installed)."""
        return cls(Resolver().loggers(config))

    @contextlib.contextmanager
    def session(self, run: RunInfo) -> Iterator[Outcome]:
        """Start every logger for ``run``; finish each with the :class:`Outcome`'s status when the
        block ends, also when it raises (then the block's exception is the one that propagates)."""
        outcome = Outcome()
        started: list[Logger] = []
        self._open = started
        raised = True
        try:
            for logger in self.loggers:
                logger.start(run)
                started.append(logger)
            yield outcome
            raised = False
        except (KeyboardInterrupt, SystemExit):
            outcome.status = "interrupted"
            raise
        except BaseException:
            outcome.status = "failed"
            raise
        finally:
            self._open = []
            # The trainer's statuses are the loggers' (RunStatus), ``failed`` aside.
            _finish(started, cast(RunStatus, outcome.status), raised)

    def scalars(self, entry: Mapping[str, Any]) -> None:
        """A training-log entry's numbers (all but ``step``, which is their step)."""
        if not self._open:
            return
        values = {
            key: float(value)
            for key, value in entry.items()
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
        }
        for logger in self._open:
            logger.log_scalars(values, int(entry["step"]))

    def images(self, images: Mapping[str, Path], step: int) -> None:
        """The image grids written at ``step``, by name."""
        for logger in self._open:
            logger.log_images(images, step)


def _finish(loggers: Sequence[Logger], status: RunStatus, raised: bool) -> None:
    """Finish every logger, also when one fails to; then raise the first failure, unless the
    session ``raised`` (its exception, on its way out, must not be masked)."""
    failure: Exception | None = None
    for logger in loggers:
        try:
            logger.finish(status)
        except Exception as exc:
            failure = failure or exc
    if failure is not None and not raised:
        raise failure
