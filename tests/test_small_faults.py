"""Smaller faults: a damaged newest checkpoint when reading a run, redirected consoles, ETAs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from agekit.cli import main
from agekit.config import parse_config
from agekit.runs import checkpoint as ckpt
from agekit.training.progress import BarProgress, LineProgress
from agekit.training.trainer import Trainer

RUN = {
    "name": "tiny",
    "data": {"name": "ring8", "batch_size": 16, "options": {"size": 128, "test_size": 32}},
    "prior": {"name": "sphere", "dim": 4},
    "backbone": {"name": "mlp", "options": {"hidden": 8, "depth": 2}},
    "train": {"steps": 4, "checkpoint_every": 2, "image_every": 4, "device": "cpu"},
}


@pytest.fixture(scope="module")
def damaged_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose newest checkpoint (step 4) was cut short; step 2 is intact."""
    run = tmp_path_factory.mktemp("damaged") / "run"
    Trainer(parse_config(RUN), run).fit()
    newest = run / "checkpoints" / "step_00000004.pt"
    newest.write_bytes(newest.read_bytes()[:200])
    return run


def test_sample_falls_back_past_a_damaged_newest_checkpoint(
    damaged_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agekit"):
        code = main(["sample", str(damaged_run), "--out", str(tmp_path / "s.png"), "--n", "4"])
    assert code == 0 and (tmp_path / "s.png").is_file()
    assert "step_00000004.pt" in caplog.text and "step_00000002.pt" in caplog.text
    # reading a run changes nothing in it: the damaged file stays where it is
    assert (damaged_run / "checkpoints" / "step_00000004.pt").is_file()


def test_evaluate_falls_back_past_a_damaged_newest_checkpoint(
    damaged_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "scores.json"
    argv = ["evaluate", str(damaged_run), "--out", str(out), "--device", "cpu"]
    with caplog.at_level(logging.WARNING, logger="agekit"):
        assert main([*argv, "--metric", "latent-divergence"]) == 0
    record = json.loads(out.read_text())
    assert record["step"] == 2 and record["checkpoint"].endswith("step_00000002.pt")
    assert "step_00000004.pt" in caplog.text


def test_a_config_json_with_its_provenance_still_reads_as_the_configuration(
    damaged_run: Path,
) -> None:
    from agekit.cli.evaluate import _default_metric_names

    assert "provenance" in json.loads((damaged_run / "config.json").read_text())
    checkpoint = damaged_run / "checkpoints" / "step_00000002.pt"
    assert "reconstruction" in _default_metric_names(damaged_run, checkpoint)


def test_a_damaged_checkpoint_is_named_in_plain_words(damaged_run: Path) -> None:
    path = damaged_run / "checkpoints" / "step_00000004.pt"
    with pytest.raises(ckpt.CheckpointError) as error:
        ckpt.load(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "damaged" in message and "not an agekit checkpoint" in message
    for jargon in ("zip", "central directory", "Unpickler", "weights-only", "PytorchStreamReader"):
        assert jargon not in message


def test_redirected_consoles_do_not_wrap_long_paths() -> None:
    long_path = "/data/" + "/".join(f"folder_{i:02d}" for i in range(20)) + "/step_00000004.pt"
    code = (
        "import sys\n"
        "from agekit.cli.shared import console, err_console\n"
        "from agekit.studies.console import console as study_console\n"
        "for c in (console, err_console, study_console):\n"
        f"    c.print('wrote {long_path}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True
    )
    assert done.stdout.splitlines() == [f"wrote {long_path}"] * 2
    assert done.stderr.splitlines() == [f"wrote {long_path}"]


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}


def test_plain_progress_lines_show_the_time_left() -> None:
    out = io.StringIO()
    with LineProgress(total=100, completed=40, every=20, stream=out) as progress:
        for step in range(41, 101):
            progress.update(step)
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["60/100", "80/100", "100/100"]
    assert all(" ETA " in line for line in lines[:-1]) and "ETA" not in lines[-1]


def test_the_bar_shows_the_time_left() -> None:
    from rich.console import Console
    from rich.progress import TimeRemainingColumn

    bar = BarProgress(total=10, completed=0, console=Console(file=io.StringIO()))
    assert any(isinstance(column, TimeRemainingColumn) for column in bar._bar.columns)
