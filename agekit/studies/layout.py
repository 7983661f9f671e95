"""A study folder's layout: where each run lives, the files it leaves, and whether it is done."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agekit.config import config_to_dict
from agekit.science import science_differences
from agekit.studies.spec import PlannedRun, StudySpec

EVAL_FILE = "eval.json"
#: Written in the study folder by ``agekit run``: the validated study, its source and its run ids.
STUDY_FILE = "study.json"
#: Written in a run's folder when the run fails: its error, type and traceback.
FAILED_FILE = "failed.json"


def study_dir(spec: StudySpec, out: str | Path | None) -> Path:
    return Path(out) if out is not None else Path("runs") / "studies" / spec.name


def run_dir(folder: Path, run: PlannedRun) -> Path:
    return folder / "runs" / run.run_id


def read_json(path: Path) -> Any:
    """The file's JSON value, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_complete(folder: Path, run: PlannedRun) -> bool:
    """A run is complete when its evaluation exists and was made for the same science: only keys
    that change what is computed are compared (:func:`agekit.science.science_differences`), so a
    study folder moved with ``mv``, or given once as an absolute and once as a relative path,
    stays complete."""
    saved = read_json(run_dir(folder, run) / EVAL_FILE)
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        return False
    return not science_differences(saved["config"], config_to_dict(run.config))
