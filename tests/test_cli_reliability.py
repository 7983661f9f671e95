"""The command line under everyday failures: preemption signals, torn files, pipes, bad input."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_trainer import TINY  # the same tiny run as the trainer tests
from test_trainer import _to_toml as _toml

from agekit.cli import main
from agekit.config import parse_config
from agekit.runs import checkpoint as ckpt
from agekit.training.trainer import Trainer, TrainingHooks


def _raw(**train: Any) -> dict[str, Any]:
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    return raw


def _config_file(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(_toml(raw))
    return path


def _logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _same_parameters(a: Path, b: Path) -> None:
    left, right = ckpt.load(a), ckpt.load(b)
    for network in ("encoder", "generator"):
        for key, value in right[network].items():
            assert torch.equal(left[network][key], value), f"{network}.{key} differs"


class _Crash(Exception):
    pass


def _crash_after_checkpoint(run: Path, raw: dict[str, Any], at: int) -> None:
    """Train ``raw`` in ``run`` until the checkpoint of step ``at`` is written, then die."""

    class Crash(TrainingHooks):
        def on_checkpoint(self, trainer: Trainer, path: Path, step: int) -> None:
            if step == at:
                raise _Crash

    with pytest.raises(_Crash):
        Trainer(parse_config(raw), run, hooks=[Crash()]).fit()


def _default_sigint() -> None:
    # A child of a non-interactive shell may inherit SIGINT ignored; a terminal's Ctrl-C is not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _logged(metrics: Path) -> int:
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def signal_after_steps(
    command: list[str], logs: list[Path], signum: int, lines: int = 3
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Start ``command``, send ``signum`` once every metrics log in ``logs`` has ``lines``
    records, wait for the end; also returns the seconds from the signal to the end."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if all(_logged(log) >= lines for log in logs):
                break
            time.sleep(0.005)
        assert process.poll() is None, "the process ended before it could be signalled"
        process.send_signal(signum)
        sent = time.monotonic()
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    done = subprocess.CompletedProcess(command, process.returncode, out, err)
    return done, time.monotonic() - sent


# 1. preemption ------------------------------------------------------------------------------------


def test_sigterm_checkpoints_the_step_reached_and_resume_is_exact(tmp_path: Path) -> None:
    raw = _raw(steps=600, checkpoint_every=200, image_every=1000)
    reference = Trainer(parse_config(raw), tmp_path / "reference").fit()
    assert reference.step == 600
    config = _config_file(tmp_path, raw)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "agekit", "train", str(config), "--run-dir", str(run)]

    done, _ = signal_after_steps([*command, "--quiet"], [run / "metrics.jsonl"], signal.SIGTERM)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    reached = ckpt.latest(run / "checkpoints")
    assert reached is not None, done.stderr
    step = ckpt.load(reached)["step"]
    assert 15 <= step < 600 and reached.name == f"step_{step:08d}.pt"
    assert f"interrupted by SIGTERM at step {step}: checkpoint written to {reached}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {reached} (step {step})" in resumed.stderr
    _same_parameters(
        run / "checkpoints" / "step_00000600.pt",
        tmp_path / "reference" / "checkpoints" / "step_00000600.pt",
    )
    assert _logged_steps(run) == list(range(5, 601, 5))


def test_ctrl_c_checkpoints_and_exits_130(tmp_path: Path) -> None:
    raw = _raw(steps=600, checkpoint_every=200, image_every=1000)
    config = _config_file(tmp_path, raw)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "agekit", "train", str(config), "--run-dir", str(run)]
    done, _ = signal_after_steps(command, [run / "metrics.jsonl"], signal.SIGINT)
    assert done.returncode == 130, done.stderr
    reached = ckpt.latest(run / "checkpoints")
    assert reached is not None and ckpt.load(reached)["step"] >= 15
    assert "SIGINT received" in done.stderr and f"checkpoint written to {reached}" in done.stderr
    assert "Traceback" not in done.stderr


_TWICE = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import agekit.training.signals
    from agekit.config import parse_config
    from agekit.training.trainer import Trainer, TrainingHooks

    agekit.training.signals.REPEAT_WINDOW_S = 0.3  # the second signal below comes after the window

    class Twice(TrainingHooks):
        def on_log(self, trainer, entry):
            if entry["step"] == 25:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.5)  # the handler runs: training will stop after this step
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
                print("still running after the second signal")

    trainer = Trainer(parse_config(json.loads(sys.argv[1])), sys.argv[2], hooks=[Twice()])
    trainer.fit(handle_signals=True)
    """
)


def test_a_second_signal_exits_at_once_without_a_checkpoint(tmp_path: Path) -> None:
    script = tmp_path / "twice.py"
    script.write_text(_TWICE)
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(_raw()), str(run)], capture_output=True, text=True
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "still running" not in done.stdout
    assert ckpt.latest(run / "checkpoints") == run / "checkpoints" / "step_00000020.pt"
    assert "second signal (SIGTERM): stopped at once" in done.stderr


_REPEATED = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from agekit.config import parse_config
    from agekit.training.trainer import Trainer, TrainingHooks

    class Repeated(TrainingHooks):
        def on_log(self, trainer, entry):
            if entry["step"] == 25:
                # One preemption, delivered twice: by the scheduler and passed on by a study.
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.3)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.3)

    trainer = Trainer(parse_config(json.loads(sys.argv[1])), sys.argv[2], hooks=[Repeated()])
    result = trainer.fit(handle_signals=True)
    print(result.status, result.step, trainer.interrupted_by)
    """
)


def test_the_same_signal_repeated_within_two_seconds_is_one_request(tmp_path: Path) -> None:
    script = tmp_path / "repeated.py"
    script.write_text(_REPEATED)
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(_raw()), str(run)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["interrupted", "25", str(int(signal.SIGTERM))]
    assert ckpt.latest(run / "checkpoints") == run / "checkpoints" / "step_00000025.pt"
    assert "SIGTERM again within 2 s: taken as the same request" in done.stderr
    assert "second signal" not in done.stderr


def test_stop_signals_count_a_repeat_only_outside_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import agekit.training.signals

    # A background job starts with SIGINT ignored, which StopSignals rightly leaves alone; this
    # test is about counting, so SIGINT gets its default handler for the test's duration.
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # raise_signal delivers to this (the main) thread, so the handler has run when it
        # returns; os.kill may land on one of torch's threads and be handled later, under load
        with agekit.training.signals.StopSignals() as signals:
            for _ in range(3):
                signal.raise_signal(signal.SIGTERM)
            assert (signals.received, signals.count) == (signal.SIGTERM, 1)
            signal.raise_signal(signal.SIGINT)  # another signal is a second request at once
            assert signals.count == 2
            monkeypatch.setattr(agekit.training.signals, "REPEAT_WINDOW_S", 0.0)
            signal.raise_signal(signal.SIGTERM)  # the same signal, after the window
            assert signals.count == 3
    finally:
        signal.signal(signal.SIGINT, previous_sigint)


def test_under_torchrun_a_signal_to_one_rank_stops_every_rank_at_the_same_step(
    tmp_path: Path,
) -> None:
    config = _config_file(tmp_path, _raw(steps=600, checkpoint_every=200, image_every=1000))
    run = tmp_path / "run"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "agekit", "train", str(config), "--run-dir", str(run)]
    ranks = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        ranks.append(
            subprocess.Popen(
                [*command, "--quiet"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        metrics = run / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and ranks[0].poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                break
            time.sleep(0.005)
        assert ranks[0].poll() is None, ranks[0].communicate()[1]
        ranks[1].send_signal(signal.SIGTERM)  # only the rank that rank 0 waits for
        logs = [process.communicate(timeout=120)[1] for process in ranks]
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
    assert [process.returncode for process in ranks] == [143, 143], logs
    reached = ckpt.latest(run / "checkpoints")
    assert reached is not None and 15 <= ckpt.load(reached)["step"] < 600
    assert f"checkpoint written to {reached}" in logs[0]


def test_signal_handlers_are_restored_after_fit(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    trainer = Trainer(parse_config(_raw(steps=5)), tmp_path / "run")
    result = trainer.fit(handle_signals=True)
    assert result.status == "complete" and trainer.interrupted_by is None
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# 2. torn files ------------------------------------------------------------------------------------


def test_resume_drops_a_torn_last_metrics_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    _crash_after_checkpoint(run, _raw(), 20)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 25, "epoch": 0, "kl_re')  # the crash cut this record short
    with caplog.at_level(logging.WARNING, logger="agekit"):
        result = Trainer(parse_config(_raw()), run).fit(resume=True)
    assert result.step == 60
    assert _logged_steps(run) == list(range(5, 61, 5))
    assert "dropped 1 unreadable line" in caplog.text


def test_resume_falls_back_past_a_corrupt_newest_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    _crash_after_checkpoint(run, _raw(), 40)
    newest = run / "checkpoints" / "step_00000040.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, e.g. by a full disk
    with caplog.at_level(logging.WARNING, logger="agekit"):
        result = Trainer(parse_config(_raw()), run).fit(resume=True)
    assert result.step == 60
    assert "step_00000040.pt" in caplog.text and "step_00000020.pt" in caplog.text
    assert (run / "checkpoints" / "step_00000040.pt.unreadable").exists()
    assert _logged_steps(run) == list(range(5, 61, 5))
    reference = Trainer(parse_config(_raw()), tmp_path / "reference").fit()
    assert reference.step == 60
    _same_parameters(
        run / "checkpoints" / "step_00000060.pt",
        tmp_path / "reference" / "checkpoints" / "step_00000060.pt",
    )


def test_resume_with_no_loadable_checkpoint_is_one_line_naming_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    folder = run / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "step_00000020.pt").write_bytes(b"")
    (folder / "step_00000040.pt").write_bytes(b"not a checkpoint")
    config = _config_file(tmp_path, _raw())
    assert main(["train", str(config), "--run-dir", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "step_00000020.pt" in err and "step_00000040.pt" in err


def test_fit_removes_fragments_of_killed_checkpoint_writes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _crash_after_checkpoint(run, _raw(), 20)
    fragment = run / "checkpoints" / ".step_00000040.pt.k2x9_ab.tmp"
    fragment.write_bytes(b"half a checkpoint")
    Trainer(parse_config(_raw()), run).fit(resume=True)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_00000020.pt",
        "step_00000040.pt",
        "step_00000060.pt",
    ]


def test_a_run_folder_moved_with_mv_resumes_exactly_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Started as `agekit train tiny.toml --out first`, interrupted at step 20, moved with mv,
    # resumed as `agekit train tiny.toml --out moved --resume`: out_dir differs, the science not.
    raw = _raw()
    config = _config_file(tmp_path, raw)
    _crash_after_checkpoint(tmp_path / "first" / "tiny", {**raw, "out_dir": "first"}, 20)
    (tmp_path / "first").rename(tmp_path / "moved")
    moved = tmp_path / "moved" / "tiny"
    assert (
        main(["train", str(config), "--out", str(tmp_path / "moved"), "--resume", "--quiet"]) == 0
    )
    assert f"resuming from {moved / 'checkpoints' / 'step_00000020.pt'}" in capsys.readouterr().err
    Trainer(parse_config(raw), tmp_path / "reference").fit()
    _same_parameters(
        moved / "checkpoints" / "step_00000060.pt",
        tmp_path / "reference" / "checkpoints" / "step_00000060.pt",
    )
    assert _logged_steps(moved) == list(range(5, 61, 5))
    assert json.loads((moved / "config.json").read_text())["out_dir"] == str(tmp_path / "moved")


# 3. version, pipes, a fresh resume ----------------------------------------------------------------


def test_version_comes_from_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"agekit {metadata.version('agekit')}"


def test_list_into_a_pipe_never_shortens_a_name() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agekit", "list", "divergence"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "40"},
    )
    assert done.returncode == 0, done.stderr
    assert "kozachenko-leonenko" in done.stdout and "…" not in done.stdout
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows[0] == ["name", "kind", "distribution", "version", "status"]
    assert ["kozachenko-leonenko", "divergence", "agekit"] in [row[:3] for row in rows]


def test_list_plain_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "metric", "--plain"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert "reconstruction" in names and "latent-divergence" in names


def test_resume_without_a_checkpoint_says_it_starts_fresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path, _raw(steps=10))
    run = tmp_path / "run"
    run.mkdir()
    # An attempt killed before its first checkpoint left records behind.
    (run / "metrics.jsonl").write_text('{"step": 5}\n{"step": 10}\n{"step": 15}\n')
    assert main(["train", str(config), "--run-dir", str(run), "--resume", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"no checkpoint in {run / 'checkpoints'}; starting a fresh run at step 0" in err
    assert _logged_steps(run) == [5, 10]
    assert "kl_real" in (run / "metrics.jsonl").read_text().splitlines()[0]


# 4. agekit evaluate -------------------------------------------------------------------------------


def test_evaluate_scores_a_run_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    Trainer(parse_config(_raw(steps=20)), run).fit()
    assert main(["evaluate", str(run), "--metric", "reconstruction", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "recon_l1" in out and "reconstruction" in out
    saved = json.loads((run / "evaluate.json").read_text())
    assert saved["step"] == 20 and saved["run"] == str(run)
    assert saved["metrics"]["reconstruction"]["recon_l1"] > 0

    target = tmp_path / "scores" / "out.json"
    checkpoint = run / "checkpoints" / "step_00000020.pt"
    assert (
        main(["evaluate", str(checkpoint), "--metric", "reconstruction", "--out", str(target)]) == 0
    )
    assert json.loads(target.read_text())["checkpoint"] == str(checkpoint)


def test_evaluate_defaults_to_the_study_metrics_of_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    Trainer(parse_config(_raw(steps=20)), run).fit()
    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    saved = json.loads((run / "evaluate.json").read_text())
    assert list(saved["metrics"]) == ["reconstruction", "mode-coverage", "latent-divergence"]


def test_evaluate_scores_a_study_run_as_its_study_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agekit.studies.runner import run_study

    study = tmp_path / "study.toml"
    study.write_text(
        'name = "tiny"\nseeds = [0]\neval_seed = 7\n'
        "[base]\n"
        'data = { name = "ring8", batch_size = 64, options = { size = 1024, test_size = 256 } }\n'
        'prior = { name = "sphere", dim = 4 }\n'
        'backbone = { name = "mlp", options = { hidden = 16, depth = 2 } }\n'
        'train = { steps = 12, checkpoint_every = 6, image_every = 12, device = "cpu" }\n'
        "[[settings]]\n"
        'name = "ring8"\n'
        'metrics = ["reconstruction", { name = "mode-coverage", options = { n_samples = 300 } }]\n'
    )
    run_study(study, out=tmp_path / "out", progress=False)
    run = tmp_path / "out" / "runs" / "ring8__seed0"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    assert "seed 7" in capsys.readouterr().out
    # The same checkpoint, metrics, options and seed: the study's own scores, bit for bit.
    study_scores = json.loads((run / "eval.json").read_text())
    again = json.loads((run / "evaluate.json").read_text())
    assert again["seed"] == 7 and again["metrics"] == study_scores["metrics"]

    earlier = tmp_path / "earlier.json"
    checkpoint = run / "checkpoints" / "step_00000006.pt"
    assert main(["evaluate", str(checkpoint), "--out", str(earlier), "--device", "cpu"]) == 0
    scored = json.loads(earlier.read_text())
    assert scored["step"] == 6 and scored["seed"] == 7
    assert list(scored["metrics"]) == ["reconstruction", "mode-coverage"]
    assert scored["metrics"]["mode-coverage"]["protocol"]["n_samples"] == 300
    assert scored["metrics"]["reconstruction"] != study_scores["metrics"]["reconstruction"]

    # An explicit --seed or --metric still decides.
    assert main(["evaluate", str(run), "--seed", "3", "--metric", "reconstruction"]) == 0
    explicit = json.loads((run / "evaluate.json").read_text())
    assert explicit["seed"] == 3 and list(explicit["metrics"]) == ["reconstruction"]


@pytest.mark.parametrize(
    ("make", "args", "expected"),
    [
        ("nothing", [], "run: no such run folder"),
        ("empty", [], "run: no checkpoints"),
        ("run", ["--metric", "reconstructoin"], "Did you mean 'reconstruction'?"),
    ],
)
def test_evaluate_errors_are_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: str,
    args: list[str],
    expected: str,
) -> None:
    run = tmp_path / "run"
    if make == "empty":
        run.mkdir()
    elif make == "run":
        Trainer(parse_config(_raw(steps=5)), run).fit()
    capsys.readouterr()
    assert main(["evaluate", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err
    assert not (run / "evaluate.json").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "run", "--out", "s.png", "--n", "-3"],
        ["reconstruct", "run", "--out", "r.png", "--n", "0"],
        ["run", "studies/quickstart.toml", "--jobs", "0", "--list"],
    ],
)
def test_counts_must_be_positive(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


# 5. scatter plots of vector data get a legend -----------------------------------------------------


def test_scatter_legend_names_each_point_set() -> None:
    from agekit.evaluation.visual import scatter

    points = [torch.randn(200, 2, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    plain = scatter(points)
    legend = scatter(points, labels=("data", "samples"))
    assert legend.shape == plain.shape == (3, 384, 384)
    corner = (legend[:, :40, :120] != plain[:, :40, :120]).any(dim=0)
    assert int(corner.sum()) > 100  # a box, two swatches and two words
    assert torch.equal(legend[:, 100:, 150:], plain[:, 100:, 150:])  # points elsewhere untouched
    black = (legend[:, :40, :120] < 0.2).all(dim=0)
    assert int(black.sum()) > 30  # the label text and the box outline
    red = torch.tensor([0.85, 0.1, 0.1])[:, None, None]
    assert bool(((legend[:, :40, :30] - red).abs() < 0.01).all(dim=0).any())  # the swatch
    longer = scatter(points, labels=("data", "reconstructions"))
    assert not torch.equal(longer, legend)
    with pytest.raises(ValueError, match="2 labels for 3 point sets"):
        scatter([*points, points[0]], labels=("a", "b"))


def test_sample_and_reconstruct_plots_of_vector_data_carry_the_legend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    run = tmp_path / "run"
    Trainer(parse_config(_raw(steps=5)), run).fit()
    for command, label_pixels in (("sample", "samples"), ("reconstruct", "reconstructions")):
        out = tmp_path / f"{command}.png"
        assert main([command, str(run), "--out", str(out), "--device", "cpu"]) == 0, label_pixels
        with Image.open(out) as image:
            corner = torch.from_numpy(np.asarray(image.convert("RGB"))[:40, :120].copy())
        assert int((corner < 50).all(dim=-1).sum()) > 30  # dark legend text in the corner
