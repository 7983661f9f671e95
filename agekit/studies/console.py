"""What a study prints while it runs: overall progress (runs done of the total, elapsed time, an
estimate), each run's one-line summary, the live view of a parallel study and the closing lines."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from agekit.runs.layout import RUNS
from agekit.studies.headline import headline
from agekit.studies.layout import FAILED_FILE
from agekit.studies.statistics import flatten
from agekit.util.terminal import stream_console

if TYPE_CHECKING:
    from agekit.studies.result import StudyResult
    from agekit.studies.schema import StudySpec

console = stream_console()
err_console = stream_console(stderr=True)


def clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_work(run: Any) -> float:
    """A planned run's work for the time estimate: its training iterations (1 without them)."""
    steps = run.config.train.steps
    return float(steps) if steps else 1.0


class Overall:
    """Runs done of the total, time elapsed and an estimate of the time left.

    The estimate prices the work left (training iterations) per kind of run (a study's setting)
    at the pace its finished runs took, wall time per iteration, and at the pace of all finished
    runs for a kind none has finished yet: a study's short tuning rungs do not promise its long
    final runs at their pace, nor a cheap 2-D setting an image setting's.
    """

    def __init__(self, total: int, skipped: int, jobs: int = 1) -> None:
        self.total = total
        self.skipped = skipped
        self.jobs = max(1, jobs)
        self.done = 0  # this session, finished or failed
        self.failed = 0
        #: Iterations still to train, per kind of run.
        self.left: dict[str, float] = {}
        #: Wall seconds and iterations of the finished runs, per kind of run.
        self.spent: dict[str, tuple[float, float]] = {}
        self.started = time.monotonic()

    def plan(self, kind: str, work: float, runs: int = 0) -> None:
        """Count ``work`` iterations to come, in ``runs`` runs not yet in the total (a rung
        that the plan holds only once the rung before is evaluated)."""
        self.left[kind] = self.left.get(kind, 0.0) + work
        self.total += runs

    def finish(
        self, failed: bool = False, kind: str = "", work: float = 0.0, seconds: float = 0.0
    ) -> None:
        self.done += 1
        self.failed += int(failed)
        self.left[kind] = max(0.0, self.left.get(kind, 0.0) - work)
        if failed:
            return  # a failure's time says nothing about the pace of a run that finishes
        spent_seconds, spent_work = self.spent.get(kind, (0.0, 0.0))
        self.spent[kind] = (spent_seconds + seconds, spent_work + work)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def estimate(self) -> str:
        left = self.total - self.skipped - self.done
        if left <= 0:
            return "none left"
        if self.done == 0:
            return "estimate after the first run"
        seconds = sum(s for s, _ in self.spent.values())
        work = sum(w for _, w in self.spent.values())
        if work <= 0 or seconds <= 0:
            return f"about {clock(self.elapsed / self.done * left)} left"
        paces = {kind: s / w for kind, (s, w) in self.spent.items() if w > 0 and s > 0}
        to_go = sum(paces.get(kind, seconds / work) * w for kind, w in self.left.items())
        return f"about {clock(to_go / self.jobs)} left"

    def line(self) -> str:
        failed = f" ({self.failed} failed)" if self.failed else ""
        return (
            f"{self.skipped + self.done}/{self.total} runs done{failed}, "
            f"{clock(self.elapsed)} elapsed, {self.estimate()}"
        )


@contextlib.contextmanager
def parallel_view(progress: bool, overall: Overall) -> Iterator[Callable[[str | None], None]]:
    """``show(message)``: on a terminal, a live line of overall progress under the messages;
    otherwise each message followed by a plain progress line. ``show(None)`` refreshes the
    live line."""
    if progress and console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        view = Progress(
            TextColumn("[bold]study"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[timing]}"),
            console=console,
        )
        with view:
            task = view.add_task("study", total=overall.total, completed=overall.skipped, timing="")

            def show(message: str | None) -> None:
                if message is not None:
                    view.console.print(escape(message), soft_wrap=True, highlight=False)
                view.update(
                    task,
                    completed=overall.skipped + overall.done,
                    timing=f"{clock(overall.elapsed)} elapsed, {overall.estimate()}",
                )

            yield show
        return

    def plain(message: str | None) -> None:
        if message is None:
            return
        console.print(message, highlight=False, markup=False, soft_wrap=True)
        if not message.startswith("started "):
            console.print(overall.line(), highlight=False, markup=False, soft_wrap=True)

    yield plain


def short_summary(record: dict[str, Any]) -> str:
    """``RUN_ID: key value, ...``: the run's headline scores, in report order."""
    values = flatten(record)
    parts = [f"{key.split('.', 1)[1]} {values[key]:.4g}" for key in headline() if key in values]
    return f"{record['run_id']}: " + ", ".join(parts)


def print_closing(spec: StudySpec, overall: Overall, result: StudyResult) -> None:
    done = result.skipped + len(result.finished)
    console.print(
        f"{spec.name}: {done} of {result.selected} runs complete "
        f"({len(result.finished)} this time, {result.skipped} before), "
        f"{len(result.failed)} failed, {clock(overall.elapsed)} elapsed",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    if result.failed:
        console.print(
            f"failed runs (error and traceback in {result.folder / RUNS}/<run>/{FAILED_FILE}):",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        for run_id, reason in result.failed.items():
            console.print(
                f"  {run_id}\n    {reason}", highlight=False, markup=False, soft_wrap=True
            )
