"""Run a study: train every planned run (skipping finished ones, resuming interrupted ones),
evaluate it, then write the report.

Every run is validated, values included, before the first one trains, and a run folder holding
results of another configuration (the study was edited since) is refused then too, unless
``--archive`` moves it aside: a study folder never mixes two configurations. A run that fails later
(an exception while training or evaluating) does not stop the others: its error is kept in
``runs/<run>/failed.json``, the report is written for what finished and lists what failed, and
``agekit run`` exits with 1. SIGTERM or SIGINT lets the training in progress write a checkpoint,
stops the study and exits with 143 or 130; running the same command again continues it.

This module plans, executes and reports; the parts live beside it: :mod:`.layout` (the study
folder), :mod:`.parallel` (subprocess runs and signal forwarding), :mod:`.console` (progress
and summaries), :mod:`.failures` (failed.json records), :mod:`.stopping` (stop signals).
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from agekit.config import ConfigError, config_to_dict
from agekit.runs import checkpoint as ckpt
from agekit.runs.provenance import PROVENANCE_KEY, provenance
from agekit.studies.console import (
    Overall,
    console,
    err_console,
    print_closing,
    run_work,
    short_summary,
)
from agekit.studies.failures import record_failure, record_reason, recorded_failures
from agekit.studies.layout import (
    ARCHIVE_DIR,
    EVAL_FILE,
    FAILED_FILE,
    STUDY_FILE,
    Change,
    archive_runs,
    describe_stale,
    is_complete,
    run_dir,
    stale_changes,
    study_dir,
)
from agekit.studies.parallel import run_parallel
from agekit.studies.spec import PlannedRun, StudySpec, effective_spec, load_study, plan
from agekit.studies.stopping import StudyInterrupted, StudySignals
from agekit.util.atomic import write_json_atomic

#: Re-exported: the names callers of the runner have used (each lives in its own module now).
__all__ = [
    "EVAL_FILE",
    "FAILED_FILE",
    "StudyInterrupted",
    "StudyResult",
    "execute",
    "is_complete",
    "main_run",
    "recorded_failures",
    "run_dir",
    "run_study",
    "study_dir",
]


@dataclass
class StudyResult:
    """What one ``run_study`` call did."""

    folder: Path
    #: Runs this call considered (all planned, or those --only selected).
    selected: int
    #: Already complete when the call started.
    skipped: int
    #: Trained and evaluated by this call.
    finished: list[str] = field(default_factory=list)
    #: run id -> one-line reason, for runs that failed in this call.
    failed: dict[str, str] = field(default_factory=dict)

    def __fspath__(self) -> str:
        return str(self.folder)


def execute(
    folder: Path,
    run: PlannedRun,
    eval_seed: int,
    progress: bool = True,
    handle_signals: bool = False,
) -> dict[str, Any]:
    """Train (or resume) and evaluate one run; returns its evaluation record.

    With ``handle_signals``, a SIGTERM or SIGINT during training finishes the step, writes a
    checkpoint and raises :class:`StudyInterrupted` (nothing is evaluated). The run folder is
    locked from before its checkpoints are looked at until its evaluation is written
    (:class:`agekit.runs.lock.RunLock`): another writer there makes this raise RunFolderBusy.
    """
    from agekit.runs.lock import RunLock

    with RunLock(run_dir(folder, run)):
        return _execute(folder, run, eval_seed, progress, handle_signals)


def _execute(
    folder: Path, run: PlannedRun, eval_seed: int, progress: bool, handle_signals: bool
) -> dict[str, Any]:
    from agekit.evaluation.scoring import evaluate
    from agekit.training.trainer import Trainer

    target = run_dir(folder, run)
    # The trainer compares only the science with a checkpoint's configuration, so a run
    # interrupted in a study folder that was moved since then resumes here.
    trainer = Trainer(run.config, target, progress=progress)
    resume = ckpt.latest(trainer.checkpoint_dir) is not None
    started = time.perf_counter()
    result = trainer.fit(resume=resume, handle_signals=handle_signals)
    if trainer.interrupted_by is not None:
        raise StudyInterrupted(
            trainer.interrupted_by,
            run.run_id,
            f"at step {result.step}: checkpoint written to {ckpt.latest(trainer.checkpoint_dir)}",
        )
    train_seconds = time.perf_counter() - started
    record = evaluate(target, list(run.metrics), seed=eval_seed, device=run.config.train.device)
    record.update(
        run_id=run.run_id,
        cell=run.cell,
        setting=run.setting,
        train_seed=run.seed,
        axes={key: value for key, value in run.axis_values},
        phase=run.phase,
        # a tuning run's grid point, or the one a tuned cell's run was given
        grid={key: value for key, value in run.grid_values},
        tunes=run.tunes,
        rung=run.rung,
        status=result.status,
        resumed=resume,
        train_seconds_this_session=train_seconds,
        train_seconds_total=trainer.elapsed,
        config=config_to_dict(run.config),
    )
    write_json_atomic(record, target / EVAL_FILE)
    with contextlib.suppress(FileNotFoundError):
        (target / FAILED_FILE).unlink()  # an earlier attempt's error no longer holds
    return record


# The study ---------------------------------------------------------------------------------------
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
    folder = study_dir(spec, out)
    runs = plan(spec, str(source), folder, profile)  # validates everything before any training
    spec = effective_spec(spec, str(source), profile)
    if only:
        unknown = sorted(set(only) - {r.run_id for r in runs})
        if unknown:
            listing = "\n  ".join(r.run_id for r in runs)
            raise ConfigError(f"--only: no run named {', '.join(unknown)}; runs:\n  {listing}")
        selected = [r for r in runs if r.run_id in only]
    else:
        selected = runs
    # A tuned cell's final runs wait for their choice: their configuration is not known yet.
    stale = _stale(folder, [r for r in selected if not r.awaiting_tuning])
    if stale and not archive:
        raise ConfigError(
            f"{source}: {describe_stale(folder, stale)}; nothing was trained: give a new --out, "
            f"or pass --archive to move them to {folder / ARCHIVE_DIR}/ and run them again"
        )
    if stale:
        _archive(folder, stale)
    folder.mkdir(parents=True, exist_ok=True)
    _record_plan(spec, source, profile, runs, folder)
    pending = [r for r in selected if not is_complete(folder, r)]
    for run in selected:
        if run not in pending:
            # Scored with this science: an older failure record (say, of a crash after the
            # evaluation was written) no longer describes the run.
            (run_dir(folder, run) / FAILED_FILE).unlink(missing_ok=True)
    result = StudyResult(folder, len(selected), len(selected) - len(pending))
    console.print(
        f"[bold]{escape(spec.name)}[/bold]: {len(runs)} runs planned, {len(selected)} selected, "
        f"{result.skipped} already complete, {len(pending)} to run -> {escape(str(folder))}",
        soft_wrap=True,
    )
    jobs = jobs or spec.jobs
    overall = Overall(len(selected), result.skipped, jobs if len(pending) > 1 else 1)
    for run in pending:
        overall.plan(run.setting, run_work(run))
    if not only:
        for setting, count, work in _future_rungs(spec, runs):
            overall.plan(setting, work, runs=count)
    parallel = jobs > 1 and len(pending) > 1
    signals = (
        StudySignals(raise_at_once=not parallel) if handle_signals else contextlib.nullcontext()
    )
    with signals as received:

        def train(batch: list[PlannedRun]) -> None:
            # one way for the whole study: the signal handling above was chosen for it
            if parallel:
                run_parallel(
                    path, folder, batch, jobs, profile, overall, result, received, progress
                )
            else:
                _run_sequential(folder, batch, spec.eval_seed, overall, result, progress, signals)

        # Tuning runs first, rung by rung: a later rung, and a tuned cell's final runs, exist
        # in the plan only once what they depend on is evaluated.
        attempted: set[str] = set()
        while True:
            ready = [
                r
                for r in runs
                if r.run_id not in attempted
                and not r.awaiting_tuning
                and (not only or r.run_id in only)
                and not is_complete(folder, r)
            ]
            stage = [r for r in ready if r.phase == "tune"] or ready
            if not stage:
                break
            attempted.update(r.run_id for r in stage)
            stage = _set_aside_stale(folder, stage, archive, overall, result)
            if stage:
                train(stage)
            runs = plan(spec, str(source), folder, profile, check=False)
            _record_plan(spec, source, profile, runs, folder)
        # a later rung joined the plan while the study ran
        result.selected = sum(1 for r in runs if not only or r.run_id in only)
        _fail_awaiting(spec, folder, runs, only, overall, result)
    if report:
        _write_report(folder)
    print_closing(spec, overall, result)
    return result


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
        tuning = setting.tuning
        if tuning is None or tuning.halving is None:
            continue
        cells = {r.cell: r for r in runs if r.setting == setting.name and r.phase == "final"}
        for cell, final in cells.items():
            if any(r.tunes == cell and r.phase == "tune" and not r.rung for r in runs):
                continue
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
    for run in runs:
        if not run.awaiting_tuning or (only and run.run_id not in only):
            continue
        missing = [
            r.run_id
            for r in runs
            if r.phase == "tune" and r.tunes == run.cell and not is_complete(folder, r)
        ]
        if missing:
            reason = (
                f"its cell's tuning is not finished: {', '.join(missing)} not evaluated; "
                "running the study again retries them"
            )
        else:
            metric = next(s.tuning for s in spec.settings if s.name == run.setting)
            reason = (
                f"its cell's tuning chose nothing: no trial has a finite mean "
                f"{metric.metric if metric else '?'} over its tuning runs (see their eval.json)"
            )
        _fail_unstarted(folder, run, reason, overall, result)


def _run_sequential(
    folder: Path,
    pending: list[PlannedRun],
    eval_seed: int,
    overall: Overall,
    result: StudyResult,
    progress: bool,
    signals: Any,
) -> None:
    handle = isinstance(signals, StudySignals)
    for index, run in enumerate(pending, 1):
        title = f"run {index}/{len(pending)}: {run.run_id}"
        if console.is_terminal:
            console.rule(escape(title))
        else:
            console.print(title, highlight=False, soft_wrap=True)
        started = time.perf_counter()
        try:
            record = execute(folder, run, eval_seed, progress, handle_signals=handle)
        except StudyInterrupted as stop:
            stop.run_id = stop.run_id or run.run_id
            raise
        except Exception as exc:  # one run's failure must not stop the others
            reason = record_failure(folder, run, exc)
            result.failed[run.run_id] = reason
            overall.finish(True, run.setting, run_work(run), time.perf_counter() - started)
            console.print(
                f"[red]failed[/red] {escape(run.run_id)}: {escape(reason)}", soft_wrap=True
            )
        else:
            result.finished.append(run.run_id)
            overall.finish(False, run.setting, run_work(run), time.perf_counter() - started)
            console.print(escape(short_summary(record)), soft_wrap=True)
        console.print(overall.line(), highlight=False, soft_wrap=True)


def _write_report(folder: Path) -> None:
    """The report of what finished; it lists the runs that failed itself."""
    from agekit.studies.report import write_report

    write_report(folder)


def _continue_command(args: Any) -> str:
    parts = ["agekit", "run", str(args.study)]
    if args.out:
        parts += ["--out", str(args.out)]
    if args.profile:
        parts += ["--profile", args.profile]
    for run_id in args.only or ():
        parts += ["--only", run_id]
    if args.jobs:
        parts += ["--jobs", str(args.jobs)]
    parts += ["--no-report"] if args.no_report else []
    parts += ["--quiet"] if args.quiet else []
    return shlex.join(parts)


def main_run(args: Any) -> int:
    if args.list:
        spec, source = load_study(args.study)
        for run in plan(spec, str(source), study_dir(spec, args.out), args.profile, check=False):
            print(run.run_id)
        return 0
    try:
        result = run_study(
            args.study,
            out=args.out,
            jobs=args.jobs,
            only=args.only or (),
            profile=args.profile,
            report=not args.no_report,
            progress=not args.quiet,
            handle_signals=True,
            archive=args.archive,
        )
    except StudyInterrupted as stop:
        name = signal.Signals(stop.signum).name
        where = f" during run {stop.run_id}" if stop.run_id else ""
        detail = f" {stop.detail};" if stop.detail else ""
        err_console.print(
            f"agekit run: interrupted by {name}{where}:{detail} run `{_continue_command(args)}` "
            "again to continue (finished runs are skipped, an interrupted training resumes "
            "from its checkpoint)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return 128 + stop.signum
    return 1 if result.failed else 0
