"""Run a study: train every planned run (skipping finished ones, resuming interrupted ones),
evaluate it, then write the report.

Every run is validated, values included, before the first one trains. A run that fails later
(an exception while training or evaluating) does not stop the others: its error is kept in
``runs/<run>/failed.json``, the report is written for what finished and lists what failed, and
``agekit run`` exits with 1. SIGTERM or SIGINT lets the training in progress write a checkpoint,
stops the study and exits with 143 or 130; running the same command again continues it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from agekit import checkpoint as ckpt
from agekit.atomic import write_json_atomic
from agekit.config import ConfigError, config_to_dict
from agekit.progress import to_stderr
from agekit.science import science_differences
from agekit.signals import StopSignals
from agekit.studies.spec import PlannedRun, StudySpec, load_study, plan

console = Console()
err_console = Console(stderr=True)

EVAL_FILE = "eval.json"
#: Written in a run's folder when the run fails: its error, type and traceback.
FAILED_FILE = "failed.json"
#: Seconds a parallel study waits for a run's process to acknowledge a stop signal it may have
#: received directly (a scheduler signals every process of a job) before passing it on.
FORWARD_GRACE_S = 2.0


class StudyInterrupted(BaseException):
    """A stop signal ended the study; the run in progress (if any) wrote a checkpoint.

    A BaseException, so that the study's fail-soft handling of run errors never swallows it.
    """

    def __init__(self, signum: int, run_id: str | None = None, detail: str = "") -> None:
        super().__init__(signum, run_id, detail)
        self.signum = signum
        self.run_id = run_id
        self.detail = detail


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


def study_dir(spec: StudySpec, out: str | Path | None) -> Path:
    return Path(out) if out is not None else Path("runs") / "studies" / spec.name


def run_dir(folder: Path, run: PlannedRun) -> Path:
    return folder / "runs" / run.run_id


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_complete(folder: Path, run: PlannedRun) -> bool:
    """A run is complete when its evaluation exists and was made for the same science: only keys
    that change what is computed are compared (:func:`agekit.science.science_differences`), so a
    study folder moved with ``mv``, or given once as an absolute and once as a relative path,
    stays complete."""
    saved = _read_json(run_dir(folder, run) / EVAL_FILE)
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        return False
    return not science_differences(saved["config"], config_to_dict(run.config))


def execute(
    folder: Path,
    run: PlannedRun,
    eval_seed: int,
    progress: bool = True,
    handle_signals: bool = False,
) -> dict[str, Any]:
    """Train (or resume) and evaluate one run; returns its evaluation record.

    With ``handle_signals``, a SIGTERM or SIGINT during training finishes the step, writes a
    checkpoint and raises :class:`StudyInterrupted` (nothing is evaluated).
    """
    from agekit.evaluation import evaluate
    from agekit.trainer import Trainer

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


def _reason(exc: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _record_failure(folder: Path, run: PlannedRun, exc: BaseException) -> str:
    reason = _reason(exc)
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


def recorded_failures(folder: Path) -> dict[str, str]:
    """run id -> one-line reason, for every run of a study folder whose last attempt failed
    (``runs/<run>/failed.json``; a run that succeeds removes its own)."""
    found: dict[str, str] = {}
    for path in sorted(Path(folder).glob(f"runs/*/{FAILED_FILE}")):
        saved = _read_json(path)
        reason = saved.get("error") if isinstance(saved, dict) else None
        found[path.parent.name] = str(reason or f"failed ({path} is unreadable)")
    return found


# Signals -----------------------------------------------------------------------------------------
class _StudySignals(StopSignals):
    """While entered, the first SIGTERM/SIGINT is recorded; with ``raise_at_once`` (a study that
    trains in this process) every stop request also raises :class:`StudyInterrupted` where the
    program is. During training the trainer's own handlers take over (they finish the step and
    checkpoint) and give these back afterwards. A repeat of the first signal within
    :data:`agekit.signals.REPEAT_WINDOW_S` is the same request (:mod:`agekit.signals`)."""

    def __init__(self, raise_at_once: bool) -> None:
        super().__init__()
        self.raise_at_once = raise_at_once

    def on_first(self, signum: int) -> None:
        to_stderr(f"\nagekit: {signal.Signals(signum).name} received: stopping the study")
        if self.raise_at_once:
            raise StudyInterrupted(signum)

    def on_second(self, signum: int) -> None:
        if self.raise_at_once:
            raise StudyInterrupted(signum)
        name = signal.Signals(signum).name
        to_stderr(f"\nagekit: second signal ({name}): stopping the runs at once")


# Progress ----------------------------------------------------------------------------------------
def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _Overall:
    """Runs done of the total, time elapsed and an estimate of the time left."""

    def __init__(self, total: int, skipped: int) -> None:
        self.total = total
        self.skipped = skipped
        self.done = 0  # this session, finished or failed
        self.failed = 0
        self.started = time.monotonic()

    def finish(self, failed: bool = False) -> None:
        self.done += 1
        self.failed += int(failed)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def estimate(self) -> str:
        left = self.total - self.skipped - self.done
        if left <= 0:
            return "none left"
        if self.done == 0:
            return "estimate after the first run"
        return f"about {_clock(self.elapsed / self.done * left)} left"

    def line(self) -> str:
        failed = f" ({self.failed} failed)" if self.failed else ""
        return (
            f"{self.skipped + self.done}/{self.total} runs done{failed}, "
            f"{_clock(self.elapsed)} elapsed, {self.estimate()}"
        )


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
) -> StudyResult:
    """Run every selected run that is not complete, then write the report.

    A run that fails is recorded (``runs/<run>/failed.json``) and the others go on; the result
    lists the failures. With ``handle_signals`` (``agekit run``), SIGTERM/SIGINT checkpoints the
    training in progress and raises :class:`StudyInterrupted`.
    """
    spec, source = load_study(path)
    folder = study_dir(spec, out)
    runs = plan(spec, str(source), folder, profile)  # validates everything before any training
    if only:
        unknown = sorted(set(only) - {r.run_id for r in runs})
        if unknown:
            listing = "\n  ".join(r.run_id for r in runs)
            raise ConfigError(f"--only: no run named {', '.join(unknown)}; runs:\n  {listing}")
        selected = [r for r in runs if r.run_id in only]
    else:
        selected = runs
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        {
            "study": spec.model_dump(mode="json"),
            "source": str(source),
            "profile": profile,
            "runs": [r.run_id for r in runs],
        },
        folder / "study.json",
    )
    pending = [r for r in selected if not is_complete(folder, r)]
    result = StudyResult(folder, len(selected), len(selected) - len(pending))
    console.print(
        f"[bold]{escape(spec.name)}[/bold]: {len(runs)} runs planned, {len(selected)} selected, "
        f"{result.skipped} already complete, {len(pending)} to run -> {escape(str(folder))}",
        soft_wrap=True,
    )
    overall = _Overall(len(selected), result.skipped)
    jobs = jobs or spec.jobs
    parallel = jobs > 1 and len(pending) > 1
    signals = (
        _StudySignals(raise_at_once=not parallel) if handle_signals else contextlib.nullcontext()
    )
    with signals as received:
        if parallel:
            _run_parallel(path, folder, pending, jobs, profile, overall, result, received, progress)
        else:
            _run_sequential(folder, pending, spec.eval_seed, overall, result, progress, signals)
    if report:
        _write_report(folder)
    _print_closing(spec, overall, result)
    return result


def _run_sequential(
    folder: Path,
    pending: list[PlannedRun],
    eval_seed: int,
    overall: _Overall,
    result: StudyResult,
    progress: bool,
    signals: Any,
) -> None:
    handle = isinstance(signals, _StudySignals)
    for index, run in enumerate(pending, 1):
        title = f"run {index}/{len(pending)}: {run.run_id}"
        if console.is_terminal:
            console.rule(escape(title))
        else:
            console.print(title, highlight=False, soft_wrap=True)
        try:
            record = execute(folder, run, eval_seed, progress, handle_signals=handle)
        except StudyInterrupted as stop:
            stop.run_id = stop.run_id or run.run_id
            raise
        except Exception as exc:  # one run's failure must not stop the others
            reason = _record_failure(folder, run, exc)
            result.failed[run.run_id] = reason
            overall.finish(failed=True)
            console.print(
                f"[red]failed[/red] {escape(run.run_id)}: {escape(reason)}", soft_wrap=True
            )
        else:
            result.finished.append(run.run_id)
            overall.finish()
            console.print(escape(_short_summary(record)), soft_wrap=True)
        console.print(overall.line(), highlight=False, soft_wrap=True)


def _child_command(
    path: str | Path, folder: Path, run: PlannedRun, profile: str | None
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "agekit",
        "run",
        str(path),
        "--out",
        str(folder),
        "--only",
        run.run_id,
        "--no-report",
        "--quiet",
    ]
    if profile:
        command += ["--profile", profile]
    return command


@dataclass
class _Child:
    run: PlannedRun
    process: subprocess.Popen[bytes]
    log: Path
    #: Log size when the study's stop signal arrived (to look for the run's acknowledgement).
    log_at_signal: int | None = None
    signalled: bool = False
    started: float = field(default_factory=time.time)


def _acknowledged(child: _Child) -> bool:
    """Whether the run's process wrote that it received a stop signal since the study did."""
    if child.log_at_signal is None:
        return False
    try:
        with child.log.open("rb") as handle:
            handle.seek(child.log_at_signal)
            text = handle.read()
    except OSError:
        return False
    return b" received" in text and b"agekit: SIG" in text


def _run_parallel(
    path: str | Path,
    folder: Path,
    pending: list[PlannedRun],
    jobs: int,
    profile: str | None,
    overall: _Overall,
    result: StudyResult,
    signals: _StudySignals | None,
    progress: bool,
) -> None:
    """One subprocess per run, ``jobs`` at a time, each with its share of the CPU threads.

    Each process runs ``agekit run --only RUN`` in its own session (a terminal's Ctrl-C reaches
    the study only); a stop signal is passed on to the runs, unless a run's process says it
    received it itself (a scheduler signals every process of a job) within FORWARD_GRACE_S.
    """
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    queue = list(pending)
    active: list[_Child] = []
    interrupted: list[str] = []
    signal_time: float | None = None
    with _parallel_view(progress, overall) as show:
        while queue or active:
            stopping = signals is not None and signals.received is not None
            while queue and len(active) < jobs and not stopping:
                run = queue.pop(0)
                # Not with_suffix: run ids hold dots (latent_weight=125.0) that it would cut at.
                log = folder / "runs" / f"{run.run_id}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                with log.open("ab") as handle:
                    process = subprocess.Popen(
                        _child_command(path, folder, run, profile),
                        stdout=handle,
                        stderr=handle,
                        env=env,
                        start_new_session=True,
                    )
                active.append(_Child(run, process, log))
                show(f"started {run.run_id} (log: {log})")
            if stopping and signals is not None:
                if signal_time is None:
                    signal_time = time.monotonic()
                    queue.clear()
                    for child in active:
                        child.log_at_signal = child.log.stat().st_size if child.log.exists() else 0
                for child in active:
                    if signals.count > 1:
                        child.process.kill()  # a second signal: stop at once
                    elif not child.signalled and (
                        _acknowledged(child) or time.monotonic() - signal_time > FORWARD_GRACE_S
                    ):
                        child.signalled = True
                        if not _acknowledged(child):
                            with contextlib.suppress(ProcessLookupError):
                                child.process.send_signal(signals.received or signal.SIGTERM)
            time.sleep(0.2)
            show(None)
            for child in list(active):
                code = child.process.poll()
                if code is None:
                    continue
                active.remove(child)
                run_id = child.run.run_id
                if code == 0 and is_complete(folder, child.run):
                    result.finished.append(run_id)
                    overall.finish()
                    record = _read_json(run_dir(folder, child.run) / EVAL_FILE)
                    done = _short_summary(record) if isinstance(record, dict) else run_id
                    show(f"finished {done}")
                elif stopping and code in (128 + signal.SIGTERM, 128 + signal.SIGINT, -9):
                    interrupted.append(run_id)
                    show(f"stopped {run_id} (exit {code}); it resumes from its checkpoint")
                else:
                    reason = _child_failure(folder, child, code)
                    result.failed[run_id] = reason
                    overall.finish(failed=True)
                    show(f"failed {run_id}: {reason} (log: {child.log})")
    if signals is not None and signals.received is not None:
        detail = f"the runs in progress ({', '.join(interrupted)}) wrote checkpoints"
        raise StudyInterrupted(
            signals.received,
            None,
            detail if interrupted else "no run was in progress",
        )


def _child_failure(folder: Path, child: _Child, code: int) -> str:
    """Why a run's process failed: the error it recorded, or (when it died before it could, e.g.
    killed for memory) its exit status, recorded now so that the report lists it too."""
    path = run_dir(folder, child.run) / FAILED_FILE
    saved = _read_json(path)
    with contextlib.suppress(OSError):
        if (
            isinstance(saved, dict)
            and "error" in saved
            and path.stat().st_mtime >= child.started - 1
        ):
            return str(saved["error"])
    reason = f"its process ended with exit status {code}; see {child.log}"
    write_json_atomic(
        {
            "run_id": child.run.run_id,
            "error": reason,
            "type": None,
            "message": reason,
            "traceback": None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        path,
    )
    return reason


@contextlib.contextmanager
def _parallel_view(progress: bool, overall: _Overall) -> Iterator[Any]:
    """``show(message)``: on a terminal, a live line of overall progress under the messages;
    otherwise each message followed by a plain progress line. ``show(None)`` refreshes the
    live line."""
    if progress and console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        view = Progress(
            TextColumn("[bold]study"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[timing]}"),
            console=console,
        )
        with view:
            task = view.add_task("study", total=overall.total, completed=overall.skipped, timing="")

            def show(message: str | None) -> None:
                if message is not None:
                    view.console.print(escape(message), soft_wrap=True, highlight=False)
                view.update(
                    task,
                    completed=overall.skipped + overall.done,
                    timing=f"{_clock(overall.elapsed)} elapsed, {overall.estimate()}",
                )

            yield show
        return

    def plain(message: str | None) -> None:
        if message is None:
            return
        console.print(message, highlight=False, markup=False, soft_wrap=True)
        if not message.startswith("started "):
            console.print(overall.line(), highlight=False, markup=False, soft_wrap=True)

    yield plain


def _short_summary(record: dict[str, Any]) -> str:
    from agekit.studies.report import HEADLINE, flatten

    values = flatten(record)
    parts = [f"{key.split('.', 1)[1]} {values[key]:.4g}" for key in HEADLINE if key in values]
    return f"{record['run_id']}: " + ", ".join(parts)


def _write_report(folder: Path) -> None:
    """The report of what finished; it lists the runs that failed itself."""
    from agekit.studies.report import write_report

    write_report(folder)


def _print_closing(spec: StudySpec, overall: _Overall, result: StudyResult) -> None:
    done = result.skipped + len(result.finished)
    console.print(
        f"{spec.name}: {done} of {result.selected} runs complete "
        f"({len(result.finished)} this time, {result.skipped} before), "
        f"{len(result.failed)} failed, {_clock(overall.elapsed)} elapsed",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if result.failed:
        console.print(
            f"failed runs (error and traceback in {result.folder / 'runs'}/<run>/{FAILED_FILE}):",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        for run_id, reason in result.failed.items():
            console.print(
                f"  {run_id}\n    {reason}", highlight=False, markup=False, soft_wrap=True
            )


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
