"""One writer per run folder: :class:`RunLock`, held by a training run (and by a study's run
through its evaluation) for as long as it writes there.

The lock is an exclusive ``flock`` on ``run.lock`` in the run folder. The operating system
releases it when the holding process ends in any way, kill -9 and a crash included, so a lock
can never outlive its holder; the file only describes the holder (pid, host, command, start
time) so that a refused writer can name it. A file left by a holder that was killed is stale:
the next writer takes the lock and names the process that left it. A clean exit removes the
file.

The lock is per process and re-entrant: a study that holds it over a run's training and
evaluation enters it again in the trainer. A child forked without exec (a data-loader worker)
shares the lock until it exits. ``flock`` works on local file systems and, on Linux, on NFS
(emulated with byte-range locks by the client). Where :mod:`fcntl` does not exist (Windows) no
lock is taken: keeping to one writer per run folder is then the user's task.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from agekit.runs.layout import LOCK, RunFolder

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RunFolderBusy", "RunLock", "describe_holder"]

#: The lock file's name inside a run folder.
LOCK_FILE = LOCK


class RunFolderBusy(Exception):
    """Another process holds the run folder's lock."""


def describe_holder(info: dict[str, Any]) -> str:
    """``pid 123 on host (agekit train a.toml), since 2026-12-06 20:10:03`` from a lock file."""
    pid = info.get("pid", "?")
    host = info.get("host", "?")
    text = f"pid {pid} on {host}"
    command = info.get("command")
    if command:
        text += f" ({command})"
    started = info.get("started")
    if isinstance(started, int | float):
        text += f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
    return text


def _read_info(fd: int) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        info = json.loads(data.decode(errors="replace"))
        if isinstance(info, dict):
            return info
    return None


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "/agekit")):
        argv[0] = "agekit"
    return " ".join(argv)


class _Held:
    def __init__(self, fd: int, created_folder: bool) -> None:
        self.fd = fd
        self.created_folder = created_folder
        self.depth = 1


#: The locks this process holds, by lock-file path; guarded by ``_HELD_GUARD``.
_HELD: dict[str, _Held] = {}
_HELD_GUARD = threading.Lock()


class RunLock:
    """While entered, this process is the only writer of ``folder`` (created if missing).

    Entering raises :class:`RunFolderBusy`, one line naming the folder, the holder and the lock
    file, when another process holds it. :attr:`stale` is the description of a holder that
    died with the lock file in place (taken over), else None.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = RunFolder(self.folder).lock
        self.stale: str | None = None
        self._key = ""

    def __enter__(self) -> RunLock:
        if fcntl is None:
            return self
        created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._key = str(self.path.resolve())
        with _HELD_GUARD:
            held = _HELD.get(self._key)
            if held is not None:
                held.depth += 1
                return self
            fd = self._acquire()
            _HELD[self._key] = _Held(fd, created)
        return self

    def _acquire(self) -> int:
        assert fcntl is not None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _read_info(fd)
                os.close(fd)
                holder = describe_holder(info) if info else "another process (starting up)"
                raise RunFolderBusy(
                    f"{self.folder} is in use by {holder}: one run writes to a run folder at a "
                    f"time; wait for it to end or choose another folder (lock: {self.path})"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # A holder that released the lock removes the file; one that raced us may have
            # locked a file that is no longer at this path, so ours must be the file there now.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = _read_info(fd)
            if previous is not None:
                self.stale = describe_holder(previous)
            record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": _command_line(),
                "started": time.time(),
            }
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(record) + "\n").encode())
            return fd

    def __exit__(self, *exc: object) -> None:
        if fcntl is None or not self._key:
            return
        with _HELD_GUARD:
            held = _HELD.get(self._key)
            if held is None:
                return
            held.depth -= 1
            if held.depth > 0:
                return
            del _HELD[self._key]
            # Removed while still locked, so that no other process can lock it in between.
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(held.fd)
            if held.created_folder:
                with contextlib.suppress(OSError):  # only when nothing else was written
                    self.folder.rmdir()
