"""What one ``run_study`` call did: the runs it considered, skipped, finished and saw fail.

The runner fills it in; the sequential and parallel executors and the closing lines read and add
to it, so it sits below all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StudyResult:
    """What one ``run_study`` call did."""

    folder: Path
    #: Runs this call considered (all planned, or those --only selected).
    selected: int
    #: Already complete when the call started.
    skipped: int
    #: Trained and evaluated by this call.
    finished: list[str] = field(default_factory=list)
    #: run id -> one-line reason, for runs that failed in this call.
    failed: dict[str, str] = field(default_factory=dict)

    def __fspath__(self) -> str:
        return str(self.folder)
