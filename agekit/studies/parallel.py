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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agekit.studies.console import Overall, parallel_view, run_work, short_summary
from agekit.studies.failures import record_reason
from agekit.studies.layout import EVAL_FILE, FAILED_FILE, is_complete, read_json, run_dir
from agekit.studies.spec import PlannedRun
from agekit.studies.stopping import StudyInterrupted, StudySignals
from agekit.training.progress import to_stderr
from agekit.training.signals import STOP_SIGNALS

if TYPE_CHECKING:
    from agekit.studies.runner import StudyResult

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
    active: list[_Child] = []
    interrupted: list[str] = []
    signal_time: float | None = None
    with parallel_view(progress, overall) as show:
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
                    overall.finish(
                        kind=child.run.setting,
                        work=run_work(child.run),
                        seconds=time.time() - child.started,
                    )
                    record = read_json(run_dir(folder, child.run) / EVAL_FILE)
                    done = short_summary(record) if isinstance(record, dict) else run_id
                    show(f"finished {done}")
                elif stopping and code in _STOPPED_CODES:
                    interrupted.append(run_id)
                    show(f"stopped {run_id} (exit {code}); it resumes from its checkpoint")
                else:
                    reason = _child_failure(folder, child, code)
                    result.failed[run_id] = reason
                    overall.finish(
                        failed=True,
                        kind=child.run.setting,
                        work=run_work(child.run),
                        seconds=time.time() - child.started,
                    )
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
