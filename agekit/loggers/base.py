"""The contract of the ``logger`` kind: an experiment tracker that a run's scalars and image grids
are sent to as it trains.

A configuration names loggers in its ``[[loggers]]`` tables (none by default: the run folder's
``metrics.jsonl`` is always written and stays the record of a run). The trainer opens each
configured logger on the process that writes (:meth:`Logger.start`), hands it every training-log
entry (:meth:`Logger.log_scalars`) and every image grid it writes (:meth:`Logger.log_images`), and
closes it however training ends (:meth:`Logger.finish`).

A logger's tracking library is imported in :meth:`Logger.start`, never when its module is
imported: listing or validating loggers imports no tracker, and a run imports only the trackers
it names. What the library is called is declared on the class (:attr:`Logger.requires`), so that
a configuration naming a logger whose library is missing is refused when it is read, before any
work starts, with the pip command that installs it (:attr:`Logger.install`;
:func:`agekit.resolve.requirement_error` checks).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

__all__ = ["Logger", "RunInfo", "RunStatus", "folder_option", "remember_id", "remembered_id"]

#: How a run's training ended, as :meth:`Logger.finish` hears it: the trainer's statuses
#: (``complete``, ``time-limit``, ``interrupted``) or ``failed`` when training raised.
RunStatus = Literal["complete", "time-limit", "interrupted", "failed"]


@dataclass(frozen=True)
class RunInfo:
    """What a logger learns about the run it tracks when it starts."""

    #: The run folder; the built-in loggers write under it by default.
    run_dir: Path
    #: The run's name (the configuration's ``name``: a study's run id), the default experiment
    #: or project name.
    experiment: str
    #: The run folder's own name, the default run name.
    name: str
    #: The step training starts from: 0, or a resumed run's step.
    step: int = 0
    #: The resolved configuration, as ``config.json`` holds it.
    config: Mapping[str, Any] = field(default_factory=dict)


class Logger(ABC):
    """An experiment tracker. Subclass it, declare the class under the ``agekit.loggers`` entry
    point group and name it in a configuration's ``[[loggers]]``; options are the keyword arguments
    of ``__init__``, which must not import the tracker's library (:meth:`start` does)."""

    #: The modules the logger imports (top-level names, as ``import`` spells them), checked without
    #: importing them when a configuration is read.
    requires: ClassVar[tuple[str, ...]] = ()
    #: The pip command that installs them, for the error a missing one gives.
    install: ClassVar[str] = "pip install 'agekit[tracking]'"

    def start(self, run: RunInfo) -> None:  # noqa: B027
        """Before the first step: import the library, open (or, at a resumed ``run.step``,
        reopen) the tracker's run."""

    @abstractmethod
    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        """One training-log entry's numbers (the game's terms, ``lr``, ``images_per_s``, ...)."""

    def log_images(self, images: Mapping[str, Path], step: int) -> None:  # noqa: B027
        """The image grids written at ``step``, PNG files by name (``samples``,
        ``reconstructions``); a logger without images ignores them."""

    def finish(self, status: RunStatus) -> None:  # noqa: B027
        """Training ended with ``status``: flush and close the tracker's run."""


def folder_option(run: RunInfo, value: str | None, default: str) -> Path:
    """Where a logger writes: ``value``, or ``default`` when None; a relative path is taken inside
    the run folder, so that a run's tracking moves with it."""
    path = Path(value).expanduser() if value is not None else Path(default)
    return path if path.is_absolute() else run.run_dir / path


def remembered_id(path: Path, run: RunInfo) -> str | None:
    """The tracker's run id that an earlier session of this run kept at ``path``, for a resumed run
    (``run.step`` > 0) to continue the same tracked run; None for a fresh run or when none was
    kept."""
    if run.step == 0 or not path.is_file():
        return None
    return path.read_text().strip() or None


def remember_id(path: Path, run_id: str) -> None:
    """Keep the tracker's run id at ``path`` for :func:`remembered_id`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
