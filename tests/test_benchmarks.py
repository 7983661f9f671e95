"""The GPU benchmark script cannot run here without a GPU; its code paths run on the CPU."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

GPU_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_gpu_benchmark_script_runs_end_to_end_on_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Keeps benchmarks/gpu.py from rotting where no GPU is: every table row it would print on a
    # GPU (fp32 only: the trainer refuses bf16 on a CPU) is produced and written to the JSON.
    out = tmp_path / "gpu.json"
    argv = ["gpu.py", "--device", "cpu", "--quick", "--steps", "1", "--width", "8"]
    monkeypatch.setattr(sys, "argv", [*argv, "--repeats", "1", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(GPU_SCRIPT), run_name="__main__")
    assert exit_info.value.code == 0
    results = json.loads(out.read_text())
    assert results["device"].startswith("CPU")
    assert [(r["image_size"], r["batch"], r["precision"]) for r in results["train"]] == [
        (32, 64, "fp32"),
        (64, 64, "fp32"),
    ]
    assert all(r["images_per_s"] > 0 for r in results["train"])
    cells = {(r["batch"], r["dim"]) for r in results["divergences"]}
    assert cells == {(b, m) for b in (64, 256, 1024, 4096, 8192) for m in (16, 64, 128)}
    assert all(
        r["gaussian_kl_ms"] > 0 and r["kozachenko_leonenko_ms"] > 0 for r in results["divergences"]
    )
    assert "wrote" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_gpu_benchmark_refuses_clearly_without_cuda(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["gpu.py"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(GPU_SCRIPT), run_name="__main__")
    assert exit_info.value.code == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_knn_gradient_benchmark_quick_mode_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "knn_gradient.py"
    monkeypatch.setattr(sys, "argv", ["knn_gradient.py", "--quick"])
    previous = torch.get_num_threads()
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        torch.set_num_threads(previous)
    out = capsys.readouterr().out
    assert "4 near" in out and "cos(knn, gauss)" in out
