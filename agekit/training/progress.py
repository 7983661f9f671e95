"""What a training run shows and logs: a progress bar or plain lines, and the training log
``metrics.jsonl`` (:func:`append_record`, :func:`truncate_records`); experiment trackers are the
configured loggers' (:mod:`agekit.training.tracking`).

On a terminal, :func:`training_progress` draws a rich bar whose first row (step count, bar,
elapsed and remaining time) fits in 80 columns, with the latest log record's terms on a row of
their own. When the stream is not a terminal (a log redirected to a file, a batch job's output),
it prints plain lines instead, about every tenth of the run: ``step 400/4000  D(e(x)) 0.612 ...
0:01:10  ETA 0:10:30``.

The display never stops training: a write that fails (a closed pipe, a terminal that hung up)
silences it and its stream, and the trainer is told (:class:`GuardedProgress`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from agekit.games.age import TERM_LABELS
from agekit.util.atomic import write_atomic

__all__ = [
    "GuardedProgress",
    "LineProgress",
    "NullProgress",
    "TrainingProgress",
    "append_record",
    "format_stats",
    "plain_every",
    "silence_stream",
    "to_stderr",
    "training_progress",
    "truncate_records",
]


def format_stats(entry: Mapping[str, Any]) -> str:
    """A log record's headline terms and throughput: ``D(e(x)) 0.612  L_X 0.456  812 img/s``."""
    parts = [f"{label} {entry[key]:.3f}" for key, label in TERM_LABELS.items() if key in entry]
    parts.append(f"{entry['images_per_s']:.0f} img/s")
    return "  ".join(parts)


class TrainingProgress(Protocol):
    """The progress display the training loop drives (a context manager)."""

    def __enter__(self) -> TrainingProgress: ...

    def __exit__(self, *exc: object) -> None: ...

    def update(self, step: int, entry: Mapping[str, Any] | None = None) -> None:
        """``step`` steps are done; ``entry``, when given, is the log record just written."""


class NullProgress:
    """No display (``--quiet``, and every process but the main one)."""

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, step: int, entry: Mapping[str, Any] | None = None) -> None:
        return None


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class LineProgress:
    """Plain progress lines for a stream that is not a terminal: one every ``every`` steps, one at
    the last step, and one for the step the run stopped at when that is neither."""

    def __init__(self, total: int | None, completed: int, every: int, stream: TextIO) -> None:
        self.total = total
        self.every = max(1, every)
        self.stream = stream
        self.step = completed
        self._printed = completed
        self._first = completed  # a resumed run's pace counts this session's steps only
        self._stats = ""
        self._started = time.perf_counter()

    def __enter__(self) -> LineProgress:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.step != self._printed:
            self._print()

    def update(self, step: int, entry: Mapping[str, Any] | None = None) -> None:
        if entry is not None:
            self._stats = format_stats(entry)
        self.step = step
        if step != self._printed and (step % self.every == 0 or step == self.total):
            self._print()

    def _print(self) -> None:
        total = f"/{self.total}" if self.total is not None else ""
        elapsed = time.perf_counter() - self._started
        done = self.step - self._first
        eta = ""
        if self.total is not None and done > 0 and self.step < self.total:
            eta = f"ETA {_clock(elapsed / done * (self.total - self.step))}"
        parts = [f"step {self.step}{total}", self._stats, _clock(elapsed), eta]
        self.stream.write("  ".join(p for p in parts if p) + "\n")
        self.stream.flush()
        self._printed = self.step


class _BarWithStats(Progress):
    """A rich progress bar with each task's ``stats`` field on its own row, so that at 80 columns
    the long terms never squeeze the step count out of the bar's row."""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            stats = task.fields.get("stats")
            if stats:
                yield Text(stats, no_wrap=True, overflow="ellipsis")


class _StreamConsole(Console):
    """A console that goes quiet on a closed pipe (rich's default exits the process, which
    would skip the run's checkpoint); the bar reports it at its next update."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


class BarProgress:
    """The rich progress bar, for a terminal."""

    def __init__(self, total: int | None, completed: int, console: Console) -> None:
        self._console = console
        self._bar = _BarWithStats(
            TextColumn("[bold]{task.description}"),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            BarColumn(bar_width=None, table_column=Column(max_width=40)),
            TimeElapsedColumn(table_column=Column(no_wrap=True)),
            TimeRemainingColumn(table_column=Column(no_wrap=True)),
            console=console,
        )
        self._task = self._bar.add_task("training", total=total, completed=completed, stats="")

    def __enter__(self) -> BarProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)

    def update(self, step: int, entry: Mapping[str, Any] | None = None) -> None:
        if self._console.quiet:  # the refresh thread met a closed pipe
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
        if entry is not None:
            self._bar.update(self._task, completed=step, stats=format_stats(entry))
        else:
            self._bar.update(self._task, completed=step)


def plain_every(total: int | None, log_every: int) -> int:
    """How often plain progress lines are printed: about every tenth of the run, on a logged step
    (so each line carries that step's terms); every ten log records when the run has no step
    budget (a wall-clock limit only)."""
    if total is None:
        return 10 * log_every
    return log_every * max(1, -(-total // (10 * log_every)))


def silence_stream(stream: TextIO) -> None:
    """Send a broken stream's later writes to the null device, and stdout's or stderr's when
    they are the same pipe (``2>&1 | head``): Python's advice for a closed pipe, since the
    interpreter's own flush at exit would fail on it too."""
    try:
        fd = stream.fileno()
        broken = os.fstat(fd)
    except (OSError, ValueError, AttributeError):
        return
    targets = {fd}
    for standard in (1, 2):
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(standard), broken):
                targets.add(standard)
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            for target in targets:
                os.dup2(devnull, target)
        finally:
            os.close(devnull)


class GuardedProgress:
    """A display that cannot stop training: the first write that fails (BrokenPipeError from a
    closed pipe, EIO from a terminal that hung up) silences the display and its stream and
    calls ``on_broken`` with the error; later calls do nothing."""

    def __init__(
        self,
        inner: TrainingProgress,
        stream: TextIO,
        on_broken: Callable[[OSError], None] | None = None,
    ) -> None:
        self.inner = inner
        self.stream = stream
        self.on_broken = on_broken
        #: The error that silenced the display, if one did.
        self.broken: OSError | None = None

    def _guard(self, action: Callable[[], object]) -> None:
        if self.broken is not None:
            return
        try:
            action()
        except OSError as exc:
            self.broken = exc
            silence_stream(self.stream)
            if self.on_broken is not None:
                self.on_broken(exc)

    def __enter__(self) -> GuardedProgress:
        self._guard(self.inner.__enter__)
        return self

    def __exit__(self, *exc: object) -> None:
        self._guard(lambda: self.inner.__exit__(*exc))

    def update(self, step: int, entry: Mapping[str, Any] | None = None) -> None:
        self._guard(lambda: self.inner.update(step, entry))


def training_progress(
    enabled: bool,
    total: int | None,
    completed: int,
    every: int,
    stream: TextIO | None = None,
) -> TrainingProgress:
    """The display for a run of ``total`` steps (None: no step budget) starting at ``completed``:
    nothing when not ``enabled``; a bar when ``stream`` (default stderr) is a terminal; plain
    lines every ``every`` steps otherwise. The trainer guards it (:class:`GuardedProgress`)."""
    if not enabled:
        return NullProgress()
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return BarProgress(total, completed, _StreamConsole(file=stream))
    return LineProgress(total, completed, every, stream)


def append_record(path: Path, entry: Mapping[str, Any]) -> None:
    """Append one record to a training log (``metrics.jsonl``: one JSON object a line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(entry) + "\n")


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON records of a training log, and how many lines were not records (the torn last
    line of a crash or a full disk); blank lines are skipped, a missing log has none."""
    if not path.exists():
        return [], 0
    records: list[dict[str, Any]] = []
    torn = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip("\x00 \t\r"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            torn += 1
    return records, torn


def truncate_records(path: Path, step: int) -> int:
    """Keep the records of a training log up to ``step`` (those after it will be redone by a
    resumed run) and drop lines that are not JSON records: the torn last line of a crash or a
    full disk. Rewritten atomically; returns how many torn lines were dropped."""
    if not path.exists():
        return 0
    records, torn = read_records(path)
    text = "".join(json.dumps(r) + "\n" for r in records if r.get("step", 0) <= step)
    write_atomic(path, lambda handle: handle.write(text.encode()))
    return torn


def to_stderr(message: str) -> None:
    """Write from a signal handler: straight to the file descriptor (no Python-level buffer, which
    may be in the middle of another write)."""
    with contextlib.suppress(OSError):
        os.write(2, (message + "\n").encode())
