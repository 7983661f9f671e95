"""Checkpoint files: atomic writes, one-line errors, fallback past damaged ones, fragments."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from agekit.runs import checkpoint as ckpt
from agekit.util.atomic import write_json_atomic


def _write(folder: Path, step: int) -> Path:
    path = folder / f"step_{step:08d}.pt"
    ckpt.save_atomic({"format": 1, "step": step, "weights": torch.arange(256.0)}, path)
    return path


def test_save_atomic_leaves_only_the_checkpoint(tmp_path: Path) -> None:
    path = _write(tmp_path, 20)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert ckpt.load(path)["step"] == 20


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[: len(data) // 2], "damaged (cut short or overwritten)"),
        (lambda data: b"", "the file is empty"),
        (lambda data: b"\x80\x02garbage" * 8, "or is not an agekit checkpoint"),
    ],
)
def test_a_damaged_checkpoint_is_a_one_line_error_naming_the_file(
    tmp_path: Path, damage: Callable[[bytes], bytes], reason: str
) -> None:
    path = _write(tmp_path, 20)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ckpt.CheckpointError) as error:
        ckpt.load(path)
    message = str(error.value)
    assert message.startswith(f"{path}: not a readable agekit checkpoint")
    assert reason in message and "\n" not in message


def test_load_newest_falls_back_past_damaged_checkpoints(tmp_path: Path) -> None:
    assert ckpt.load_newest(tmp_path) is None
    _write(tmp_path, 20)
    newest = _write(tmp_path, 40)
    newest.write_bytes(newest.read_bytes()[:100])
    found = ckpt.load_newest(tmp_path)
    assert found is not None
    path, state, failed = found
    assert path.name == "step_00000020.pt" and state["step"] == 20
    assert [p for p, _ in failed] == [newest] and str(newest) in failed[0][1]

    aside = ckpt.set_aside(newest)
    assert aside.name == "step_00000040.pt.unreadable"
    assert ckpt.checkpoints(tmp_path) == [tmp_path / "step_00000020.pt"]


def test_load_newest_names_every_file_when_none_loads(tmp_path: Path) -> None:
    for step in (20, 40):
        _write(tmp_path, step).write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match=r"step_00000040\.pt, step_00000020\.pt"):
        ckpt.load_newest(tmp_path)


def test_remove_fragments_deletes_only_interrupted_writes(tmp_path: Path) -> None:
    kept = _write(tmp_path, 20)
    fragment = tmp_path / ".step_00000040.pt.abc_123.tmp"
    fragment.write_bytes(b"half")
    other = tmp_path / ".notes.tmp"
    other.write_text("not ours")
    assert ckpt.remove_fragments(tmp_path) == [fragment]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.tmp", kept.name]
    assert ckpt.remove_fragments(tmp_path / "missing") == []


def test_checkpoints_and_scores_get_the_umask_mode_not_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        ckpt.save_atomic({"step": 1}, tmp_path / "step_00000001.pt")
        write_json_atomic({"a": 1}, tmp_path / "eval.json")
    finally:
        os.umask(old)
    # Group- and world-readable as any file the user creates: shared storage can read a run.
    assert (tmp_path / "step_00000001.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "eval.json").stat().st_mode & 0o777 == 0o644
