"""What :meth:`agekit.training.trainer.Trainer.fit` settles before its first step: the run folder's
lock, shared by the ranks (:func:`shared_run_lock`); the fragments a killed checkpoint write left
(:func:`clear_fragments`); the resume policy (:func:`newest_resumable`, :func:`check_budget`,
:func:`refuse_overwrite`, :func:`restart_log`); and the configuration the run records
(:func:`record_config`).

The messages name what to do: a run cannot be shortened, a folder with checkpoints is continued
only on request, and a resumed run must keep the science it was started with.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from agekit.config import ExperimentConfig, config_to_dict
from agekit.config.changes import resume_refusal
from agekit.runs import checkpoint as ckpt
from agekit.runs.lock import RunLock
from agekit.runs.provenance import PROVENANCE_KEY, provenance
from agekit.training import distributed
from agekit.training.progress import truncate_records

#: Notes for the person running the trainer (a resume that fell back, a torn log line dropped);
#: ``agekit train`` prints them, other programs see them through :mod:`logging`.
log = logging.getLogger(__name__)

__all__ = [
    "check_budget",
    "clear_fragments",
    "newest_resumable",
    "record_config",
    "refuse_overwrite",
    "restart_log",
    "shared_run_lock",
]


@contextlib.contextmanager
def shared_run_lock(
    run_dir: Path, is_main: bool, device: torch.device, multi_process: bool = False
) -> Iterator[None]:
    """The run folder's lock (:class:`agekit.runs.lock.RunLock`), taken by the process that writes
    (rank 0); with ``multi_process`` every rank learns whether it was refused, so that all stop
    together."""
    lock = RunLock(run_dir)
    refusal: Exception | None = None
    if is_main:
        try:
            lock.__enter__()
        except Exception as exc:  # RunFolderBusy, or a folder that cannot be created
            refusal = exc
    try:
        if multi_process and distributed.any_rank(refusal is not None, device):
            raise refusal or distributed.DistributedError(
                f"{run_dir}: rank 0 could not lock the run folder (its error says why)"
            )
        if refusal is not None:
            raise refusal
        if lock.stale is not None:
            log.warning(
                "%s: left by %s, which is no longer running; taken over", lock.path, lock.stale
            )
        yield
    finally:
        if is_main and refusal is None:
            lock.__exit__(None, None, None)


def clear_fragments(folder: Path) -> None:
    """Delete the temporary files of checkpoint writes that a kill interrupted, with a note."""
    removed = ckpt.remove_fragments(folder)
    if removed:
        log.info(
            "removed %s: left by a checkpoint write that was killed",
            ", ".join(p.name for p in removed),
        )


def newest_resumable(
    folder: Path, config: ExperimentConfig, device: torch.device, is_main: bool
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``folder`` that loads, and its state; None, with a warning, when
    there is none.

    Newer checkpoints that do not load (damaged, truncated) are skipped with a warning naming
    them, and renamed ``*.unreadable`` by ``is_main`` (the process that writes); when none loads,
    CheckpointError names them all. A checkpoint whose science differs from ``config`` is refused
    with CheckpointError.
    """
    found = ckpt.load_newest(folder, map_location=device)
    if found is None:
        if is_main:
            log.warning("resume: no checkpoint in %s; starting a fresh run at step 0", folder)
        return None
    path, state, unreadable = found
    for bad, reason in unreadable if is_main else []:
        kept = bad
        with contextlib.suppress(OSError):  # kept in place if it cannot be renamed
            kept = ckpt.set_aside(bad)
        log.warning(
            "%s; kept as %s, resuming from the older %s instead", reason, kept.name, path.name
        )
    saved = ckpt.saved_config(state)
    # Only the science must match: a moved folder (out_dir, name), another device or cadence,
    # or a larger budget (train longer) still continues the same run.
    refusal = None if saved is None else resume_refusal(saved, config_to_dict(config))
    if refusal is not None:
        raise ckpt.CheckpointError(
            f"{path}: the run was started with a different configuration ({refusal}); "
            "use a new run folder or the original values"
        )
    return path, state


def check_budget(run_dir: Path, step: int, budget: int | None) -> None:
    """CheckpointError when a resumed run at ``step`` is past its step ``budget`` (None: none)."""
    if budget is not None and budget < step:
        raise ckpt.CheckpointError(
            f"{run_dir}: the checkpoint is at step {step}, past this budget of "
            f"{budget} steps (train.steps, train.epochs); a run cannot be shortened: "
            f"give a budget of at least {step} steps, or use a new run folder"
        )


def refuse_overwrite(run_dir: Path, folder: Path) -> None:
    """CheckpointError when a run that was not asked to resume finds checkpoints in ``folder``."""
    if ckpt.latest(folder) is not None:
        raise ckpt.CheckpointError(
            f"{run_dir} already holds checkpoints; pass --resume to continue that run "
            "or choose another run folder (nothing was overwritten)"
        )


def restart_log(path: Path, step: int) -> None:
    """Drop the training log's records after ``step`` (they will be redone) and its torn lines,
    with a warning counting the torn ones."""
    torn = truncate_records(path, step)
    if torn:
        log.warning(
            "%s: dropped %d unreadable line%s (torn by a crash or a full disk)",
            path,
            torn,
            "" if torn == 1 else "s",
        )


def record_config(path: Path, config: ExperimentConfig) -> None:
    """Write the run's configuration, with the versions it runs on, to ``path``
    (``config.json``), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {**config_to_dict(config), PROVENANCE_KEY: provenance()}
    path.write_text(json.dumps(saved, indent=2) + "\n")
