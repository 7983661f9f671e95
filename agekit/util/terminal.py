"""The consoles agekit's commands print with."""

from __future__ import annotations

import sys

from rich.console import Console


def stream_console(stderr: bool = False) -> Console:
    """A rich console for stdout (or stderr) that never wraps a line when that stream is not a
    terminal: a redirected log keeps each path and message on one line, for grep and copying."""
    stream = sys.stderr if stderr else sys.stdout
    isatty = getattr(stream, "isatty", None)
    terminal = bool(isatty is not None and isatty())
    return Console(stderr=stderr, soft_wrap=not terminal)
