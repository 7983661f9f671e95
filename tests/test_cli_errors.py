"""Everyday failures on the command line: one readable line naming what and where, a non-zero exit
code and no traceback (``--debug`` or AGEKIT_DEBUG=1 shows it); ``--help`` imports nothing heavy."""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_trainer import TINY
from test_trainer import _to_toml as _toml

from agekit.cli import build_parser, main
from agekit.config import parse_config
from agekit.training.trainer import Trainer


def _raw(**data: Any) -> dict[str, Any]:
    raw = json.loads(json.dumps(TINY))
    raw["data"].update(data)
    raw["train"].update(steps=10, checkpoint_every=10, image_every=10)
    return raw


def _config(tmp_path: Path, raw: dict[str, Any] | None = None) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(_toml(raw if raw is not None else _raw()))
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    Trainer(parse_config(_raw()), run).fit()
    return run


# the cases: each builds its files and returns the command line ------------------------------------
Setup = Callable[[Path, pytest.MonkeyPatch, Path], list[str]]


def _unreadable_images(tmp: Path, mp: pytest.MonkeyPatch, run: Path) -> list[str]:
    folder = tmp / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    for i in range(0, 12, 2):  # every other file is damaged: the first batches meet one
        (folder / f"{i}.png").write_bytes(b"\x89PNG but not really")
    raw = {
        "name": "folder",
        "data": {
            "name": "image-folder",
            "batch_size": 2,
            "options": {"root": str(folder), "image_size": 32, "test_fraction": 0.2},
        },
        "prior": {"name": "sphere", "dim": 4},
        "backbone": {"name": "dcgan", "options": {"width": 4}},
        "train": {"steps": 5, "device": "cpu", "image_every": 100, "checkpoint_every": 100},
    }
    return ["train", _config(tmp, raw), "--run-dir", str(tmp / "out"), "--quiet"]


def _read_only_output(tmp: Path, mp: pytest.MonkeyPatch, run: Path) -> list[str]:
    # What mkdir raises in a folder without write permission (simulated: tests may run as root).
    locked = tmp / "locked"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self == locked or locked in self.parents:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        real_mkdir(self, *args, **kwargs)

    mp.setattr(Path, "mkdir", mkdir)
    return ["train", _config(tmp), "--out", str(locked), "--quiet"]


def _full_disk(tmp: Path, mp: pytest.MonkeyPatch, run: Path) -> list[str]:
    from agekit.runs import checkpoint

    def save_atomic(state: Any, path: Path) -> None:  # write() on a full disk names no file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    mp.setattr(checkpoint, "save_atomic", save_atomic)
    return ["train", _config(tmp), "--run-dir", str(tmp / "full"), "--quiet"]


def _read_only_image(tmp: Path, mp: pytest.MonkeyPatch, run: Path) -> list[str]:
    from agekit.evaluation import visual

    def save_image(tensor: Any, path: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    mp.setattr(visual, "save_image", save_image)
    return ["sample", str(run), "--out", str(tmp / "ro" / "s.png"), "--n", "4"]


def _file(name: str, content: bytes) -> Setup:
    def setup(tmp: Path, mp: pytest.MonkeyPatch, run: Path) -> list[str]:
        path = tmp / name
        path.write_bytes(content)
        return ["sample", str(path), "--out", str(tmp / "s.png")]

    return setup


def _study_folder(damaged: str) -> Setup:
    """``agekit report`` on a study folder whose ``damaged`` file (relative to it) is torn."""

    def setup(tmp: Path, mp: pytest.MonkeyPatch, run: Path) -> list[str]:
        folder = tmp / "study"
        (folder / "runs" / "a__seed0").mkdir(parents=True)
        (folder / damaged).write_text('{"run_id": "a__seed0", "metr')
        return ["report", str(folder)]

    return setup


class _NotAllowed:
    pass


@dataclass
class Case:
    id: str
    setup: Setup
    expected: str  # a phrase the error must contain ({tmp} is the test's folder)


CASES = [
    Case(
        "unreadable-image-mid-training",
        _unreadable_images,
        ".png: cannot read this file as an image",
    ),
    Case(
        "batch-larger-than-data",
        lambda tmp, mp, run: [
            "train",
            _config(tmp, _raw(batch_size=5000)),
            "--run-dir",
            str(tmp / "r"),
        ],
        "data.batch_size = 5000 exceeds the training split's 1024 samples",
    ),
    Case(
        "folder-as-config",
        lambda tmp, mp, run: ["train", str(tmp)],
        "{tmp}: is a folder; expected a configuration file",
    ),
    Case(
        "section-set-to-a-value",
        lambda tmp, mp, run: ["train", _config(tmp), "--set", "train=5"],
        "--set train=5: train is a section",
    ),
    Case("read-only-output", _read_only_output, "{tmp}/locked"),
    Case("full-disk", _full_disk, "{tmp}/full: No space left on device"),
    Case("read-only-image-output", _read_only_image, "{tmp}/ro/s.png: Permission denied"),
    Case(
        "out-under-a-file",
        lambda tmp, mp, run: [
            "train",
            _config(tmp),
            "--out",
            str(tmp / "tiny.toml" / "runs"),
        ],
        "{tmp}/tiny.toml is a file, not a folder",
    ),
    Case(
        "image-out-under-a-file",
        lambda tmp, mp, run: ["sample", str(run), "--out", str(run / "config.json" / "s.png")],
        "config.json is a file, not a folder",
    ),
    Case(
        "negative-sample-count",
        lambda tmp, mp, run: ["sample", str(run), "--out", "s.png", "--n", "-3"],
        "argument --n: expected a positive integer, got -3",
    ),
    Case(
        "zero-reconstructions",
        lambda tmp, mp, run: ["reconstruct", str(run), "--out", "r.png", "--n", "0"],
        "argument --n: expected a positive integer, got 0",
    ),
    Case(
        "out-without-image-extension",
        lambda tmp, mp, run: ["sample", str(run), "--out", str(tmp / "samples")],
        "expected an image file name ending in .png, .jpg",
    ),
    Case(
        "garbage-checkpoint",
        _file("garbage.pt", bytes(range(256)) * 8),
        "garbage.pt: not a readable agekit checkpoint",
    ),
    Case(
        "pickled-object-checkpoint",
        _file("object.pt", pickle.dumps({"format": 1, "x": _NotAllowed()})),
        "object.pt: not a readable agekit checkpoint",
    ),
    Case(
        "corrupt-eval-json-in-report",
        _study_folder("runs/a__seed0/eval.json"),
        "{tmp}/study/runs/a__seed0/eval.json: not valid JSON",
    ),
    Case(
        "corrupt-study-json-in-report",
        _study_folder("study.json"),
        "{tmp}/study/study.json: not valid JSON",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_everyday_failures_are_one_line_without_traceback(
    case: Case,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    trained: Path,
) -> None:
    monkeypatch.delenv("AGEKIT_DEBUG", raising=False)
    argv = case.setup(tmp_path, monkeypatch, trained)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code not in (0, None), err
    assert "Traceback" not in err
    assert "weights_only=False" not in err
    assert case.expected.format(tmp=tmp_path) in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err


def test_debug_flag_and_variable_show_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AGEKIT_DEBUG", raising=False)
    for argv in (["--debug", "train", str(tmp_path)], ["train", str(tmp_path), "--debug"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "ConfigError" in err
        assert err.rstrip().splitlines()[-1].startswith("error: ")
    monkeypatch.setenv("AGEKIT_DEBUG", "1")
    assert main(["train", str(tmp_path)]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_a_real_process_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "AGEKIT_DEBUG"}
    done = subprocess.run(
        [sys.executable, "-m", "agekit", "train", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "40"},
    )
    assert done.returncode == 2
    assert done.stderr == f"error: {tmp_path}: is a folder; expected a configuration file\n"


# start-up and help --------------------------------------------------------------------------------
_HELP_IMPORTS = textwrap.dedent(
    """
    import contextlib, io, json, sys
    import agekit.cli

    parser = agekit.cli.build_parser()
    commands = list(parser._subparsers._group_actions[0].choices)
    for argv in [["--help"], *[[command, "--help"] for command in commands]]:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                agekit.cli.main(argv)
            except SystemExit as exc:
                assert exc.code == 0, (argv, exc.code)
    heavy = ("torch", "torchvision", "numpy", "scipy", "sklearn", "matplotlib", "PIL")
    print(json.dumps([name for name in sys.modules if name.split(".")[0] in heavy]))
    """
)


def test_help_imports_nothing_heavy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _HELP_IMPORTS], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == []


_COMMANDS = list(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


@pytest.mark.parametrize("command", _COMMANDS)
def test_every_argument_has_help(command: str) -> None:
    parser = build_parser()
    command_parser = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    assert [action.dest for action in command_parser._actions if not action.help] == []
    assert all(action.help for action in parser._actions)


def test_shell_completion_offers_commands_and_component_names(tmp_path: Path) -> None:
    out = tmp_path / "completions"
    for line, expected in (
        ("agekit ", {"train", "sample", "evaluate"}),
        ("agekit list diverg", {"divergence", "divergences"}),
        ("agekit evaluate run --metric reconstr", {"reconstruction"}),
    ):
        env = {
            **os.environ,
            "_ARGCOMPLETE": "1",
            "_ARGCOMPLETE_IFS": "\n",
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        }
        done = subprocess.run([sys.executable, "-m", "agekit"], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr
        assert expected <= set(out.read_text().split()), line
