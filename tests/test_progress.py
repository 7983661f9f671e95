"""What training shows while it runs: a bar on a terminal, plain lines in a redirected log."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console
from test_trainer import _config

from agekit.training.progress import (
    BarProgress,
    LineProgress,
    NullProgress,
    format_stats,
    plain_every,
    training_progress,
)
from agekit.training.trainer import Trainer

ENTRY = {
    "step": 400,
    "kl_real": 0.6123,
    "kl_fake": 0.1234,
    "data_rec": 0.4567,
    "latent_rec": 0.0012,
    "images_per_s": 1234.4,
}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_redirected_training_log_gets_plain_progress_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = io.StringIO()  # a file, not a terminal: no bar can be drawn
    monkeypatch.setattr(sys, "stderr", log)
    Trainer(_config(), tmp_path / "run", progress=True).fit()
    lines = [line for line in log.getvalue().splitlines() if line.startswith("step ")]
    # 60 steps logged every 5: a line about every tenth of the run, on logged steps.
    assert [line.split()[1] for line in lines] == [
        "10/60",
        "20/60",
        "30/60",
        "40/60",
        "50/60",
        "60/60",
    ]
    for line in lines:
        assert "D(e(x)) " in line and "L_X " in line and "img/s" in line and "\x1b" not in line


def test_quiet_training_prints_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    Trainer(_config(steps=10), tmp_path / "run", progress=False).fit()
    assert "step " not in log.getvalue()


def test_the_display_follows_the_stream() -> None:
    assert isinstance(training_progress(False, 10, 0, 1, _Terminal()), NullProgress)
    assert isinstance(training_progress(True, 10, 0, 1, _Terminal()), BarProgress)
    assert isinstance(training_progress(True, 10, 0, 1, io.StringIO()), LineProgress)


def test_plain_lines_every_tenth_on_logged_steps() -> None:
    assert plain_every(4000, 50) == 400
    assert plain_every(60, 5) == 10
    assert plain_every(7, 5) == 5  # never more often than the log
    assert plain_every(None, 25) == 250  # a wall-clock budget only: every ten log records


def test_line_progress_reports_where_an_interrupted_run_stopped() -> None:
    out = io.StringIO()
    with LineProgress(total=None, completed=100, every=50, stream=out) as progress:
        for step in range(101, 176):
            progress.update(step, ENTRY if step % 25 == 0 else None)
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["150", "175"]
    assert lines[0].startswith("step 150  D(e(x)) 0.612  D(e(g(z))) 0.123  L_X 0.457  L_Z 0.001")
    assert "1234 img/s" in lines[0]


def test_the_bar_keeps_the_step_count_visible_at_80_columns() -> None:
    out = _Terminal()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    with BarProgress(total=4000, completed=0, console=console) as bar:
        bar.update(400, ENTRY)
    text = out.getvalue()
    assert "400/4000" in text
    assert format_stats(ENTRY) in text  # the terms on their own row, whole


def test_the_training_log_labels_are_the_games_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # Defined once, beside the game's terms: progress lines and study figures read that table.
    from agekit.games import age as game
    from agekit.studies import figures

    assert list(game.TERM_LABELS.values()) == ["D(e(x))", "D(e(g(z)))", "L_X", "L_Z"]
    monkeypatch.setitem(game.TERM_LABELS, "kl_real", "D_real")
    assert format_stats(ENTRY).startswith("D_real 0.612  D(e(g(z))) 0.123")
    assert figures.TERM_LABELS is game.TERM_LABELS
