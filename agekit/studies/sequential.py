"""A sequential study: each run trained (or resumed) and evaluated in this process, in turn.

:func:`execute` is one run's whole life in a study: a parallel study's run processes reach it too,
through ``agekit run --only RUN``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from agekit.config import Component, config_to_dict
from agekit.runs import checkpoint as ckpt
from agekit.studies.console import Overall, console, run_work, short_summary
from agekit.studies.failures import record_failure
from agekit.studies.layout import (
    EVAL_FILE,
    FAILED_FILE,
    METRIC_SPECS_KEY,
    is_complete,
    metric_spec,
    read_json,
    run_dir,
    scored_specs,
    unscored_metrics,
)
from agekit.studies.planned import PlannedRun
from agekit.studies.result import StudyResult
from agekit.studies.stopping import StudyInterrupted, StudySignals
from agekit.util.atomic import write_json_atomic


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
    missing = unscored_metrics(folder, run) if is_complete(folder, run) else []
    if missing:
        return _score_missing(target, run, missing, eval_seed)
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
    record[METRIC_SPECS_KEY] = [metric_spec(m) for m in run.metrics]
    write_json_atomic(record, target / EVAL_FILE)
    with contextlib.suppress(FileNotFoundError):
        (target / FAILED_FILE).unlink()  # an earlier attempt's error no longer holds
    return record


def _score_missing(
    target: Path, run: PlannedRun, missing: list[Component], eval_seed: int
) -> dict[str, Any]:
    """A scored run's evaluation with the scores of ``missing`` (metrics added to the study since)
    merged in, from the checkpoint the other scores came from; nothing is trained."""
    from agekit.evaluation.scoring import evaluate

    record = read_json(target / EVAL_FILE)
    added = evaluate(target, missing, seed=eval_seed, device=run.config.train.device)
    # by file name and step: the study folder may have moved since the record was written
    same_checkpoint = Path(added["checkpoint"]).name == Path(record["checkpoint"]).name
    if not same_checkpoint or added["step"] != record["step"] or added["seed"] != record["seed"]:
        raise RuntimeError(
            f"{target}: its newest checkpoint and evaluation seed ({added['checkpoint']}, seed "
            f"{added['seed']}) are not those its scores came from ({record['checkpoint']}, seed "
            f"{record['seed']}); remove {EVAL_FILE} to score the run afresh"
        )
    kept = scored_specs(record)
    replaced = {m.name for m in missing}
    record["metrics"].update(added["metrics"])
    record[METRIC_SPECS_KEY] = [
        *(s for s in kept if isinstance(s, dict) and s.get("name") not in replaced),
        *(metric_spec(m) for m in missing),
    ]
    write_json_atomic(record, target / EVAL_FILE)
    return dict(record)


def run_sequential(
    folder: Path,
    pending: list[PlannedRun],
    eval_seed: int,
    overall: Overall,
    result: StudyResult,
    progress: bool,
    signals: Any,
) -> None:
    """Each run in turn in this process, a failure recorded and the next run started; with
    ``signals`` a :class:`StudySignals`, a stop signal checkpoints the training in progress."""
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
