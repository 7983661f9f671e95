"""Run a study: train every planned run (skipping finished ones, resuming interrupted ones),
evaluate it, then write the report.

Every run is validated, values included, before the first one trains, and a run folder holding
results of another configuration (the study was edited since) is refused then too, unless
``--archive`` moves it aside: a study folder never mixes two configurations. A run that fails later
(an exception while training or evaluating) does not stop the others: its error is kept in
``runs/<run>/failed.json``, the report is written for what finished and lists what failed, and
``agekit run`` exits with 1. SIGTERM or SIGINT lets the training in progress write a checkpoint,
stops the study and exits with 143 or 130; running the same command again continues it.

This module plans the study's stages and records them; the parts live beside it: :mod:`.layout`
(the study folder), :mod:`.sequential` (runs in this process), :mod:`.parallel` (subprocess runs
and signal forwarding), :mod:`.console` (progress and summaries), :mod:`.failures` (failed.json
records), :mod:`.stopping` (stop signals), :mod:`.result` (what a call did).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape

from agekit.config import ConfigError, config_to_dict
from agekit.runs.provenance import PROVENANCE_KEY, provenance
from agekit.studies.checks import Checker
from agekit.studies.console import Overall, console, print_closing, run_work
from agekit.studies.failures import record_reason
from agekit.studies.layout import (
    ARCHIVE_DIR,
    FAILED_FILE,
    STUDY_FILE,
    Change,
    archive_runs,
    describe_stale,
    is_complete,
    is_scored,
    run_dir,
    stale_changes,
    study_dir,
)
from agekit.studies.parallel import run_parallel
from agekit.studies.planned import PlannedRun, cell_name
from agekit.studies.result import StudyResult
from agekit.studies.schema import StudySpec
from agekit.studies.sequential import run_sequential
from agekit.studies.spec import effective_spec, load_study, plan
from agekit.studies.stopping import StudySignals
from agekit.util.atomic import write_json_atomic


def run_study(
    path: str | Path,
    out: str | Path | None = None,
    jobs: int | None = None,
    only: Sequence[str] = (),
    profile: str | None = None,
    report: bool = True,
    progress: bool = True,
    handle_signals: bool = False,
    archive: bool = False,
) -> StudyResult:
    """Run every selected run that is not complete, then write the report.

    A run that fails is recorded (``runs/<run>/failed.json``) and the others go on; the result
    lists the failures. With ``handle_signals`` (``agekit run``), SIGTERM/SIGINT checkpoints the
    training in progress and raises :class:`StudyInterrupted`. A selected run whose folder holds
    results of another configuration (the study was edited) is refused with ConfigError before
    any training, unless ``archive`` moves such folders to ``archive/`` first.
    """
    spec, source = load_study(path)
    folder = study_dir(spec.name, out)
    runs = _planned(spec, source, folder, profile, only)
    spec = effective_spec(spec, str(source), profile)
    selected = _selected(runs, only)
    _refuse_stale(source, folder, selected, archive)
    folder.mkdir(parents=True, exist_ok=True)
    _record_plan(spec, source, profile, runs, folder)
    pending = _pending(folder, selected)
    result = StudyResult(folder, len(selected), len(selected) - len(pending))
    console.print(
        f"[bold]{escape(spec.name)}[/bold]: {len(runs)} runs planned, {len(selected)} selected, "
        f"{result.skipped} already complete, {len(pending)} to run -> {escape(str(folder))}",
        soft_wrap=True,
    )
    jobs = jobs or spec.jobs
    overall = _overall(spec, runs, selected, pending, result, jobs, only)
    parallel = jobs > 1 and len(pending) > 1
    signals = (
        StudySignals(raise_at_once=not parallel) if handle_signals else contextlib.nullcontext()
    )
    study = _Stages(spec, source, profile, folder, only, archive, overall, result)
    with signals as received:

        def train(batch: list[PlannedRun]) -> None:
            # one way for the whole study: the signal handling above was chosen for it
            if parallel:
                run_parallel(
                    path, folder, batch, jobs, profile, overall, result, received, progress
                )
            else:
                run_sequential(folder, batch, spec.eval_seed, overall, result, progress, signals)

        study.run(runs, train)
    if report:
        _write_report(folder)
    print_closing(spec, overall, result)
    return result


def _planned(
    spec: StudySpec, source: Path, folder: Path, profile: str | None, only: Sequence[str]
) -> list[PlannedRun]:
    """Every run, validated before any training; with ``only``, the values of the selected runs
    alone are checked (a parallel study's worker runs one run, and checking every run each time
    cost seconds per run)."""
    runs = plan(spec, str(source), folder, profile, check=not only)
    if only:
        checker = Checker(str(source))
        for run in _selected(runs, only):
            checker.check(run)
    return runs


def _selected(runs: list[PlannedRun], only: Sequence[str]) -> list[PlannedRun]:
    """The runs ``--only`` names (every run without it); ConfigError naming an unknown one."""
    if not only:
        return runs
    unknown = sorted(set(only) - {r.run_id for r in runs})
    if unknown:
        listing = "\n  ".join(r.run_id for r in runs)
        raise ConfigError(f"--only: no run named {', '.join(unknown)}; runs:\n  {listing}")
    return [r for r in runs if r.run_id in only]


def _refuse_stale(source: Path, folder: Path, selected: list[PlannedRun], archive: bool) -> None:
    """Before any training: refuse, or with ``archive`` move aside, the selected runs' folders
    that hold results of another configuration."""
    # A tuned cell's final runs wait for their choice: their configuration is not known yet.
    stale = _stale(folder, [r for r in selected if not r.awaiting_tuning])
    if stale and not archive:
        raise ConfigError(
            f"{source}: {describe_stale(folder, stale)}; nothing was trained: give a new --out, "
            f"or pass --archive to move them to {folder / ARCHIVE_DIR}/ and run them again"
        )
    if stale:
        _archive(folder, stale)


def _pending(folder: Path, selected: list[PlannedRun]) -> list[PlannedRun]:
    """The selected runs not complete yet, or complete but lacking a planned metric's scores; a
    complete run's old failure record is removed."""
    pending = [r for r in selected if not is_scored(folder, r)]
    for run in selected:
        if run not in pending:
            # Scored with this science: an older failure record (say, of a crash after the
            # evaluation was written) no longer describes the run.
            (run_dir(folder, run) / FAILED_FILE).unlink(missing_ok=True)
    return pending


def _overall(
    spec: StudySpec,
    runs: list[PlannedRun],
    selected: list[PlannedRun],
    pending: list[PlannedRun],
    result: StudyResult,
    jobs: int,
    only: Sequence[str],
) -> Overall:
    """The study's progress, with the work of every pending run and of the rungs to come."""
    overall = Overall(len(selected), result.skipped, jobs if len(pending) > 1 else 1)
    for run in pending:
        overall.plan(run.setting, run_work(run))
    if not only:
        for setting, count, work in _future_rungs(spec, runs):
            overall.plan(setting, work, runs=count)
    return overall


@dataclass
class _Stages:
    """A study's training in stages: its tuning runs first, rung by rung, then its other runs."""

    spec: StudySpec
    source: Path
    profile: str | None
    folder: Path
    only: Sequence[str]
    archive: bool
    overall: Overall
    result: StudyResult

    def run(self, runs: list[PlannedRun], train: Callable[[list[PlannedRun]], None]) -> None:
        """Train stage after stage until none is left, then fail the runs still awaiting their
        cell's choice. A later rung, and a tuned cell's final runs, exist in the plan only once
        what they depend on is evaluated, so the study is planned again after each stage."""
        folder, only = self.folder, self.only
        attempted: set[str] = set()
        while True:
            ready = [
                r
                for r in runs
                if r.run_id not in attempted
                and not r.awaiting_tuning
                and (not only or r.run_id in only)
                and not is_scored(folder, r)
            ]
            stage = [r for r in ready if r.phase == "tune"] or ready
            if not stage:
                break
            attempted.update(r.run_id for r in stage)
            stage = _set_aside_stale(folder, stage, self.archive, self.overall, self.result)
            if stage:
                train(stage)
            runs = plan(self.spec, str(self.source), folder, self.profile, check=False)
            _record_plan(self.spec, self.source, self.profile, runs, folder)
        # a later rung joined the plan while the study ran
        self.result.selected = sum(1 for r in runs if not only or r.run_id in only)
        _fail_awaiting(self.spec, folder, runs, only, self.overall, self.result)


def _stale(folder: Path, runs: Sequence[PlannedRun]) -> list[tuple[PlannedRun, list[Change]]]:
    return [(run, changes) for run in runs if (changes := stale_changes(folder, run))]


def _archive(folder: Path, stale: Sequence[tuple[PlannedRun, list[Change]]]) -> None:
    target = archive_runs(folder, [run for run, _ in stale])
    console.print(
        f"archived {len(stale)} run folder{'s' if len(stale) > 1 else ''} of another "
        f"configuration, with the study's earlier report, to {escape(str(target))}",
        soft_wrap=True,
    )


def _set_aside_stale(
    folder: Path, stage: list[PlannedRun], archive: bool, overall: Overall, result: StudyResult
) -> list[PlannedRun]:
    """``stage`` less the runs whose folder holds another configuration's results, each recorded
    as failed (or archived, with ``archive``). Only runs planned after the study started can be
    such: a later rung, or a tuned cell's final runs whose choice differs from an earlier one."""
    stale = _stale(folder, stage)
    if not stale:
        return stage
    if archive:
        _archive(folder, stale)
        return stage
    for run, changes in stale:
        reason = (
            f"{describe_stale(folder, [(run, changes)])}; run the study again with --archive "
            "to move it aside"
        )
        _fail_unstarted(folder, run, reason, overall, result)
    return [run for run in stage if all(run is not s for s, _ in stale)]


def _fail_unstarted(
    folder: Path, run: PlannedRun, reason: str, overall: Overall, result: StudyResult
) -> None:
    """Record ``run`` as failed without training it: failed.json, the result, the progress."""
    record_reason(run_dir(folder, run) / FAILED_FILE, run, reason)
    result.failed[run.run_id] = reason
    overall.finish(True, run.setting, run_work(run))
    console.print(f"[red]failed[/red] {escape(run.run_id)}: {escape(reason)}", soft_wrap=True)


def _future_rungs(spec: StudySpec, runs: list[PlannedRun]) -> list[tuple[str, int, float]]:
    """Per setting, the runs (and their iterations) of rungs that the plan holds only once the
    rung before is evaluated: successive halving's rung 1 of each cell not planned yet."""
    future = []
    for setting in spec.settings:
        count, work = 0, 0.0
        if setting.tuning is None or setting.tuning.halving is None:
            continue
        cells = {r.cell: r for r in runs if r.setting == setting.name and r.phase == "final"}
        for cell, final in cells.items():
            if any(r.tunes == cell and r.phase == "tune" and not r.rung for r in runs):
                continue
            tuning = spec.cell_tuning(setting, final.axis_values) or setting.tuning
            promoted = tuning.promoted_count() * len(tuning.seeds)
            count += promoted
            work += promoted * run_work(final)
        future.append((setting.name, count, work))
    return future


def _record_plan(
    spec: StudySpec, source: Path, profile: str | None, runs: list[PlannedRun], folder: Path
) -> None:
    write_json_atomic(
        {
            "study": spec.model_dump(mode="json"),
            "source": str(source),
            "profile": profile,
            "runs": [r.run_id for r in runs if r.phase != "tune"],
            "tuning_runs": [r.run_id for r in runs if r.phase == "tune"],
            # what the report compares each eval.json with (None: awaiting its tuning's choice)
            "configs": {
                r.run_id: None if r.awaiting_tuning else config_to_dict(r.config) for r in runs
            },
            PROVENANCE_KEY: provenance(),
        },
        folder / STUDY_FILE,
    )


def _fail_awaiting(
    spec: StudySpec,
    folder: Path,
    runs: list[PlannedRun],
    only: Sequence[str],
    overall: Overall,
    result: StudyResult,
) -> None:
    """Record as failed the selected final runs whose cell's tuning chose nothing, naming the
    tuning runs still missing (a tuning run failed or was not selected) or saying that none
    scored."""
    settings = {setting.name: setting for setting in spec.settings}
    for run in runs:
        if not run.awaiting_tuning or (only and run.run_id not in only):
            continue
        # a tuned_by setting's cell waits on the same cell of the setting it borrows from
        tuned = settings[settings[run.setting].tuned_by or run.setting]
        cell = cell_name(tuned.name, run.axis_values)
        missing = [
            r.run_id
            for r in runs
            if r.phase == "tune" and r.tunes == cell and not is_complete(folder, r)
        ]
        if missing:
            reason = (
                f"its cell's tuning is not finished: {', '.join(missing)} not evaluated; "
                "running the study again retries them"
            )
        else:
            metric = tuned.tuning.metric if tuned.tuning else "?"
            reason = (
                f"its cell's tuning chose nothing: no trial has a finite mean "
                f"{metric} over its tuning runs (see their eval.json)"
            )
        _fail_unstarted(folder, run, reason, overall, result)


def _write_report(folder: Path) -> None:
    """The report of what finished; it lists the runs that failed itself."""
    from agekit.studies.report import write_report

    write_report(folder)
