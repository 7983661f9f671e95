# PYTHON_ARGCOMPLETE_OK
"""The ``agekit`` command line: the parser and ``main``; each command's work is in
:mod:`agekit.cli` (one module per group of commands, and the error handling).

Start-up time: this module imports nothing heavy (torch, torchvision, the trainer) at its top or
before the arguments are parsed, so ``agekit --help`` and shell completion answer at once; each
command imports what it needs. Tensor work lives in :mod:`agekit.evaluation.inference`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from rich.markup import escape

from agekit.cli import errors
from agekit.cli.errors import DEBUG_VARIABLE
from agekit.cli.evaluate import cmd_evaluate
from agekit.cli.images import (
    cmd_colorize,
    cmd_interpolate,
    cmd_reconstruct,
    cmd_sample,
    cmd_transfer,
)
from agekit.cli.listing import cmd_list
from agekit.cli.shared import WRITABLE_IMAGE_SUFFIXES, err_console, positive_int
from agekit.cli.train import cmd_train
from agekit.studies.cli import add_commands as add_study_commands

__all__ = ["build_parser", "main"]


class _ConsoleNotes(logging.Handler):
    """Shows agekit's log records (a resume that fell back, a torn log line) as one-line notes."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = escape(record.getMessage())
        except Exception:  # a malformed record must not stop the command
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            label = "[yellow]warning:[/yellow]"
        else:
            label = "[dim]note:[/dim]"
        err_console.print(f"{label} {message}", highlight=False, soft_wrap=True)


def _show_notes() -> None:
    logger = logging.getLogger("agekit")
    if not any(isinstance(handler, _ConsoleNotes) for handler in logger.handlers):
        logger.addHandler(_ConsoleNotes())
    logger.setLevel(logging.INFO)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("agekit")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _kind_completer(**_: Any) -> list[str]:
    from agekit.registry import KIND_ALIASES

    return sorted(KIND_ALIASES)


def _metric_completer(**_: Any) -> list[str]:
    from agekit.registry import REGISTRY

    return REGISTRY.available("metric")  # names only: imports no metric


def _complete(action: argparse.Action, completer: Callable[..., list[str]]) -> None:
    """Attach an argcomplete completer to an argument."""
    action.completer = completer  # type: ignore[attr-defined]


_DEVICE_HELP = "cpu, cuda, cuda:N, or auto (CUDA when present; the default)"
_CHECKPOINT_HELP = "a checkpoint file or a run folder (its newest checkpoint)"


def _image_out_help(what: str) -> str:
    return f"image file of the {what} (ending in {', '.join(WRITABLE_IMAGE_SUFFIXES)})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agekit",
        description="Adversarial Generator-Encoder networks: train, sample, evaluate, run studies.",
        epilog=f"--debug (or {DEBUG_VARIABLE}=1) shows the full traceback of an error.",
    )
    parser.add_argument(
        "--version", action="version", version=f"agekit {_version()}", help="print the version"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of an error (also: {DEBUG_VARIABLE}=1)",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="`agekit COMMAND --help` for more"
    )
    # The order of the calls is the order of the commands in ``agekit --help``.
    _add_list_command(sub)
    _add_train_command(sub)
    _add_image_commands(sub)
    _add_evaluate_command(sub)
    add_study_commands(sub)
    _accept_debug_after_the_command(sub)
    return parser


def _add_list_command(sub: Any) -> None:
    p = sub.add_parser("list", help="list registered components and their status")
    _complete(
        p.add_argument(
            "kind", nargs="?", help="prior(s), divergence(s), backbone(s), loss(es), ..."
        ),
        _kind_completer,
    )
    p.add_argument(
        "--plain",
        action="store_true",
        help="plain aligned rows instead of a table (the default when output is not a terminal)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="import every component to show whether it loads (slower: imports torch and plugins)",
    )
    p.set_defaults(func=cmd_list)


def _add_train_command(sub: Any) -> None:
    p = sub.add_parser("train", help="train one AGE model from a TOML configuration")
    p.add_argument("config", help="the configuration TOML file, e.g. configs/mnist5k.toml")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--out", help="parent folder of the run (overrides out_dir)")
    p.add_argument("--run-dir", help="exact run folder (default OUT/NAME)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a configuration key, e.g. --set train.steps=200 (repeatable; values are "
        "TOML)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _add_image_commands(sub: Any) -> None:
    """sample, reconstruct, interpolate (unconditional models), colorize, transfer (conditional)."""
    for name, func, text in (
        ("sample", cmd_sample, "draw samples g(z), z from the prior"),
        ("reconstruct", cmd_reconstruct, "test images beside g(e(x))"),
        ("interpolate", cmd_interpolate, "decode great-circle paths between encoded test images"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("checkpoint", help=_CHECKPOINT_HELP)
        p.add_argument("--out", required=True, help=_image_out_help(name + " grid"))
        p.add_argument("--device", default="auto", help=_DEVICE_HELP)
        if name == "sample":
            p.add_argument("--n", type=positive_int, default=64, help="samples in the grid")
            p.add_argument("--seed", type=int, default=0, help="seed of the codes z")
        elif name == "reconstruct":
            p.add_argument("--n", type=positive_int, default=32, help="test images")
        else:
            p.add_argument("--rows", type=positive_int, default=8, help="pairs of test images")
            p.add_argument("--steps", type=positive_int, default=8, help="points per path")
        p.set_defaults(func=func)

    p = sub.add_parser(
        "colorize", help="several colorizations g(z | L) of image files, one per z (conditional)"
    )
    p.add_argument("checkpoint", help=_CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="RGB or grayscale image files")
    p.add_argument("--n", type=positive_int, default=8, help="colorizations per image")
    p.add_argument("--seed", type=int, default=0, help="seed of the codes z")
    p.add_argument("--out", required=True, help=_image_out_help("colorization grid"))
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.set_defaults(func=cmd_colorize)

    p = sub.add_parser("transfer", help="colour transfer: g(e(x1 | L1) | L2) (conditional models)")
    p.add_argument("checkpoint", help=_CHECKPOINT_HELP)
    p.add_argument("source", help="image whose colour scheme is encoded")
    p.add_argument("target", help="image whose lightness is recoloured")
    p.add_argument("--out", required=True, help=_image_out_help("four-image strip"))
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.set_defaults(func=cmd_transfer)


def _add_evaluate_command(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="score one trained run with registered metrics (outside a study)"
    )
    p.add_argument("run", help="a run folder or a checkpoint file")
    _complete(
        p.add_argument(
            "--metric",
            action="append",
            metavar="NAME",
            help="a registered metric (repeatable; default: a study's run is scored with its "
            "study's metrics, any other run with what a study runs on its data; "
            "see `agekit list metric`)",
        ),
        _metric_completer,
    )
    p.add_argument("--out", help="JSON file of the scores (default RUN/evaluate.json)")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the evaluation's sampling (default: the study's evaluation seed when "
        "a study's run is scored with its study's metrics, that is without --metric; else 0)",
    )
    p.add_argument(
        "--batchnorm",
        choices=("real-data", "running"),
        default="real-data",
        help="batch-norm statistics estimated on real data, as the checkpoint stores them and "
        "agekit sample uses them (real-data), or the running ones training left (running)",
    )
    p.set_defaults(func=cmd_evaluate)


def _accept_debug_after_the_command(sub: Any) -> None:
    """``--debug`` after the command too (``agekit train X --debug``)."""
    for command in sub.choices.values():
        # SUPPRESS keeps a --debug given before the command from being reset by the sub-parser's
        # default.
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help=f"show the full traceback of an error (also: {DEBUG_VARIABLE}=1)",
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions: answer and exit
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    _show_notes()
    # torch.load warns about pickle protocols before refusing a file that is not a checkpoint
    warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        # ``agekit train`` handles Ctrl-C itself once training runs (checkpoint, then exit 130).
        before = " before training began: nothing was written" if args.command == "train" else ""
        err_console.print(f"interrupted{before}", highlight=False)
        return 130
    except Exception as exc:
        return errors.exit_code(exc, args)


if __name__ == "__main__":
    sys.exit(main())
