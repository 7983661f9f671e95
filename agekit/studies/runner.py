"""Run a study: train every planned run (skipping finished ones, resuming interrupted ones),
evaluate it, then write the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from agekit import checkpoint as ckpt
from agekit.config import ConfigError, config_to_dict
from agekit.evaluation import evaluate, write_json_atomic
from agekit.studies.spec import PlannedRun, StudySpec, load_study, plan

console = Console()

EVAL_FILE = "eval.json"


def study_dir(spec: StudySpec, out: str | Path | None) -> Path:
    return Path(out) if out is not None else Path("runs") / "studies" / spec.name


def run_dir(folder: Path, run: PlannedRun) -> Path:
    return folder / "runs" / run.run_id


def is_complete(folder: Path, run: PlannedRun) -> bool:
    """A run is complete when its evaluation exists and was made for this exact configuration."""
    path = run_dir(folder, run) / EVAL_FILE
    if not path.exists():
        return False
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return bool(saved.get("config") == config_to_dict(run.config))


def execute(folder: Path, run: PlannedRun, eval_seed: int, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) and evaluate one run; returns its evaluation record."""
    from agekit.trainer import Trainer

    target = run_dir(folder, run)
    trainer = Trainer(run.config, target, progress=progress)
    resume = ckpt.latest(trainer.checkpoint_dir) is not None
    started = time.perf_counter()
    result = trainer.fit(resume=resume)
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
    return record


def run_study(
    path: str | Path,
    out: str | Path | None = None,
    jobs: int | None = None,
    only: Sequence[str] = (),
    profile: str | None = None,
    report: bool = True,
    progress: bool = True,
) -> Path:
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
    skipped = len(selected) - len(pending)
    console.print(
        f"[bold]{spec.name}[/bold]: {len(runs)} runs planned, {len(selected)} selected, "
        f"{skipped} already complete, {len(pending)} to run -> {folder}"
    )
    jobs = jobs or spec.jobs
    if jobs > 1 and len(pending) > 1:
        _run_parallel(path, folder, pending, jobs, profile)
    else:
        for index, run in enumerate(pending, 1):
            console.rule(f"[{index}/{len(pending)}] {run.run_id}")
            record = execute(folder, run, spec.eval_seed, progress)
            console.print(_short_summary(record))
    if report:
        from agekit.studies.report import write_report

        write_report(folder)
    return folder


def _run_parallel(
    path: str | Path, folder: Path, pending: list[PlannedRun], jobs: int, profile: str | None
) -> None:
    """One subprocess per run, ``jobs`` at a time, each with its share of the CPU threads."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    queue = list(pending)
    active: list[tuple[PlannedRun, subprocess.Popen[bytes]]] = []
    failures: list[str] = []
    while queue or active:
        while queue and len(active) < jobs:
            run = queue.pop(0)
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
            # Not with_suffix: run ids hold dots (latent_weight=125.0) that it would cut at.
            log = folder / "runs" / f"{run.run_id}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as handle:
                active.append(
                    (run, subprocess.Popen(command, stdout=handle, stderr=handle, env=env))
                )
            console.print(f"started {run.run_id} (log: {log})")
        time.sleep(0.5)
        for run, process in list(active):
            code = process.poll()
            if code is None:
                continue
            active.remove((run, process))
            if code == 0:
                console.print(f"finished {run.run_id}")
            else:
                failures.append(run.run_id)
                console.print(f"[red]failed[/red] {run.run_id} (exit {code}); see its log")
    if failures:
        raise RuntimeError(f"{len(failures)} run(s) failed: {', '.join(failures)}")


def _short_summary(record: dict[str, Any]) -> str:
    from agekit.studies.report import HEADLINE, flatten

    values = flatten(record)
    parts = [f"{key.split('.', 1)[1]} {values[key]:.4g}" for key in HEADLINE if key in values]
    return f"{record['run_id']}: " + ", ".join(parts)


def main_run(args: Any) -> int:
    if args.list:
        spec, source = load_study(args.study)
        for run in plan(spec, str(source), study_dir(spec, args.out), args.profile):
            print(run.run_id)
        return 0
    run_study(
        args.study,
        out=args.out,
        jobs=args.jobs,
        only=args.only or (),
        profile=args.profile,
        report=not args.no_report,
        progress=not args.quiet,
    )
    return 0
