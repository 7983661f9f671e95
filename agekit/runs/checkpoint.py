"""Atomic, code-free checkpoints.

Written to a temporary file in the same folder, fsynced, then renamed over the target
(:mod:`agekit.util.atomic`), so a run killed at any instant leaves either the old checkpoint or the
new one, never half of one (a kill can leave the temporary fragment behind:
:func:`remove_fragments` deletes those). Loaded with ``torch.load(weights_only=True)``: a
checkpoint holds tensors and plain Python values only and can never execute code. A checkpoint
damaged afterwards (a failing disk, a truncated copy) is skipped by :func:`load_newest`, which
falls back to the newest one that loads. Checkpoints written by older agekit versions are read
through the migrations at the end of this module.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import torch

from agekit.config import DistributedConfig
from agekit.runs.layout import CHECKPOINTS
from agekit.util.atomic import write_atomic

#: Notes for the person reading a run (a damaged checkpoint skipped); the commands print them.
log = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.pt$")
#: The temporary files :func:`save_atomic` writes before renaming them into place.
FRAGMENT_PATTERN = re.compile(r"^\.step_\d+\.pt\..+\.tmp$")
#: Why a non-empty file did not load: cut short, overwritten, or a pickle of other objects (which
#: the weights-only loader never runs).
DAMAGED = "the file is damaged (cut short or overwritten) or is not an agekit checkpoint"
#: Suffix of a checkpoint that failed to load and was moved out of the way.
SET_ASIDE_SUFFIX = ".unreadable"


class CheckpointError(RuntimeError):
    pass


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """``torch.save(state)`` to ``path`` with :func:`agekit.util.atomic.write_atomic`."""
    write_atomic(path, lambda handle: torch.save(state, handle))


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        size = path.stat().st_size
        # torch's wording (unpickler, zip reader) is kept for --debug; people get what to act on.
        log.debug("%s: torch.load failed: %s", path, exc)
        reason = "the file is empty" if size == 0 else DAMAGED
        raise CheckpointError(
            f"{path}: not a readable agekit checkpoint ({size} bytes): {reason}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != 1:
        raise CheckpointError(f"{path}: not an agekit checkpoint (missing format marker)")
    return state


def step_path(folder: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` is written in ``folder`` (``step_00001000.pt``)."""
    return folder / f"step_{step:08d}.pt"


def checkpoint_folder(path: Path) -> Path:
    """The folder of a run's checkpoints when ``path`` is a run folder; else ``path`` itself."""
    return path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path


def checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def latest(folder: Path) -> Path | None:
    found = checkpoints(folder)
    return found[-1] if found else None


def load_newest(
    folder: Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any], list[tuple[Path, str]]] | None:
    """The newest checkpoint in ``folder`` that loads: its path, its state, and the newer ones that
    did not load, each with the reason. None when the folder holds no checkpoint at all; raises
    :class:`CheckpointError` naming every file when none of them loads."""
    found = checkpoints(folder)
    if not found:
        return None
    failed: list[tuple[Path, str]] = []
    for path in reversed(found):
        try:
            return path, load(path, map_location), failed
        except CheckpointError as exc:
            failed.append((path, str(exc)))
    names = ", ".join(p.name for p, _ in failed)
    raise CheckpointError(
        f"{folder}: none of the checkpoints loads ({names}); the newest: {failed[0][1]}"
    )


def set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint so it no longer counts as one (kept for inspection)."""
    target = path.with_name(path.name + SET_ASIDE_SUFFIX)
    os.replace(path, target)
    return target


def remove_fragments(folder: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a kill interrupted; returns them."""
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if FRAGMENT_PATTERN.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def prune(folder: Path, keep: int) -> None:
    for old in checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)


def load_resolved(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file, loaded; or a run folder's newest checkpoint that loads, as resume does
    (:func:`load_newest`), with a warning naming each newer one skipped. Skipped files are left
    where they are: reading a run must not change it."""
    path = Path(path)
    if not path.is_dir():
        return path, load(path, map_location)
    folder = checkpoint_folder(path)
    found = load_newest(folder, map_location)
    if found is None:
        raise CheckpointError(f"{path}: no checkpoints (step_*.pt) in {folder}")
    chosen, state, skipped = found
    for _, reason in skipped:  # each reason starts with its file's path
        log.warning("%s; skipped, using the older %s instead", reason, chosen.name)
    return chosen, state


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its newest checkpoint)."""
    path = Path(path)
    if path.is_dir():
        folder = checkpoint_folder(path)
        found = latest(folder)
        if found is None:
            raise CheckpointError(f"{path}: no checkpoints (step_*.pt) in {folder}")
        return found
    return path


# Format migration --------------------------------------------------------------------------------
def saved_config(state: dict[str, Any]) -> dict[str, Any] | None:
    """The configuration a checkpoint was written with, brought up to today's layout: sections and
    keys added since then get the values those runs actually used. None when it holds none."""
    saved: dict[str, Any] | None = state.get("config")
    if saved is not None and "distributed" not in saved:
        # Checkpoints written before the section existed ran with its defaults.
        saved = {**saved, "distributed": DistributedConfig().model_dump(mode="json")}
    if saved is not None and "objective" not in saved.get("game", {"objective": None}):
        # Checkpoints written before game.objective existed trained the AGE game.
        saved = {**saved, "game": {"objective": "age", **saved["game"]}}
    return saved


def rng_state(z_generator: torch.Generator) -> dict[str, Any]:
    """The random states a checkpoint keeps: torch's (CPU and CUDA), the codes' generator's and
    Python's."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "z": z_generator.get_state(),
        "python": random.getstate(),
    }


def restore_rng_state(rng: dict[str, Any], z_generator: torch.Generator) -> None:
    """Set the random states :func:`rng_state` saved."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    z_generator.set_state(rng["z"])
    random.setstate(python_random_state(rng["python"]))


def python_random_state(state: Any) -> tuple[Any, ...]:
    """A saved ``random.getstate()`` as :func:`random.setstate` takes it back, whether its inner
    sequence was stored as a tuple or as a list."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
