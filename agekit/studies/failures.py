"""Failure records: a run that fails leaves ``runs/<run>/failed.json`` (its error, type and
traceback), which the closing summary and the report's Failed runs section read."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from agekit.runs.layout import RUNS
from agekit.studies.layout import FAILED_FILE, read_json, run_dir
from agekit.studies.planned import PlannedRun
from agekit.util.atomic import write_json_atomic


def one_line(exc: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def record_failure(folder: Path, run: PlannedRun, exc: BaseException) -> str:
    """Write the run's failed.json for ``exc``; returns the one-line reason."""
    reason = one_line(exc)
    write_json_atomic(
        {
            "run_id": run.run_id,
            "error": reason,
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        run_dir(folder, run) / FAILED_FILE,
    )
    return reason


def record_reason(path: Path, run: PlannedRun, reason: str) -> None:
    """Write a failed.json at ``path`` for a run that ended with no exception of its own to
    record (its process died before it could, e.g. killed for memory)."""
    write_json_atomic(
        {
            "run_id": run.run_id,
            "error": reason,
            "type": None,
            "message": reason,
            "traceback": None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        path,
    )


def recorded_failures(folder: Path) -> dict[str, str]:
    """run id -> one-line reason, for every run of a study folder whose last attempt failed
    (``runs/<run>/failed.json``; a run that succeeds removes its own)."""
    found: dict[str, str] = {}
    for path in sorted(Path(folder).glob(f"{RUNS}/*/{FAILED_FILE}")):
        saved = read_json(path)
        reason = saved.get("error") if isinstance(saved, dict) else None
        found[path.parent.name] = str(reason or f"failed ({path} is unreadable)")
    return found
