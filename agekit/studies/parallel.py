"""A parallel study: one ``agekit run --only RUN`` subprocess per run, ``jobs`` at a time, with
stop signals passed on to the runs' processes, which stop by themselves when the study's process
is gone (:func:`stop_with_parent`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agekit.studies.console import Overall, parallel_view, run_work, short_summary
from agekit.studies.failures import record_reason
from agekit.studies.layout import EVAL_FILE, FAILED_FILE, is_complete, read_json, run_dir, run_log
from agekit.studies.planned import PlannedRun
from agekit.studies.result import StudyResult
from agekit.studies.stopping import StudyInterrupted, StudySignals
from agekit.training.progress import to_stderr
from agekit.training.signals import STOP_SIGNALS

#: Seconds a parallel study waits for a run's process to acknowledge a stop signal it may have
#: received directly (a scheduler signals every process of a job) before passing it on.
FORWARD_GRACE_S = 2.0

#: Exit statuses of a run's process that a stop explains: its own handler's exit (143, 130, 129),
#: or death by the signal itself (-15, -2, -1: a scheduler signals every process of a job, and one
#: still importing torch has no handler yet), or the kill of a second signal (-9).
_STOPPED_CODES = frozenset(
    {128 + int(s) for s in STOP_SIGNALS} | {-int(s) for s in STOP_SIGNALS} | {-signal.SIGKILL}
)

#: Set by a parallel study in its runs' environment: the study's process id, which the run's
#: process watches (:func:`stop_with_parent`).
PARENT_VARIABLE = "AGEKIT_STUDY_PARENT"
#: Seconds between a run's process's looks at whether the study's process is still there.
PARENT_POLL_S = 0.5


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def stop_with_parent() -> None:
    """In a parallel study's run process: when the study's process is gone (killed with -9, say),
    stop as on SIGTERM (the training finishes its step and writes a checkpoint), rather than
    train on as an orphan that nobody waits for.

    A daemon thread watches the parent process id, which works on every platform; the stop is a
    SIGTERM this process sends itself, so it takes the same path as a scheduler's. Does nothing
    outside a parallel study (no :data:`PARENT_VARIABLE`)."""
    value = os.environ.pop(PARENT_VARIABLE, None)
    if value is None or not value.isdigit():
        return
    study = int(value)
    start = os.getppid()

    def gone() -> bool:
        if os.getppid() != start:  # reparented: the parent ended
            return True
        # started through a launcher that stays in between: watch the study's process itself
        return start != study and not _alive(study)

    def watch() -> None:
        while not gone():
            time.sleep(PARENT_POLL_S)
        to_stderr(f"\nagekit: the study's process ({study}) is gone: stopping this run")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="agekit-parent-watch", daemon=True).start()


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


def run_parallel(
    path: str | Path,
    folder: Path,
    pending: list[PlannedRun],
    jobs: int,
    profile: str | None,
    overall: Overall,
    result: StudyResult,
    signals: StudySignals | None,
    progress: bool,
) -> None:
    """One subprocess per run, ``jobs`` at a time, each with its share of the CPU threads.

    Each process runs ``agekit run --only RUN`` in its own session (a terminal's Ctrl-C reaches
    the study only); a stop signal is passed on to the runs, unless a run's process says it
    received it itself (a scheduler signals every process of a job) within FORWARD_GRACE_S.
    """
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        PARENT_VARIABLE: str(os.getpid()),
    }
    queue = list(pending)
    with parallel_view(progress, overall) as show:
        pool = _Pool(folder, overall, result, show)
        while queue or pool.active:
            stopping = signals is not None and signals.received is not None
            while queue and len(pool.active) < jobs and not stopping:
                run = queue.pop(0)
                pool.start(run, _child_command(path, folder, run, profile), env)
            if stopping and signals is not None:
                queue.clear()
                pool.stop(signals)
            time.sleep(0.2)
            show(None)
            pool.reap(stopping)
    if signals is not None and signals.received is not None:
        detail = f"the runs in progress ({', '.join(pool.interrupted)}) wrote checkpoints"
        raise StudyInterrupted(
            signals.received,
            None,
            detail if pool.interrupted else "no run was in progress",
        )


@dataclass
class _Pool:
    """The processes of a parallel study's runs, and what became of each."""

    folder: Path
    overall: Overall
    result: StudyResult
    show: Callable[[str | None], None]
    active: list[_Child] = field(default_factory=list)
    #: Runs whose process the study's stop ended; they resume from their checkpoints.
    interrupted: list[str] = field(default_factory=list)
    #: When the study's stop signal arrived (time.monotonic), None before.
    stop_since: float | None = None

    def start(self, run: PlannedRun, command: list[str], env: dict[str, str]) -> None:
        log = run_log(self.folder, run)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as handle:
            process = subprocess.Popen(
                command, stdout=handle, stderr=handle, env=env, start_new_session=True
            )
        self.active.append(_Child(run, process, log))
        self.show(f"started {run.run_id} (log: {log})")

    def stop(self, signals: StudySignals) -> None:
        """Pass the study's stop signal on to each run that has not said it received it within
        FORWARD_GRACE_S; a second signal kills them at once."""
        if self.stop_since is None:
            self.stop_since = time.monotonic()
            for child in self.active:
                child.log_at_signal = child.log.stat().st_size if child.log.exists() else 0
        for child in self.active:
            if signals.count > 1:
                child.process.kill()
            elif not child.signalled and (
                _acknowledged(child) or time.monotonic() - self.stop_since > FORWARD_GRACE_S
            ):
                child.signalled = True
                if not _acknowledged(child):
                    with contextlib.suppress(ProcessLookupError):
                        child.process.send_signal(signals.received or signal.SIGTERM)

    def reap(self, stopping: bool) -> None:
        """Record each run whose process ended: finished, stopped by the study, or failed."""
        for child in list(self.active):
            code = child.process.poll()
            if code is None:
                continue
            self.active.remove(child)
            run, run_id = child.run, child.run.run_id
            seconds = time.time() - child.started
            if code == 0 and is_complete(self.folder, run):
                self.result.finished.append(run_id)
                self.overall.finish(kind=run.setting, work=run_work(run), seconds=seconds)
                record = read_json(run_dir(self.folder, run) / EVAL_FILE)
                done = short_summary(record) if isinstance(record, dict) else run_id
                self.show(f"finished {done}")
            elif stopping and code in _STOPPED_CODES:
                self.interrupted.append(run_id)
                self.show(f"stopped {run_id} (exit {code}); it resumes from its checkpoint")
            else:
                reason = _child_failure(self.folder, child, code)
                self.result.failed[run_id] = reason
                self.overall.finish(
                    failed=True, kind=run.setting, work=run_work(run), seconds=seconds
                )
                self.show(f"failed {run_id}: {reason} (log: {child.log})")


def _child_failure(folder: Path, child: _Child, code: int) -> str:
    """Why a run's process failed: the error it recorded, or (when it died before it could, e.g.
    killed for memory) its exit status, recorded now so that the report lists it too."""
    path = run_dir(folder, child.run) / FAILED_FILE
    saved = read_json(path)
    with contextlib.suppress(OSError):
        if (
            isinstance(saved, dict)
            and "error" in saved
            and path.stat().st_mtime >= child.started - 1
        ):
            return str(saved["error"])
    reason = f"its process ended with exit status {code}; see {child.log}"
    record_reason(path, child.run, reason)
    return reason
