"""Command-line errors: agekit's own errors and failed file operations become one readable line
and an exit status; ``--debug`` (or ``AGEKIT_DEBUG=1``) adds the traceback. Anything else is a bug
in agekit or a plugin and keeps its traceback."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback

from rich.markup import escape

from agekit.cli.shared import UsageError, err_console

#: Setting this environment variable to 1 is the same as ``--debug``.
DEBUG_VARIABLE = "AGEKIT_DEBUG"


def print_error(message: str) -> None:
    """``error: ...`` on stderr: the message as written (no markup), never wrapped."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


#: agekit's own errors, whose messages are written for the user: (module, class). Looked up only
#: in modules already imported (an error cannot come from a module that was never imported), so
#: ``main`` imports nothing for them.
KNOWN_ERRORS = (
    ("agekit.config", "ConfigError"),
    ("agekit.registry", "RegistryError"),
    ("agekit.runs.checkpoint", "CheckpointError"),
    ("agekit.model", "DeviceUnavailable"),
    ("agekit.training.trainer", "DeviceUnavailable"),
    ("agekit.training.trainer", "TrainingDiverged"),
    ("agekit.training.distributed", "DistributedError"),
    ("agekit.components", "ComponentInputError"),
    ("agekit.evaluation.inference", "InferenceError"),
    ("agekit.datasets.folders", "UnreadableImageError"),
    ("agekit.studies.report", "ReportError"),
    ("agekit.runs.lock", "RunFolderBusy"),
)


def is_known(exc: BaseException) -> bool:
    if isinstance(exc, UsageError):
        return True
    for module_name, name in KNOWN_ERRORS:
        module = sys.modules.get(module_name)
        kind = getattr(module, name, None) if module is not None else None
        if isinstance(kind, type) and isinstance(exc, kind):
            return True
    return False


def describe(exc: BaseException) -> str:
    """An error's message for the user: a DataLoader worker's relayed traceback is cut down to
    the original error's own line."""
    text = str(exc) or type(exc).__name__
    if "Original Traceback (most recent call last)" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        head, sep, rest = last.partition(": ")
        text = rest if sep and "." in head and " " not in head else last
    return text


def describe_os_error(exc: OSError) -> str:
    """``PATH: reason`` for a failed file operation (permission, full disk, a file in the way)."""
    if exc.filename is None:
        return describe(exc)
    where = str(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    reason = exc.strerror or describe(exc)
    hints = {
        errno.EACCES: "no permission to write or read there",
        errno.EPERM: "not permitted there",
        errno.EROFS: "the file system is read-only",
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.ENOTDIR: "a part of this path is a file, not a folder",
    }
    hint = hints.get(exc.errno or 0)
    return f"{where}: {reason}" + (f" ({hint})" if hint else "")


def debug_requested(args: argparse.Namespace | None) -> bool:
    if os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return bool(getattr(args, "debug", False))


def exit_code(exc: Exception, args: argparse.Namespace) -> int:
    """Print the one-line error for ``exc`` (and its traceback with --debug) and return the exit
    status; an exception that is neither agekit's own nor a file-system refusal is re-raised.

    Called from the ``except`` block that caught ``exc`` (its traceback is the one printed)."""
    if is_known(exc):
        message, code = describe(exc), 2
    elif isinstance(exc, OSError):  # the file system refused: permissions, a full disk, ...
        message = describe_os_error(exc)
        code = 2 if isinstance(exc, FileNotFoundError) else 1
        if not debug_requested(args):
            message += f" (--debug or {DEBUG_VARIABLE}=1 shows the traceback)"
    else:
        raise  # a bug in agekit or a plugin: its traceback is what a report needs
    if debug_requested(args):
        traceback.print_exc()
    print_error(message)
    return code
