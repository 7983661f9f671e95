"""``agekit run`` under failure: values checked before any training, runs that fail while the
others go on, progress, preemption signals, and a study folder that moved."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_cli_reliability import signal_after_steps

from agekit.cli import main
from agekit.config import ConfigError, ExperimentConfig, config_to_dict
from agekit.config.changes import science_differences
from agekit.studies.layout import FAILED_FILE
from agekit.studies.runner import run_study
from agekit.studies.spec import load_study, plan

BASE = """
[base]
data = { name = "ring8", batch_size = 32, options = { size = 1024, test_size = 128 } }
prior = { name = "sphere", dim = 4 }
backbone = { name = "mlp", options = { hidden = 16, depth = 2 } }
train = { steps = STEPS, checkpoint_every = CKPT, image_every = 1000, log_every = 3, \
device = "cpu", grid_size = 16 }
"""


def _study(tmp_path: Path, body: str, steps: int = 12, checkpoint_every: int = 6) -> Path:
    text = BASE.replace("STEPS", str(steps)).replace("CKPT", str(checkpoint_every))
    path = tmp_path / "study.toml"
    path.write_text(body.strip() + "\n" + text)
    return path


#: Two runs; "bad" trains, then fails in evaluation (the inception metric needs images).
FAILING = """
name = "failing"
seeds = [0]
[[settings]]
name = "good"
metrics = ["reconstruction"]
[[settings]]
name = "bad"
metrics = [{ name = "inception", options = { weights = "nowhere" } }]
"""


# 1. values are checked before the first training ------------------------------------------------


def test_science_differences_ignore_location_cadence_and_device() -> None:
    stored = config_to_dict(ExperimentConfig())
    planned = json.loads(json.dumps(stored))
    planned["out_dir"] = "/elsewhere/runs"
    planned["name"] = "moved"
    planned["train"].update(device="cpu", checkpoint_every=7, log_every=1, image_every=3)
    planned["data"]["workers"] = 2
    assert science_differences(stored, planned) == []
    planned["divergence"]["options"] = {"k": 5}
    planned["game"]["latent_weight"] = 1.0
    planned["train"]["steps"] = 5
    assert science_differences(stored, planned) == [
        "divergence.options.k",
        "game.latent_weight",
        "train.steps",
    ]
    # A section written before it existed counts as its defaults.
    older = {k: v for k, v in stored.items() if k != "distributed"}
    assert science_differences(older, stored) == []


@pytest.mark.parametrize(
    ("axis", "message"),
    [
        ("[3, 0]", r"kozachenko-leonenko' rejected its options \{'k': 0\}: k must be >= 1"),
        ("[3, 40]", r"divergence\.options\.k = 40 needs k < data\.batch_size \(32\)"),
    ],
)
def test_option_values_on_an_axis_fail_before_any_training(
    tmp_path: Path, axis: str, message: str
) -> None:
    path = _study(
        tmp_path,
        f"""
name = "values"
seeds = [0, 1]
[axes]
"divergence.name" = ["kozachenko-leonenko"]
"divergence.options.k" = {axis}
""",
    )
    with pytest.raises(ConfigError, match=message) as info:
        run_study(path, out=tmp_path / "out")
    bad = axis.strip("[]").split(", ")[1]
    text = str(info.value)
    # The study file, the run with its axis values, the key.
    assert text.startswith(str(path))
    assert f"run values__divergence=kozachenko-leonenko__k={bad}__seed0" in text
    assert f"divergence.options.k = {bad}" in text
    assert not (tmp_path / "out" / "runs").exists()  # nothing trained, not even the good runs


def test_a_study_named_with_a_space_and_no_settings_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "study.toml"
    path.write_text('name = "my study"\n[base]\ntrain = { steps = 2 }\n')
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{path}: name 'my study':" in err and "letters, digits" in err
    assert "validation error" not in err and "pydantic" not in err


# 2. a failing run does not stop the others --------------------------------------------------------


def test_a_failing_run_does_not_stop_the_others_and_the_report_lists_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _study(tmp_path, FAILING)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 1
    stdout = capsys.readouterr().out
    # "bad" comes after "good" in the plan: it failed, and "good" was still evaluated.
    assert (out / "runs" / "good__seed0" / "eval.json").exists()
    assert not (out / "runs" / "bad__seed0" / "eval.json").exists()
    failed = json.loads((out / "runs" / "bad__seed0" / FAILED_FILE).read_text())
    assert failed["error"] == "ValueError: inception scores need images; 'ring8' is not"
    assert "Traceback" in failed["traceback"]
    report = (out / "report.md").read_text()
    assert "## Failed runs" in report
    assert "- `bad__seed0`: ValueError: inception scores need images" in report
    # `agekit report` rewrites the same report, failed runs included.
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == report
    capsys.readouterr()
    # Overall progress lines (the output is not a terminal: plain lines), and the summary.
    assert "1/2 runs done, " in stdout and " elapsed, " in stdout
    assert "2/2 runs done (1 failed), " in stdout and "none left" in stdout
    assert "failing: 1 of 2 runs complete (1 this time, 0 before), 1 failed" in stdout
    assert "  bad__seed0\n    ValueError: inception scores need images" in stdout
    assert "…" not in stdout

    # Again: the finished run is skipped, the failed one is retried (and fails again).
    before = (out / "runs" / "good__seed0" / "eval.json").stat().st_mtime_ns
    result = run_study(path, out=out, progress=False)
    assert result.skipped == 1 and result.finished == [] and list(result.failed) == ["bad__seed0"]
    assert (out / "runs" / "good__seed0" / "eval.json").stat().st_mtime_ns == before


def test_the_report_of_a_study_where_nothing_finished_lists_its_failed_runs(
    tmp_path: Path,
) -> None:
    from agekit.studies.report import write_report

    for run_id, error in (("a__seed0", "ValueError: boom"), ("dropped__seed0", "OSError: old")):
        (tmp_path / "runs" / run_id).mkdir(parents=True)
        (tmp_path / "runs" / run_id / FAILED_FILE).write_text(json.dumps({"error": error}))
    # Only the runs the study plans now are listed (an axis value removed since is not).
    (tmp_path / "study.json").write_text(
        json.dumps({"study": {"name": "broken"}, "runs": ["a__seed0", "b__seed0"]})
    )
    assert write_report(tmp_path) == {}
    report = (tmp_path / "report.md").read_text()
    assert report.startswith(
        "# Study: broken\n\nNo run at the study's seeds finished.\n\n## Failed runs\n"
    )
    assert "- `a__seed0`: ValueError: boom" in report and "dropped__seed0" not in report


def test_a_parallel_study_whose_run_fails_still_reports(tmp_path: Path) -> None:
    path = _study(tmp_path, FAILING)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "agekit", "run", str(path), "--out", str(out), "--jobs", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "failed bad__seed0: ValueError: inception scores need images" in done.stdout
    assert "finished good__seed0: recon_l1" in done.stdout
    assert "2/2 runs done (1 failed)" in done.stdout
    report = (out / "report.md").read_text()
    assert "- `bad__seed0`: ValueError: inception scores need images" in report
    assert "good" in json.loads((out / "summary.json").read_text())["evaluated_runs"][0]


# 5. a moved study folder --------------------------------------------------------------------------

ONE_RUN = """
name = "moving"
seeds = [0]
[[settings]]
name = "ring"
metrics = ["reconstruction"]
"""


def test_a_moved_study_folder_stays_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _study(tmp_path, ONE_RUN)
    run_study(path, out=tmp_path / "first", progress=False)
    evaluation = Path("runs") / "ring__seed0" / "eval.json"
    before = (tmp_path / "first" / evaluation).stat().st_mtime_ns
    shutil.move(tmp_path / "first", tmp_path / "moved")
    (tmp_path / "moved" / "report.md").unlink()

    monkeypatch.chdir(tmp_path)  # and given as a relative path this time
    result = run_study(path, out="moved", progress=False)
    assert result.skipped == 1 and result.finished == [] and not result.failed
    assert (tmp_path / "moved" / evaluation).stat().st_mtime_ns == before
    assert (tmp_path / "moved" / "report.md").exists()
    # A change of science is not complete.
    changed = path.read_text().replace("hidden = 16", "hidden = 8")
    path.write_text(changed)
    spec, source = load_study(path)
    from agekit.studies.layout import is_complete

    assert not is_complete(Path("moved"), plan(spec, str(source), Path("moved"))[0])


def test_a_complete_run_sheds_an_older_failure_record(tmp_path: Path) -> None:
    # A crash after eval.json was written leaves both files; the run is complete, not failed.
    path = _study(tmp_path, ONE_RUN)
    run_study(path, out=tmp_path / "study", progress=False)
    stale = tmp_path / "study" / "runs" / "ring__seed0" / FAILED_FILE
    stale.write_text(json.dumps({"error": "crashed after its evaluation"}))
    result = run_study(path, out=tmp_path / "study", progress=False)
    assert result.skipped == 1 and not result.failed
    assert not stale.exists()
    assert "crashed after its evaluation" not in (tmp_path / "study" / "report.md").read_text()


def test_the_report_skips_a_torn_last_line_of_a_training_log(tmp_path: Path) -> None:
    # A crash or a full disk can leave half a record at the end of metrics.jsonl.
    from agekit.studies.report import write_report

    path = _study(tmp_path, ONE_RUN)
    run_study(path, out=tmp_path / "study", progress=False)
    log = tmp_path / "study" / "runs" / "ring__seed0" / "metrics.jsonl"
    log.write_text(log.read_text() + '{"step": 13, "kl_re')
    write_report(tmp_path / "study")
    assert (tmp_path / "study" / "figures" / "curves_ring.png").exists()


def test_an_interrupted_run_in_a_moved_study_folder_resumes(tmp_path: Path) -> None:
    from agekit.training.trainer import Trainer, TrainingHooks

    class Crash(Exception):
        pass

    class CrashAtStep6(TrainingHooks):
        def on_checkpoint(self, trainer: Trainer, path: Path, step: int) -> None:
            if step == 6:
                raise Crash

    path = _study(tmp_path, ONE_RUN)
    spec, source = load_study(path)
    run = plan(spec, str(source), tmp_path / "first")[0]
    with pytest.raises(Crash):
        Trainer(run.config, tmp_path / "first" / "runs" / run.run_id, hooks=[CrashAtStep6()]).fit()
    shutil.move(tmp_path / "first", tmp_path / "moved")

    result = run_study(path, out=tmp_path / "moved", progress=False)
    assert result.finished == [run.run_id], result.failed
    folder = tmp_path / "moved" / "runs" / run.run_id
    record = json.loads((folder / "eval.json").read_text())
    assert record["resumed"] is True and record["step"] == 12
    steps = [
        json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [3, 6, 9, 12]  # continued after step 6, not started over


# 4. signals ---------------------------------------------------------------------------------------

TWO_SEEDS = """
name = "preempted"
seeds = [0, 1]
[[settings]]
name = "ring"
metrics = ["reconstruction"]
"""


def test_sigterm_during_agekit_run_checkpoints_stops_and_the_same_command_continues(
    tmp_path: Path,
) -> None:
    from agekit.runs import checkpoint as ckpt

    path = _study(tmp_path, TWO_SEEDS, steps=600, checkpoint_every=200)
    out = tmp_path / "out"
    first = out / "runs" / "ring__seed0"
    command = [sys.executable, "-m", "agekit", "run", str(path), "--out", str(out), "--quiet"]
    done, _ = signal_after_steps(command, [first / "metrics.jsonl"], signal.SIGTERM)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    reached = ckpt.latest(first / "checkpoints")
    assert reached is not None, done.stderr
    step = ckpt.load(reached)["step"]
    assert 9 <= step < 600
    assert "Traceback" not in done.stderr
    assert (
        f"interrupted by SIGTERM during run ring__seed0: at step {step}: checkpoint written to "
        f"{reached}; run `agekit run {path} --out {out} --quiet` again to continue"
    ) in done.stderr
    assert not (first / "eval.json").exists()  # not evaluated half-trained
    assert not (out / "runs" / "ring__seed1").exists()  # the study stopped
    assert not (out / "report.md").exists()

    result = run_study(path, out=out, progress=False)
    assert result.finished == ["ring__seed0", "ring__seed1"], result.failed
    record = json.loads((first / "eval.json").read_text())
    assert record["resumed"] is True and record["step"] == 600
    assert (out / "report.md").exists()


def test_ctrl_c_stops_a_parallel_study_after_each_run_checkpoints(tmp_path: Path) -> None:
    from agekit.runs import checkpoint as ckpt

    path = _study(tmp_path, TWO_SEEDS, steps=100_000, checkpoint_every=100_000)
    out = tmp_path / "out"
    runs = [out / "runs" / f"ring__seed{seed}" for seed in (0, 1)]
    command = [sys.executable, "-m", "agekit", "run", str(path), "--out", str(out), "--jobs", "2"]
    done, _ = signal_after_steps(command, [r / "metrics.jsonl" for r in runs], signal.SIGINT)
    assert done.returncode == 128 + signal.SIGINT, done.stderr
    assert "interrupted by SIGINT: the runs in progress" in done.stderr
    assert "again to continue" in done.stderr and "Traceback" not in done.stderr
    for run in runs:
        # Each run's process got the signal exactly once (passed on by the study): a checkpoint
        # at the step reached, not the immediate exit of a second signal.
        reached = ckpt.latest(run / "checkpoints")
        assert reached is not None, (run.parent / f"{run.name}.log").read_text()
        assert 0 < ckpt.load(reached)["step"] < 100_000
        assert not (run / "eval.json").exists()


def test_a_run_process_killed_before_it_could_say_why_is_still_listed(tmp_path: Path) -> None:
    from agekit.studies.failures import recorded_failures
    from agekit.studies.parallel import _Child, _child_failure

    path = _study(tmp_path, FAILING)
    out = tmp_path / "out"
    spec, source = load_study(path)
    run = plan(spec, str(source), out)[1]
    stale = out / "runs" / run.run_id / FAILED_FILE
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"error": "an earlier attempt's error"}))
    os.utime(stale, (time.time() - 60, time.time() - 60))
    process = subprocess.Popen([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"])
    process.wait()
    child = _Child(run, process, out / "runs" / f"{run.run_id}.log")
    reason = _child_failure(out, child, process.returncode)
    assert reason.startswith("its process ended with exit status -9; see ")
    assert recorded_failures(out) == {run.run_id: reason}


def test_a_run_process_the_stop_signal_killed_before_its_handler_is_interrupted_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler signals every process of a job; a run's process still importing torch has no
    handler yet and dies of the signal (exit -15): the study stopped it, it did not fail."""
    from types import SimpleNamespace

    from agekit.studies import parallel
    from agekit.studies.console import Overall
    from agekit.studies.result import StudyResult
    from agekit.studies.stopping import StudyInterrupted

    path = _study(tmp_path, TWO_SEEDS)
    out = tmp_path / "out"
    spec, source = load_study(path)
    runs = plan(spec, str(source), out, check=False)
    # a process without a SIGTERM handler, as a run's is while it starts
    monkeypatch.setattr(
        parallel,
        "_child_command",
        lambda *args: [sys.executable, "-c", "import time; time.sleep(60)"],
    )
    stop = SimpleNamespace(received=None, count=1)
    # the signal arrives once both processes run
    threading.Timer(1.0, lambda: setattr(stop, "received", signal.SIGTERM)).start()
    result = StudyResult(out, len(runs), 0)
    with pytest.raises(StudyInterrupted) as stopped:
        parallel.run_parallel(path, out, runs, 2, None, Overall(2, 0), result, stop, False)  # type: ignore[arg-type]
    assert not result.failed
    assert all(run.run_id in stopped.value.detail for run in runs)


def test_the_time_left_prices_each_settings_work_at_its_own_pace() -> None:
    from agekit.studies.console import Overall

    overall = Overall(total=6, skipped=0, jobs=2)
    overall.plan("images", 3 * 1000.0)  # three runs of 1,000 iterations
    overall.plan("points", 2 * 4000.0)
    overall.plan("points", 4000.0, runs=1)  # a rung the plan holds later
    assert overall.total == 7
    assert overall.estimate() == "estimate after the first run"
    overall.finish(kind="images", work=1000.0, seconds=600.0)  # 0.6 s per iteration
    # nothing of "points" finished yet: its 12,000 iterations at the images' pace, two at once
    assert overall.estimate() == "about 1:10:00 left"  # (2,000 + 12,000) x 0.6 / 2
    overall.finish(kind="points", work=4000.0, seconds=400.0)  # 0.1 s per iteration
    assert overall.estimate() == "about 0:16:40 left"  # (2,000 x 0.6 + 8,000 x 0.1) / 2 = 1,000 s


def test_a_metric_added_to_a_scored_study_is_scored_without_retraining(tmp_path: Path) -> None:
    body = """
name = "added"
seeds = [0]
[[settings]]
name = "ring8"
metrics = ["reconstruction"]
"""
    path = _study(tmp_path, body)
    out = tmp_path / "out"
    run_study(path, out=out, progress=False)
    folder = out / "runs" / "ring8__seed0"
    first = json.loads((folder / "eval.json").read_text())
    log = (folder / "metrics.jsonl").read_text()
    path.write_text(
        path.read_text().replace('["reconstruction"]', '["reconstruction", "mode-coverage"]')
    )
    result = run_study(path, out=out, progress=False)
    second = json.loads((folder / "eval.json").read_text())
    assert result.finished == ["ring8__seed0"]
    assert (folder / "metrics.jsonl").read_text() == log  # nothing trained
    assert second["metrics"]["reconstruction"] == first["metrics"]["reconstruction"]
    assert second["metrics"]["mode-coverage"]["modes_captured"] >= 0
    assert [m["name"] for m in second["metric_specs"]] == ["reconstruction", "mode-coverage"]
    # scored with every planned metric: a third call has nothing to do
    assert run_study(path, out=out, progress=False).finished == []
    # a metric whose options change is scored again, the others are kept
    path.write_text(
        path.read_text().replace(
            '"mode-coverage"]', '{ name = "mode-coverage", options = { n_samples = 500 } }]'
        )
    )
    run_study(path, out=out, progress=False)
    third = json.loads((folder / "eval.json").read_text())
    assert third["metrics"]["mode-coverage"]["protocol"]["n_samples"] == 500
    assert third["metrics"]["reconstruction"] == first["metrics"]["reconstruction"]


def test_a_metric_is_added_to_an_older_record_in_a_moved_study_folder(tmp_path: Path) -> None:
    body = """
name = "legacy"
seeds = [0]
[[settings]]
name = "ring8"
metrics = ["reconstruction"]
"""
    path = _study(tmp_path, body)
    run_study(path, out=tmp_path / "out", progress=False)
    shutil.move(tmp_path / "out", tmp_path / "moved")
    record_path = tmp_path / "moved" / "runs" / "ring8__seed0" / "eval.json"
    record = json.loads(record_path.read_text())
    del record["metric_specs"]  # written before records listed their metrics
    record_path.write_text(json.dumps(record))
    path.write_text(
        path.read_text().replace('["reconstruction"]', '["reconstruction", "mode-coverage"]')
    )
    result = run_study(path, out=tmp_path / "moved", progress=False)
    merged = json.loads(record_path.read_text())
    assert result.finished == ["ring8__seed0"]
    assert merged["metrics"]["reconstruction"] == record["metrics"]["reconstruction"]
    # the older metric is known by name only; the added one with its options
    assert merged["metric_specs"] == [
        {"name": "reconstruction", "options": None},
        {"name": "mode-coverage", "options": {}},
    ]
    assert run_study(path, out=tmp_path / "moved", progress=False).finished == []
