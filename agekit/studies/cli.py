"""``agekit run`` and ``agekit report``."""

from __future__ import annotations

import argparse
import shlex
import signal
from pathlib import Path
from typing import Any

from agekit.runs.layout import RUNS


def _cmd_run(args: argparse.Namespace) -> int:
    """``agekit run``: 0 when every run finished, 1 when one failed, 128 + N after signal N."""
    from agekit.studies.console import err_console
    from agekit.studies.layout import study_dir
    from agekit.studies.parallel import stop_with_parent
    from agekit.studies.runner import run_study
    from agekit.studies.spec import load_study, plan
    from agekit.studies.stopping import StudyInterrupted

    stop_with_parent()  # a parallel study's run: stop when the study's process is gone
    if args.list:
        spec, source = load_study(args.study)
        for run in plan(
            spec, str(source), study_dir(spec.name, args.out), args.profile, check=False
        ):
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


def _continue_command(args: argparse.Namespace) -> str:
    """The ``agekit run`` command line that continues this one."""
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


def _cmd_report(args: argparse.Namespace) -> int:
    from agekit.studies.report import write_report

    folder = Path(args.folder)
    if not (folder / RUNS).is_dir():
        raise FileNotFoundError(f"{folder}: not a study folder (no {RUNS}/ inside)")
    write_report(folder)
    return 0


def add_commands(sub: Any) -> None:
    from agekit.cli.shared import positive_int  # the command line's shared argument types

    p = sub.add_parser("run", help="run a study: train, evaluate and report every run")
    p.add_argument("study", help="a study TOML file, e.g. studies/kl_vs_kozachenko.toml")
    p.add_argument("--out", help="study folder (default runs/studies/NAME)")
    p.add_argument(
        "--jobs", type=positive_int, help="runs trained at once (default: the study's jobs)"
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="RUN_ID",
        help="run only this run (repeatable); for one-run-per-job schedulers",
    )
    p.add_argument("--profile", help="apply a named profile of the study, e.g. gpu")
    p.add_argument(
        "--archive",
        action="store_true",
        help="move run folders holding results of an earlier configuration of the study to "
        "OUT/archive/ and run them again (without it, such a rerun is refused)",
    )
    p.add_argument("--no-report", action="store_true", help="skip writing the report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--list", action="store_true", help="print the planned run ids and exit")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("report", help="(re)write a study's report from what its runs hold")
    p.add_argument("folder", help="a study folder written by agekit run (holds runs/)")
    p.set_defaults(func=_cmd_report)
