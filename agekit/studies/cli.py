"""``agekit run`` and ``agekit report``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _cmd_run(args: argparse.Namespace) -> int:
    from agekit.studies.parallel import stop_with_parent
    from agekit.studies.runner import main_run

    stop_with_parent()  # a parallel study's run: stop when the study's process is gone
    return main_run(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from agekit.studies.report import write_report

    folder = Path(args.folder)
    if not (folder / "runs").is_dir():
        raise FileNotFoundError(f"{folder}: not a study folder (no runs/ inside)")
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
