"""What the commands share: the consoles, the usage error, argument types and output checks."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from agekit.util.terminal import stream_console

console = stream_console()
err_console = stream_console(stderr=True)

#: What ``--out`` of the image commands may end with (PIL picks the format from it). Not the
#: suffixes data set folders are read with: those are ``agekit.datasets``' own.
WRITABLE_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class UsageError(Exception):
    """A command was given something it cannot use; its message is the one line shown."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, refused with a one-line usage error otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def blocking_file(paths: Sequence[Path]) -> Path | None:
    """The first of ``paths`` that exists, when it is a file rather than a folder."""
    for path in paths:
        if path.exists():
            return None if path.is_dir() else path
    return None


def check_folder(option: str, text: str) -> None:
    """An output folder (``--out``, ``--run-dir``) must not be, or lie under, an existing file."""
    path = Path(text)
    blocker = blocking_file([path, *path.parents])
    if blocker is not None:
        raise UsageError(f"{option} {text}: {blocker} is a file, not a folder")


def image_out(text: str) -> Path:
    """``--out`` of an image command: a known image extension, not under an existing file."""
    path = Path(text)
    if path.suffix.lower() not in WRITABLE_IMAGE_SUFFIXES:
        got = f"{path.suffix!r}" if path.suffix else "no extension"
        endings = ", ".join(WRITABLE_IMAGE_SUFFIXES)
        raise UsageError(
            f"--out {text}: expected an image file name ending in {endings} (got {got})"
        )
    if path.is_dir():
        raise UsageError(f"--out {text}: is a folder; expected an image file name")
    blocker = blocking_file(list(path.parents))
    if blocker is not None:
        raise UsageError(f"--out {text}: {blocker} is a file, not a folder")
    return path
