"""One atomic file writer for everything agekit stores: checkpoints, scores, cached classifiers.

:func:`write_atomic` writes to a temporary file in the target's folder, fsyncs it, renames it
over the target and fsyncs the folder, so a reader (another evaluation, a resumed run) sees the
old file or the new one, never half of one, and a power cut cannot lose the rename. A write that
fails removes its temporary file and leaves the target as it was; a write killed outright can
leave the temporary file behind, named ``.<target name>.<random>.tmp`` (see
:func:`agekit.runs.checkpoint.remove_fragments`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["default_file_mode", "write_atomic", "write_json_atomic"]


def default_file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask (0o644 for 022).

    ``tempfile.mkstemp`` creates files 0600; on shared storage a group must be able to read a
    run's checkpoints and scores, so the atomic writer restores the usual mode.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` atomically: ``write`` receives an open binary file to fill.

    The temporary file lies in the same folder (a rename is atomic only within one file system)
    and gets the umask's usual mode, not mkstemp's 0600. On any failure, including
    KeyboardInterrupt, the temporary file is removed and the target is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), default_file_mode())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    # The rename itself must reach the disk too, or a power cut could lose it.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json_atomic(data: Any, path: str | Path) -> None:
    """``data`` as indented JSON with a final newline, written with :func:`write_atomic`."""
    text = json.dumps(data, indent=2) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode()))
