"""A study folder's layout: where each run lives, the files it leaves, whether it is done, and
whether it holds results of another configuration than the one planned (an edited study)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agekit.config import Component, config_to_dict
from agekit.config.changes import BUDGET_KEYS, science_changes, science_differences
from agekit.runs.layout import RUNS, RunFolder
from agekit.studies.planned import PlannedRun

#: A study's run folders sit in ``FOLDER/runs/RUN_ID``; without --out, FOLDER is
#: ``runs/studies/NAME``.
STUDIES_DIR = "studies"
#: Written in a run's folder by the study once the run is evaluated: its scores and configuration.
EVAL_FILE = "eval.json"
#: The eval.json key listing the metrics (name and options) its scores come from.
METRIC_SPECS_KEY = "metric_specs"
#: Written in the study folder by ``agekit run``: the validated study, its source and its run ids.
STUDY_FILE = "study.json"
#: Written in a run's folder when the run fails: its error, type and traceback.
FAILED_FILE = "failed.json"
#: The folder inside a study folder where ``agekit run --archive`` moves runs of an earlier
#: configuration, one subfolder per archiving.
ARCHIVE_DIR = "archive"
#: The study's report, its numbers as JSON and as a table, and the folder of its figures.
REPORT_FILE = "report.md"
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
FIGURES_DIR = "figures"
#: The study's own outputs, moved with archived runs: they describe the earlier configuration.
STUDY_OUTPUTS = (REPORT_FILE, SUMMARY_JSON, SUMMARY_CSV, FIGURES_DIR)

#: One changed key: (dotted key, value the folder holds, planned value).
Change = tuple[str, Any, Any]


def study_dir(name: str, out: str | Path | None) -> Path:
    """The folder of the study named ``name``: ``out``, or by default runs/studies/NAME."""
    return Path(out) if out is not None else Path(RUNS) / STUDIES_DIR / name


def run_dir(folder: Path, run: PlannedRun) -> Path:
    return folder / RUNS / run.run_id


def run_log(folder: Path, run: PlannedRun) -> Path:
    """Where a parallel study writes the output of the run's process, beside its folder."""
    # Not with_suffix: run ids hold dots (latent_weight=125.0) that it would cut at.
    return folder / RUNS / f"{run.run_id}.log"


def read_json(path: Path) -> Any:
    """The file's JSON value, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_complete(folder: Path, run: PlannedRun) -> bool:
    """A run is complete when its evaluation exists and was made for the same science: only keys
    that change what is computed are compared (:func:`agekit.config.changes.science_differences`),
    so a
    study folder moved with ``mv``, or given once as an absolute and once as a relative path,
    stays complete."""
    saved = read_json(run_dir(folder, run) / EVAL_FILE)
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        return False
    return not science_differences(saved["config"], config_to_dict(run.config))


def is_scored(folder: Path, run: PlannedRun) -> bool:
    """Complete, and scored with every metric the study plans for it: nothing left to do."""
    return is_complete(folder, run) and not unscored_metrics(folder, run)


def unscored_metrics(folder: Path, run: PlannedRun) -> list[Component]:
    """The run's planned metrics that its evaluation lacks: a metric added to the study (or, where
    the evaluation lists what it scored, one whose options changed) after the run was scored.
    [] when the run holds no evaluation."""
    saved = read_json(run_dir(folder, run) / EVAL_FILE)
    if not isinstance(saved, dict) or not isinstance(saved.get("metrics"), dict):
        return []
    specs = scored_specs(saved)
    return [m for m in run.metrics if not any(_same_metric(m, s) for s in specs)]


def scored_specs(record: dict[str, Any]) -> list[Any]:
    """The metrics an evaluation record's scores come from (:data:`METRIC_SPECS_KEY`); a record
    from before records listed them knows its metrics by name only (options None)."""
    specs = record.get(METRIC_SPECS_KEY)
    if isinstance(specs, list):
        return specs
    return [{"name": name, "options": None} for name in record["metrics"]]


def _same_metric(metric: Component, spec: Any) -> bool:
    """``spec`` (a :data:`METRIC_SPECS_KEY` entry) is ``metric``; options None: known by name
    only."""
    if not isinstance(spec, dict) or spec.get("name") != metric.name:
        return False
    return spec.get("options") is None or spec["options"] == dict(metric.options)


def metric_spec(metric: Component) -> dict[str, Any]:
    """A metric as an evaluation record lists it under :data:`METRIC_SPECS_KEY`."""
    return {"name": metric.name, "options": dict(metric.options)}


def stale_changes(folder: Path, run: PlannedRun) -> list[Change]:
    """How the science of what the run's folder holds (its evaluation, or the configuration its
    checkpoints were trained under) differs from the planned run's; [] when it holds no result
    or the same science. A larger budget is not a change: the run resumes and trains longer."""
    target = run_dir(folder, run)
    stored = []
    evaluation = read_json(target / EVAL_FILE)
    if isinstance(evaluation, dict) and isinstance(evaluation.get("config"), dict):
        stored.append(evaluation["config"])
    if _has_checkpoint(target):
        # config.json is rewritten by every attempt that resumes, so it is the configuration the
        # checkpoints hold, without loading their weights.
        trained = read_json(RunFolder(target).config)
        if isinstance(trained, dict):
            stored.append(trained)
    # A folder with neither holds no result: the trainer starts it over.
    planned = config_to_dict(run.config)
    for config in stored:
        changes = [c for c in science_changes(config, planned) if not _longer(c)]
        if changes:
            return changes
    return []


def _has_checkpoint(target: Path) -> bool:
    from agekit.runs import checkpoint as ckpt

    return ckpt.latest(RunFolder(target).checkpoints) is not None


def _longer(change: Change) -> bool:
    key, stored, planned = change
    if key not in BUDGET_KEYS:
        return False
    numbers = all(isinstance(v, int | float) for v in (stored, planned))
    # A shorter budget is refused by the trainer (a run cannot be shortened): a change here.
    return not numbers or planned >= stored


def describe_stale(folder: Path, stale: Sequence[tuple[PlannedRun, list[Change]]]) -> str:
    """The run folders and changed keys in one line, runs grouped by their changes."""
    groups: dict[str, list[str]] = {}
    for run, changes in stale:
        text = ", ".join(f"{key} {a!r} -> {b!r}" for key, a, b in changes)
        groups.setdefault(text, []).append(run.run_id)
    shown = 4
    parts = []
    for text, ids in groups.items():
        more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
        names = ", ".join(ids[:shown]) + more
        parts.append(f"{names} ({text})")
    return f"{len(stale)} run folder{'s' if len(stale) > 1 else ''} in {folder / RUNS} " + (
        f"hold{'' if len(stale) > 1 else 's'} results of another configuration: " + "; ".join(parts)
    )


def archive_runs(folder: Path, runs: Sequence[PlannedRun]) -> Path:
    """Move ``runs``' folders, and the study's outputs made from them, into a new subfolder of
    ``folder/archive``; returns it."""
    target = folder / ARCHIVE_DIR / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    suffix = 1
    while target.exists():
        suffix += 1
        target = target.with_name(f"{target.name.split('.')[0]}.{suffix}")
    (target / RUNS).mkdir(parents=True)
    for run in runs:
        os.replace(run_dir(folder, run), run_dir(target, run))
    for name in (*STUDY_OUTPUTS, STUDY_FILE):
        if (folder / name).exists():
            os.replace(folder / name, target / name)
    return target
