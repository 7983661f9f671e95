"""The trainer: budgets, outputs, exact resume after kill -9, guards, devices."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from agekit.config import parse_config
from agekit.model import DeviceUnavailable, resolve_device
from agekit.runs import checkpoint as ckpt
from agekit.training.loop import Cadence, StopVotes, Throughput
from agekit.training.signals import StopSignals
from agekit.training.trainer import Trainer, TrainingDiverged, TrainingHooks, TrainResult

TINY: dict[str, Any] = {
    "name": "tiny",
    "data": {"name": "ring8", "batch_size": 32, "options": {"size": 1024, "test_size": 128}},
    "prior": {"name": "sphere", "dim": 4},
    "backbone": {"name": "mlp", "options": {"hidden": 16, "depth": 2}},
    "train": {
        "steps": 60,
        "checkpoint_every": 20,
        "image_every": 30,
        "log_every": 5,
        "device": "cpu",
        "grid_size": 16,
    },
}


def _config(**train: Any) -> Any:
    raw = json.loads(json.dumps(TINY))
    raw["train"].update(train)
    return parse_config(raw)


def test_run_writes_checkpoints_log_images_and_config(tmp_path: Path) -> None:
    result = Trainer(_config(), tmp_path / "run").fit()
    assert result.status == "complete" and result.step == 60
    names = [p.name for p in ckpt.checkpoints(tmp_path / "run" / "checkpoints")]
    assert names == ["step_00000020.pt", "step_00000040.pt", "step_00000060.pt"]
    records = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records] == list(range(5, 61, 5))
    assert {"kl_real", "kl_fake", "data_rec", "latent_rec", "images_per_s"} <= set(records[0])
    assert (tmp_path / "run" / "images" / "samples_00000030.png").exists()
    assert (tmp_path / "run" / "images" / "reconstructions_00000060.png").exists()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["steps"] == 60


class _Recorder(TrainingHooks):
    """Every event a run passes to its hooks, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_start(self, trainer: Trainer, step: int) -> None:
        self.events.append(("start", step))

    def on_log(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        self.events.append(("log", entry["step"]))

    def on_checkpoint(self, trainer: Trainer, path: Path, step: int) -> None:
        assert path == ckpt.latest(trainer.checkpoint_dir)
        self.events.append(("checkpoint", step, path.name))

    def on_end(self, trainer: Trainer, result: TrainResult) -> None:
        self.events.append(("end", result.step, result.status))


def test_hooks_see_the_start_each_log_and_checkpoint_and_the_end(tmp_path: Path) -> None:
    recorder = _Recorder()
    config = _config(steps=25, log_every=10, checkpoint_every=20, image_every=100)
    # A hook that overrides nothing is allowed: every default does nothing.
    Trainer(config, tmp_path / "run", hooks=[TrainingHooks(), recorder]).fit()
    assert recorder.events == [
        ("start", 0),
        ("log", 10),
        ("log", 20),
        ("checkpoint", 20, "step_00000020.pt"),
        ("log", 25),  # the last step is logged whatever log_every says
        ("checkpoint", 25, "step_00000025.pt"),  # the final checkpoint
        ("end", 25, "complete"),
    ]
    recorder.events.clear()
    Trainer(_config(steps=30, log_every=10), tmp_path / "run", hooks=[recorder]).fit(resume=True)
    assert recorder.events[0] == ("start", 25) and recorder.events[-1] == ("end", 30, "complete")


def test_the_loops_cadences_and_throughput() -> None:
    due = Cadence(log_every=5, image_every=30, checkpoint_every=20, total=47)
    assert [s for s in range(1, 48) if due.log(s)] == [5, 10, 15, 20, 25, 30, 35, 40, 45, 47]
    assert [s for s in range(1, 48) if due.images(s)] == [30]
    assert [s for s in range(1, 48) if due.checkpoint(s)] == [20, 40]
    throughput = Throughput(batch_size=64)
    for _ in range(3):
        throughput.count()
    assert throughput.rate() > 0
    assert throughput.rate() == 0.0  # a new window, with no steps in it yet


def test_stop_votes_a_signal_first_then_the_wall_clock() -> None:
    signals = StopSignals()
    votes = StopVotes(signals, max_minutes=1.0, device=torch.device("cpu"))
    assert votes.poll(elapsed=59.0) is None
    assert votes.poll(elapsed=60.0) == "time-limit"
    signals.received = int(signal.SIGTERM)
    assert votes.poll(elapsed=60.0) == "interrupted" and votes.signal == signal.SIGTERM
    assert StopVotes(None, None, torch.device("cpu")).poll(elapsed=1e9) is None


def test_keep_last_n_checkpoints(tmp_path: Path) -> None:
    Trainer(_config(keep_checkpoints=1), tmp_path / "run").fit()
    assert [p.name for p in ckpt.checkpoints(tmp_path / "run" / "checkpoints")] == [
        "step_00000060.pt"
    ]


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    Trainer(_config(), tmp_path / "run").fit()
    path = ckpt.latest(tmp_path / "run" / "checkpoints")
    assert path is not None
    state = torch.load(path, weights_only=True)  # raises if anything would need code execution
    assert state["step"] == 60 and state["format"] == 1


_KILLER = textwrap.dedent(
    """
    import json, os, signal, sys
    from agekit.config import parse_config
    from agekit.training.trainer import Trainer, TrainingHooks

    config = parse_config(json.loads(sys.argv[1]))
    kill_at = int(sys.argv[3])

    class Killer(TrainingHooks):
        def on_log(self, trainer, entry):
            # SIGKILL between two checkpoints: nothing gets to clean up, as with kill -9.
            if entry["step"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    Trainer(config, sys.argv[2], hooks=[Killer()]).fit(resume=len(sys.argv) > 4)
    """
)


def test_resume_after_kill_reproduces_the_uninterrupted_run_exactly(tmp_path: Path) -> None:
    raw = json.loads(json.dumps(TINY))
    reference = Trainer(parse_config(raw), tmp_path / "reference").fit()
    assert reference.step == 60

    script = tmp_path / "killer.py"
    script.write_text(_KILLER)
    run = tmp_path / "interrupted"
    killed = subprocess.run([sys.executable, str(script), json.dumps(raw), str(run), "45"])
    assert killed.returncode == -signal.SIGKILL
    assert ckpt.latest(run / "checkpoints") == run / "checkpoints" / "step_00000040.pt"

    resumed = subprocess.run(
        [sys.executable, "-m", "agekit", "train", "-", "--resume"], capture_output=True
    )
    del resumed  # the CLI path is exercised below with a real file
    config_file = tmp_path / "tiny.toml"
    config_file.write_text(_to_toml(raw))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agekit",
            "train",
            str(config_file),
            "--run-dir",
            str(run),
            "--resume",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr

    final = ckpt.load(run / "checkpoints" / "step_00000060.pt")
    expected = ckpt.load(tmp_path / "reference" / "checkpoints" / "step_00000060.pt")
    for network in ("encoder", "generator"):
        for key, value in expected[network].items():
            assert torch.equal(final[network][key], value), f"{network}.{key} differs"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 61, 5))  # the steps after the checkpoint were not logged twice


def _to_toml(raw: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return str(v)

    lines = [f"name = {value(raw['name'])}"]
    for section, body in raw.items():
        if isinstance(body, dict):
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {value(v)}" for k, v in body.items())
    return "\n".join(lines) + "\n"


def test_existing_checkpoints_are_never_overwritten_without_resume(tmp_path: Path) -> None:
    Trainer(_config(steps=20), tmp_path / "run").fit()
    before = (tmp_path / "run" / "checkpoints" / "step_00000020.pt").read_bytes()
    with pytest.raises(ckpt.CheckpointError, match="--resume"):
        Trainer(_config(steps=20), tmp_path / "run").fit()
    assert (tmp_path / "run" / "checkpoints" / "step_00000020.pt").read_bytes() == before


def test_resume_with_a_different_science_is_refused_naming_each_key(tmp_path: Path) -> None:
    Trainer(_config(steps=20), tmp_path / "run").fit()
    changed = _config(steps=20)
    changed.game.latent_weight = 1.0
    changed.optim.lr = 1e-3
    with pytest.raises(ckpt.CheckpointError, match="different configuration") as refused:
        Trainer(changed, tmp_path / "run").fit(resume=True)
    assert "game.latent_weight: 1000.0 -> 1.0" in str(refused.value)
    assert "optim.lr: 0.0002 -> 0.001" in str(refused.value)


def test_resume_ignores_location_and_cadence(tmp_path: Path) -> None:
    Trainer(_config(steps=20), tmp_path / "run").fit()
    moved = _config(steps=40, log_every=10, checkpoint_every=10)
    moved.out_dir, moved.name = str(tmp_path / "elsewhere"), "renamed"
    assert Trainer(moved, tmp_path / "run").fit(resume=True).step == 40


def test_resume_may_raise_the_budget_and_continues_exactly(tmp_path: Path) -> None:
    Trainer(_config(steps=20), tmp_path / "run").fit()
    assert Trainer(_config(steps=60), tmp_path / "run").fit(resume=True).step == 60
    Trainer(_config(steps=60), tmp_path / "reference").fit()
    final = ckpt.load(tmp_path / "run" / "checkpoints" / "step_00000060.pt")
    expected = ckpt.load(tmp_path / "reference" / "checkpoints" / "step_00000060.pt")
    for network in ("encoder", "generator"):
        for key, value in expected[network].items():
            assert torch.equal(final[network][key], value), f"{network}.{key} differs"


def test_resume_below_the_checkpoint_step_says_a_run_cannot_be_shortened(tmp_path: Path) -> None:
    Trainer(_config(steps=40), tmp_path / "run").fit()
    with pytest.raises(ckpt.CheckpointError, match="checkpoint is at step 40, past this budget"):
        Trainer(_config(steps=20), tmp_path / "run").fit(resume=True)
    assert ckpt.latest(tmp_path / "run" / "checkpoints") == (
        tmp_path / "run" / "checkpoints" / "step_00000040.pt"
    )


def test_nan_stops_training_naming_step_and_term(tmp_path: Path) -> None:
    trainer = Trainer(_config(steps=40), tmp_path / "run")
    original = trainer.model.game.divergence.compute

    def poisoned(codes: torch.Tensor, prior: Any) -> torch.Tensor:
        value = original(codes, prior)
        return value * float("nan") if trainer.step >= 25 else value

    trainer.model.game.divergence.compute = poisoned  # type: ignore[method-assign]
    with pytest.raises(
        TrainingDiverged, match=r"step 26: non-finite value in kl_real, kl_fake_enc"
    ):
        trainer.fit()
    # The checkpoint of step 20 is kept and loads.
    assert ckpt.load(tmp_path / "run" / "checkpoints" / "step_00000020.pt")["step"] == 20


def test_nan_weights_are_reported_by_the_guard_not_the_divergence(tmp_path: Path) -> None:
    # NaN weights give NaN codes, which the divergence's input check rejects (codes off the
    # sphere) before the terms reach the guard; the user must still read the guard's message.
    trainer = Trainer(_config(steps=40), tmp_path / "run")
    original = trainer.train_step

    def poisoning_step() -> dict[str, float]:
        if trainer.step == 25:
            with torch.no_grad():
                next(trainer.encoder.parameters()).fill_(float("nan"))
        return original()

    trainer.train_step = poisoning_step  # type: ignore[method-assign]
    with pytest.raises(
        TrainingDiverged,
        match=r"step 26: non-finite value in the codes entering kl_fake_enc, kl_real "
        r"\(non-finite weights: encoder\.",
    ) as exc:
        trainer.fit()
    assert "the last good checkpoint is" in str(exc.value) and "step_00000020.pt" in str(exc.value)


def test_an_exploding_learning_rate_is_reported_by_the_guard(tmp_path: Path) -> None:
    # Finite but huge weights overflow the activations: the codes are NaN or inf before any term
    # is computed, and the divergence's input check must not be what the user reads.
    config = _config(steps=40)
    config.optim.lr = 1e30
    with pytest.raises(TrainingDiverged, match=r"^step 1: non-finite value in the codes entering "):
        Trainer(config, tmp_path / "run").fit()


def test_epoch_budget_and_lr_drop(tmp_path: Path) -> None:
    config = _config(steps=None, epochs=3)
    config.optim.lr_drop_every = 1
    trainer = Trainer(config, tmp_path / "run")
    result = trainer.fit()
    assert result.step == 3 * (1024 // 32)
    assert trainer.opt_encoder.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.5**2)


@pytest.mark.parametrize(
    ("timing", "rates"),
    [
        # "after": the first drop comes once lr_drop_every = 2 epochs are done.
        ("after", [2e-4, 2e-4, 1e-4, 1e-4, 5e-5]),
        # The reference halves at the start of every epoch with epoch % n == n - 1: epoch 1
        # already runs at half the rate.
        ("reference", [2e-4, 1e-4, 1e-4, 5e-5, 5e-5]),
    ],
)
def test_every_update_runs_at_the_rate_of_its_batchs_epoch(
    tmp_path: Path, timing: str, rates: list[float]
) -> None:
    # fit() itself runs the steps, and each optimiser step records the rate it is about to apply,
    # so the rate is observed in the loop's own order, the first batch of each epoch included.
    raw = json.loads(json.dumps(TINY))
    raw["data"]["options"]["size"] = 128  # 4 batches of 32 per epoch
    raw["train"].update(steps=None, epochs=5)
    raw["optim"] = {"lr_drop_every": 2, "lr_drop_timing": timing}
    trainer = Trainer(parse_config(raw), tmp_path / "run")
    per_epoch = 128 // 32
    used: list[tuple[int, str, float]] = []  # (iteration counted from 0, optimiser, rate)

    def recorder(role: str) -> Any:
        def record(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            used.append((trainer.step, role, optimizer.param_groups[0]["lr"]))

        return record

    trainer.opt_encoder.register_step_pre_hook(recorder("encoder"))
    trainer.opt_generator.register_step_pre_hook(recorder("generator"))
    assert trainer.fit().step == 5 * per_epoch
    assert len(used) == 5 * per_epoch * (1 + trainer.config.game.gen_steps_per_encoder_step)
    for iteration, role, lr in used:
        epoch = iteration // per_epoch
        assert lr == pytest.approx(rates[epoch]), (
            f"iteration {iteration} (epoch {epoch}), {role} update: rate {lr}, not {rates[epoch]}"
        )


@pytest.mark.parametrize(("steps", "poisoned"), [(60, 40), (50, 50)], ids=["periodic", "final"])
def test_a_nan_from_a_steps_last_update_never_reaches_a_checkpoint(
    tmp_path: Path, steps: int, poisoned: int
) -> None:
    # The last generator update of the step whose checkpoint is due writes NaN: no term is
    # computed from those weights before the checkpoint (periodic, or the one fit() ends with).
    trainer = Trainer(_config(steps=steps), tmp_path / "run")
    gen_steps = trainer.config.game.gen_steps_per_encoder_step
    updates = 0

    def poison(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        nonlocal updates
        if trainer.step + 1 == poisoned:  # trainer.step counts the steps already finished
            updates += 1
            if updates == gen_steps:
                with torch.no_grad():
                    next(trainer.generator.parameters()).fill_(float("nan"))

    trainer.opt_generator.register_step_post_hook(poison)
    with pytest.raises(
        TrainingDiverged,
        match=rf"^step {poisoned}: non-finite value in the weights due in this step's checkpoint, "
        r"which was not written \(non-finite weights: generator\.",
    ) as exc:
        trainer.fit()
    assert updates == gen_steps
    folder = tmp_path / "run" / "checkpoints"
    written = ckpt.checkpoints(folder)
    assert [p.name for p in written] == [f"step_{s:08d}.pt" for s in range(20, poisoned, 20)]
    named = str(exc.value).rsplit("the last good checkpoint is ", 1)[1]
    assert Path(named) == written[-1]
    for path in written:
        state = ckpt.load(path)
        for network in ("encoder", "generator"):
            for key, value in state[network].items():
                assert torch.isfinite(value).all(), f"{path.name}: {network}.{key} is not finite"


def test_wall_clock_budget(tmp_path: Path) -> None:
    config = _config(steps=None, max_minutes=0.001)
    result = Trainer(config, tmp_path / "run").fit()
    assert result.status == "time-limit" and result.step >= 1


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailable, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(DeviceUnavailable, match="CUDA is not available"):
            resolve_device("cuda:1")
    with pytest.raises(DeviceUnavailable, match="not a device"):
        resolve_device("tpu-ish")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_bf16_on_cpu_is_an_error_not_a_silent_change(tmp_path: Path) -> None:
    with pytest.raises(DeviceUnavailable, match="bf16"):
        Trainer(_config(precision="bf16"), tmp_path / "run")


def test_sample_reconstruct_commands(tmp_path: Path) -> None:
    Trainer(_config(steps=20), tmp_path / "run").fit()
    for command in ("sample", "reconstruct"):
        out = tmp_path / f"{command}.png"
        done = subprocess.run(
            [sys.executable, "-m", "agekit", command, str(tmp_path / "run"), "--out", str(out)],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert done.returncode == 0, done.stderr
        assert out.stat().st_size > 0


def test_interpolate_command_and_great_circles(tmp_path: Path) -> None:
    from agekit.evaluation.latent_paths import interpolate
    from agekit.priors import SpherePrior

    prior = SpherePrior(8)
    a, b = prior.sample(2, torch.Generator().manual_seed(0), dtype=torch.float64)
    path = interpolate(a, b, 7, prior)
    torch.testing.assert_close(path.norm(dim=1), torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    # Equal angles between successive points: a great circle at constant speed.
    angles = torch.arccos((path[1:] * path[:-1]).sum(1).clamp(-1, 1))
    torch.testing.assert_close(angles, angles[0].expand(6))

    raw = json.loads(json.dumps(TINY))
    raw["data"] = {"name": "digits", "batch_size": 32}
    raw["backbone"] = {"name": "dcgan", "options": {"width": 8}}
    raw["train"].update(steps=2, image_every=2)
    Trainer(parse_config(raw), tmp_path / "run").fit()
    out = tmp_path / "interp.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agekit",
            "interpolate",
            str(tmp_path / "run"),
            "--out",
            str(out),
            "--rows",
            "2",
            "--steps",
            "5",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0
