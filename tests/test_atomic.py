"""The one atomic writer behind checkpoints, scores and cached classifiers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

import pytest

from agekit.util.atomic import write_atomic, write_json_atomic


def test_write_atomic_writes_the_bytes_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out.bin"
    write_atomic(target, lambda handle: handle.write(b"payload"))
    assert target.read_bytes() == b"payload"
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_a_failed_write_removes_its_temporary_file_and_keeps_the_original(tmp_path: Path) -> None:
    target = tmp_path / "scores.json"
    target.write_text("original")

    def half_then_fail(handle: IO[bytes]) -> None:
        handle.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "original"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_an_interrupted_write_cleans_up_too(tmp_path: Path) -> None:
    target = tmp_path / "step_00000001.pt"

    def interrupted(handle: IO[bytes]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, interrupted)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_keeps_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "eval.json"
    write_json_atomic({"a": 1}, target)

    def no_replace(src: str, dst: str) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError, match="read-only"):
        write_json_atomic({"a": 2}, target)
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_json_output_and_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_json_atomic({"b": [1, 2]}, tmp_path / "out.json")
    finally:
        os.umask(old)
    assert (tmp_path / "out.json").read_text() == '{\n  "b": [\n    1,\n    2\n  ]\n}\n'
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o640
