"""Faults around a run folder: a second writer, a study whose process was killed, a closed
terminal, a closed pipe. Each test names the fault it tries; docs/training.md lists them."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_cli_reliability import _config_file, _logged, _raw, signal_after_steps
from test_study_runner import TWO_SEEDS, _study

from agekit.config import parse_config
from agekit.runs import checkpoint as ckpt
from agekit.training.trainer import Trainer


def _train(config: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "agekit", "train", str(config), "--run-dir", str(run), *extra]


def _wait_for_records(process: subprocess.Popen[str], logs: list[Path], lines: int = 3) -> None:
    deadline = time.monotonic() + 120
    while not all(_logged(log) >= lines for log in logs):
        assert process.poll() is None, "the process ended before it logged"
        assert time.monotonic() < deadline, "no records after 120 s"
        time.sleep(0.02)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def _logged_steps(metrics: Path) -> list[int]:
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines()]


# one writer per run folder ------------------------------------------------------------------------


def test_a_second_writer_into_a_live_run_folder_is_refused_naming_the_holder(
    tmp_path: Path,
) -> None:
    config = _config_file(tmp_path, _raw(steps=100_000, checkpoint_every=100_000))
    run = tmp_path / "run"
    first = subprocess.Popen(
        _train(config, run, "--quiet"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_records(first, [run / "metrics.jsonl"])
        # Before the first's first checkpoint, with another learning rate: the case that used
        # to erase the live run's log and interleave two configurations' rows.
        second = subprocess.run(
            _train(config, run, "--quiet", "--set", "optim.lr=0.01", "--set", "train.steps=20"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"error: {run} is in use by pid {first.pid} on " in lines[0]
        assert "agekit train" in lines[0] and f"(lock: {run / 'run.lock'})" in lines[0]
        assert json.loads((run / "config.json").read_text())["optim"]["lr"] != 0.01
        assert first.poll() is None, "the first run stopped"
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
        assert first.returncode == 128 + signal.SIGTERM
    finally:
        _stop(first)
    steps = _logged_steps(run / "metrics.jsonl")
    assert steps == list(range(5, steps[-1] + 1, 5))  # one writer's rows, none dropped
    assert not (run / "run.lock").exists()  # a clean exit takes its lock file with it


_KILLED_HOLDER = textwrap.dedent(
    """
    import os, sys
    from agekit.runs.lock import RunLock

    RunLock(sys.argv[1]).__enter__()
    os.kill(os.getpid(), 9)
    """
)


def test_a_lock_left_by_a_killed_writer_is_taken_over_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _KILLED_HOLDER, str(run)])
    assert holder.wait() == -signal.SIGKILL
    assert (run / "run.lock").exists()
    raw = _raw(steps=10, checkpoint_every=10, image_every=1000)
    with caplog.at_level(logging.WARNING, logger="agekit"):
        result = Trainer(parse_config(raw), run).fit()
    assert result.step == 10
    warning = next(r.getMessage() for r in caplog.records if "run.lock" in r.getMessage())
    assert warning.startswith(f"{run / 'run.lock'}: left by pid {holder.pid} on ")
    assert warning.endswith("which is no longer running; taken over")
    assert not (run / "run.lock").exists()


def test_a_study_run_is_refused_while_a_stray_train_writes_its_folder(tmp_path: Path) -> None:
    from agekit.studies.runner import run_study

    path = _study(tmp_path, TWO_SEEDS.replace("seeds = [0, 1]", "seeds = [0]"))
    out = tmp_path / "out"
    target = out / "runs" / "ring__seed0"
    config = _config_file(tmp_path, _raw(steps=100_000, checkpoint_every=100_000))
    stray = subprocess.Popen(
        _train(config, target, "--quiet"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_records(stray, [target / "metrics.jsonl"])
        result = run_study(path, out=out, progress=False, report=False)
        assert list(result.failed) == ["ring__seed0"], result.failed
        reason = result.failed["ring__seed0"]
        assert f"{target} is in use by pid {stray.pid} on " in reason, reason
        assert stray.poll() is None
        assert not (target / "eval.json").exists()
    finally:
        _stop(stray)


# study workers stop when the study's process dies -------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command may hold spaces and parentheses: the fields after its last ')' are fixed
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
def test_study_workers_checkpoint_and_stop_when_the_study_process_is_killed(
    tmp_path: Path,
) -> None:
    path = _study(tmp_path, TWO_SEEDS, steps=100_000, checkpoint_every=100_000)
    out = tmp_path / "out"
    runs = [out / "runs" / f"ring__seed{seed}" for seed in (0, 1)]
    command = [sys.executable, "-m", "agekit", "run", str(path), "--out", str(out), "--jobs", "2"]
    study = subprocess.Popen(
        [*command, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
    )
    workers: list[int] = []
    try:
        _wait_for_records(study, [r / "metrics.jsonl" for r in runs])
        workers = _children(study.pid)
        assert len(workers) == 2, workers
        study.kill()
        study.wait()
        deadline = time.monotonic() + 60
        while any(_running(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(w) for w in workers), "the workers run on as orphans"
    finally:
        _stop(study)
        for worker in workers:  # this test's own processes, left only when it failed
            if _running(worker):
                os.kill(worker, signal.SIGKILL)
    for run in runs:
        log = (run.parent / f"{run.name}.log").read_text()
        reached = ckpt.latest(run / "checkpoints")
        assert reached is not None, log
        assert 0 < ckpt.load(reached)["step"] < 100_000
        assert f"the study's process ({study.pid}) is gone: stopping this run" in log
        assert not (run / "eval.json").exists()


# a closed terminal, a closed pipe -----------------------------------------------------------------


def test_sighup_checkpoints_like_sigterm(tmp_path: Path) -> None:
    config = _config_file(tmp_path, _raw(steps=100_000, checkpoint_every=100_000))
    run = tmp_path / "run"
    done, _ = signal_after_steps(_train(config, run, "--quiet"), [run / "metrics.jsonl"], 1)
    assert done.returncode == 128 + signal.SIGHUP, done.stderr
    reached = ckpt.latest(run / "checkpoints")
    assert reached is not None, done.stderr
    step = ckpt.load(reached)["step"]
    assert f"interrupted by SIGHUP at step {step}: checkpoint written to {reached}" in done.stderr


@pytest.mark.parametrize("hangup_first", [True, False], ids=["hangup-then-eio", "eio-then-hangup"])
def test_a_closed_terminal_checkpoints_under_the_progress_bar(
    tmp_path: Path, hangup_first: bool
) -> None:
    # The bar draws on a terminal; closing it sends SIGHUP and fails every later write with
    # EIO, in either order: one stop request, with a checkpoint, not a second one without.
    pty = pytest.importorskip("pty")
    config = _config_file(tmp_path, _raw(steps=100_000, checkpoint_every=100_000))
    run = tmp_path / "run"
    terminal, device = pty.openpty()
    process = subprocess.Popen(
        _train(config, run), stdin=device, stdout=device, stderr=device, text=True
    )
    os.close(device)
    try:
        while _logged(run / "metrics.jsonl") < 3:
            assert process.poll() is None, "the process ended before it logged"
            with contextlib.suppress(OSError):
                os.read(terminal, 65536)  # a terminal that reads what the bar draws
            time.sleep(0.02)
        if hangup_first:
            process.send_signal(signal.SIGHUP)
            os.close(terminal)
        else:
            os.close(terminal)
            time.sleep(0.5)
            process.send_signal(signal.SIGHUP)
        process.wait(timeout=120)
    finally:
        _stop(process)
    assert process.returncode in (128 + signal.SIGHUP, 128 + signal.SIGPIPE)
    if hangup_first:
        assert process.returncode == 128 + signal.SIGHUP
    reached = ckpt.latest(run / "checkpoints")
    assert reached is not None, "no checkpoint"
    assert ckpt.load(reached)["step"] >= 15


def test_a_closed_output_pipe_checkpoints_and_stops(tmp_path: Path) -> None:
    # `agekit train ... 2>&1 | head`: the lines up to the first progress line are read,
    # then the pipe is closed.
    config = _config_file(tmp_path, _raw(steps=200, checkpoint_every=1000, image_every=1000))
    run = tmp_path / "run"
    process = subprocess.Popen(
        _train(config, run), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        head = [process.stdout.readline()]
        while not head[-1].startswith("step 20/200"):  # the first progress line, then closed
            head.append(process.stdout.readline())
            assert len(head) < 10 and head[-1], head
        process.stdout.close()
        process.wait(timeout=300)
    finally:
        _stop(process)
    assert process.returncode == 128 + signal.SIGPIPE
    reached = ckpt.latest(run / "checkpoints")
    assert reached is not None, "no checkpoint"
    assert 40 <= ckpt.load(reached)["step"] < 200


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_training_never_dies_of_its_progress_display(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stderr", _ClosedPipe())
    raw = _raw(steps=40, checkpoint_every=20, image_every=1000)
    result = Trainer(parse_config(raw), tmp_path / "run", progress=True).fit()
    assert (result.status, result.step) == ("complete", 40)
    assert ckpt.latest(tmp_path / "run" / "checkpoints") is not None


class _HungUpTerminal(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(errno.EIO, "Input/output error")


def test_a_hung_up_terminal_silences_the_display_once_and_says_so() -> None:
    from agekit.training.progress import GuardedProgress, LineProgress

    stream = _HungUpTerminal()
    broken: list[OSError] = []
    with GuardedProgress(LineProgress(10, 0, 1, stream), stream, broken.append) as progress:
        for step in range(1, 4):
            progress.update(step)
    assert [exc.errno for exc in broken] == [errno.EIO]
