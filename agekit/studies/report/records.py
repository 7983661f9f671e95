"""What a report reads: every run's evaluation record, the study's plan (study.json), and which
records are results of the plan as it stands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agekit.config.changes import science_differences
from agekit.runs.layout import RUNS
from agekit.studies.layout import EVAL_FILE, STUDY_FILE


class ReportError(ValueError):
    """A file the report reads is damaged; the message names it."""


def _read_object(path: Path, remedy: str) -> dict[str, Any]:
    """The JSON object in ``path``; ReportError naming the file when it is not one."""
    try:
        value = json.loads(path.read_text())
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise ReportError(f"{path}: not valid JSON ({exc}); {remedy}") from None
    if not isinstance(value, dict):
        raise ReportError(f"{path}: expected a JSON object, found {type(value).__name__}; {remedy}")
    return value


def load_records(folder: Path) -> list[dict[str, Any]]:
    """Every run's eval.json; ReportError naming the first damaged one."""
    return [
        _read_object(path, "delete it and run the study again to re-evaluate that run")
        for path in sorted((folder / RUNS).glob(f"*/{EVAL_FILE}"))
    ]


def load_study(folder: Path) -> dict[str, Any]:
    """The study.json that ``agekit run`` writes ({} when absent); ReportError when damaged."""
    path = folder / STUDY_FILE
    if not path.exists():
        return {}
    return _read_object(path, "running the study again (agekit run) writes it anew")


def planned_records(
    records: list[dict[str, Any]], study: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The records whose science is the one study.json plans for their run, and run id -> why
    for the others (an edited study's earlier results, or a run no longer planned). Without the
    plan's configurations (a folder written before they were recorded) every record is kept."""
    configs = study.get("configs")
    if not isinstance(configs, dict):
        return records, {}
    kept, stale = [], {}
    for record in records:
        run_id = str(record.get("run_id"))
        planned = configs.get(run_id, False)
        stored = record.get("config")
        if planned is False:
            stale[run_id] = "not in the study's plan"
        elif not isinstance(planned, dict):
            stale[run_id] = "its cell's tuning has not chosen a configuration yet"
        elif not isinstance(stored, dict):
            stale[run_id] = "its evaluation records no configuration"
        elif changed := science_differences(stored, planned):
            stale[run_id] = f"made with other values of {', '.join(changed)}"
        else:
            kept.append(record)
    return kept, stale
