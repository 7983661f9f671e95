"""GPU throughput, in one command: training images/second and divergence timings on CUDA.

    python benchmarks/gpu.py [--out gpu_bench.json] [--steps 30] [--quick]

- training: ``Trainer.train_step`` (one encoder update and two generator updates) for the dcgan
  pair at 32 px and 64 px (mnist5k resized; embedded, nothing downloaded), batch 64 and 256, in
  fp32 and bf16 autocast, without and with ``torch.compile``; images/s counts the batch's real
  images per iteration. Reference: fp32, no compile, same size and batch (ratio column).
- divergences: forward + backward of ``gaussian-kl`` and ``kozachenko-leonenko`` (sphere prior,
  k = 3) for B in {64, 256, 1024, 4096, 8192}, M in {16, 64, 128}, float32.

Prints a table and writes every number, with the device and versions, to the JSON file. Not run
by ``nox -s bench`` (it needs a GPU); it exits with a message when CUDA is not available.
``--device cpu`` runs the same code paths on the CPU (fp32 only: the trainer refuses bf16 there) so
that a test can keep the script working where no GPU is; its numbers are not GPU numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

SIZES = (32, 64)
BATCHES = (64, 256)
DIV_BATCHES = (64, 256, 1024, 4096, 8192)
DIV_DIMS = (16, 64, 128)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_rate(
    size: int, batch: int, precision: str, compile_: bool, steps: int, width: int, device: str
) -> float:
    from agekit.config import parse_config
    from agekit.training.trainer import Trainer

    raw = {
        "name": "gpu-bench",
        "data": {"name": "mnist5k", "batch_size": batch, "options": {"image_size": size}},
        "prior": {"name": "sphere", "dim": 64},
        "backbone": {"name": "dcgan", "options": {"width": width}},
        "train": {"steps": steps, "device": device, "precision": precision, "compile": compile_},
    }
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(parse_config(raw), folder)
        # Warm-up: compilation (several graphs: encoder and generator, both roles) and autotuning.
        for _ in range(3 if compile_ else 1):
            trainer.train_step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        _sync(device)
        return steps * batch / (time.perf_counter() - start)


def divergence_ms(name: str, batch: int, dim: int, repeats: int, device: str) -> float:
    import agekit

    prior = agekit.create("prior", "sphere", dim=dim)
    divergence = agekit.create("divergence", name)
    codes = prior.sample(batch, torch.Generator().manual_seed(batch + dim)).to(device)

    def run() -> None:
        leaf = codes.detach().requires_grad_(True)
        divergence(leaf, prior).backward()

    run()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    _sync(device)
    return (time.perf_counter() - start) / repeats * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_bench.json"), help="JSON results")
    parser.add_argument("--steps", type=int, default=30, help="timed iterations per setting")
    parser.add_argument("--width", type=int, default=64, help="dcgan width (the paper's: 64)")
    parser.add_argument("--repeats", type=int, default=20, help="divergence calls timed")
    parser.add_argument("--quick", action="store_true", help="batch 64 only, no compile")
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu: exercise the script without a GPU (fp32 only; not GPU numbers)",
    )
    args = parser.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print(
            "benchmarks/gpu.py needs a CUDA device and torch.cuda.is_available() is False on this "
            "machine; nothing was measured (the CPU benchmarks are the other benchmarks/*.py).",
            file=sys.stderr,
        )
        return 2

    device_name = (
        torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.machine()})"
    )
    print(f"{device_name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    results: dict[str, Any] = {
        "device": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "width": args.width,
        "train": [],
        "divergences": [],
    }
    batches = (64,) if args.quick else BATCHES
    compiles = (False,) if args.quick else (False, True)
    header = f"{'px':>3} {'B':>4} {'precision':>9} {'compile':>7} | {'images/s':>9} {'ratio':>6}"
    print("\ntraining iterations (ratio: against fp32, no compile, same px and B)")
    print(header)
    print("-" * len(header))
    for size in SIZES:
        for batch in batches:
            reference: float | None = None
            for precision in ("fp32", "bf16") if device == "cuda" else ("fp32",):
                for compile_ in compiles:
                    rate = train_rate(
                        size, batch, precision, compile_, args.steps, args.width, device
                    )
                    reference = reference or rate
                    results["train"].append(
                        {
                            "image_size": size,
                            "batch": batch,
                            "precision": precision,
                            "compile": compile_,
                            "images_per_s": rate,
                        }
                    )
                    print(
                        f"{size:>3} {batch:>4} {precision:>9} {compile_!s:>7} | "
                        f"{rate:>9.0f} {rate / reference:>6.2f}"
                    )

    print("\ndivergences, forward + backward, float32, ms (ratio: K-L / gaussian-kl)")
    header = f"{'B':>5} {'M':>4} | {'gauss-KL':>9} {'K-L':>9} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for dim in DIV_DIMS:
        for batch in DIV_BATCHES:
            gauss = divergence_ms("gaussian-kl", batch, dim, args.repeats, device)
            knn = divergence_ms("kozachenko-leonenko", batch, dim, args.repeats, device)
            results["divergences"].append(
                {"batch": batch, "dim": dim, "gaussian_kl_ms": gauss, "kozachenko_leonenko_ms": knn}
            )
            print(f"{batch:>5} {dim:>4} | {gauss:>9.3f} {knn:>9.3f} {knn / gauss:>7.1f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
