"""Trainer throughput under DDP (2 gloo processes) against one process, same global batch.

Three runs of ``Trainer.train_step`` on the 32 px dcgan pair, mnist5k, global batch B, each in a
fresh process started the way torchrun starts them (RANK/WORLD_SIZE/MASTER_* in the environment):

- one process, 1 thread (the reference);
- with ``--two-threads``: one process, 2 threads (the same cores as DDP, used by intra-op
  parallelism; on a CPU shared with other jobs it oversubscribes badly, hence off by default);
- DDP, 2 processes x 1 thread, B / 2 each, codes all-gathered before the divergence.

Images/second counts the global batch's real images per iteration. Ratios are against the
1-thread single process measured in the same run.

    python benchmarks/trainer_ddp.py [--steps 12] [--width 16] [--batch 64] [--two-threads]
        [--divergence gaussian-kl --divergence kozachenko-leonenko]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(out: Path, steps: int, width: int, batch: int, divergence: str) -> None:
    import torch

    from agekit.config import parse_config
    from agekit.training.trainer import Trainer

    raw = {
        "name": "bench",
        "data": {"name": "mnist5k", "batch_size": batch, "options": {"image_size": 32}},
        "prior": {"name": "sphere", "dim": 16},
        "divergence": {"name": divergence},
        "backbone": {"name": "dcgan", "options": {"width": width}},
        "train": {"steps": steps, "device": "cpu"},
    }
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(parse_config(raw), folder)
        trainer.train_step()  # warm-up; under DDP it also builds the DDP wrappers
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        # The last collective of a step synchronises the ranks, so rank 0's clock is the job's.
        elapsed = time.perf_counter() - start
    if trainer.is_main:
        out.write_text(json.dumps({"images_per_s": steps * batch / elapsed}))
    if trainer.dist is not None:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(processes: int, threads: int, args: argparse.Namespace, divergence: str) -> float:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        port = str(_free_port())
        command = [sys.executable, __file__, "--worker", str(out)]
        command += ["--steps", str(args.steps), "--width", str(args.width)]
        command += ["--batch", str(args.batch), "--divergence", divergence]
        procs = []
        for rank in range(processes):
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            env.pop("WORLD_SIZE", None)
            if processes > 1:
                env |= {
                    "RANK": str(rank),
                    "LOCAL_RANK": str(rank),
                    "WORLD_SIZE": str(processes),
                    "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": port,
                }
            procs.append(subprocess.Popen(command, env=env))
        for proc in procs:
            if proc.wait(timeout=300) != 0:
                raise SystemExit(f"worker failed with exit code {proc.returncode}")
        return float(json.loads(out.read_text())["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--divergence", action="append", help="default: gaussian-kl")
    parser.add_argument("--two-threads", action="store_true", help="add 1 process x 2 threads")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    divergences = args.divergence or ["gaussian-kl"]
    if args.worker is not None:
        worker(args.worker, args.steps, args.width, args.batch, divergences[0])
        return
    print(f"dcgan 32 px width {args.width}, global batch {args.batch}, {args.steps} iterations")
    header = f"{'divergence':<20} {'setup':<26} {'images/s':>9} {'vs 1 proc x 1 thread':>21}"
    print(header)
    print("-" * len(header))
    for divergence in divergences:
        reference = launch(1, 1, args, divergence)
        rows = [("1 process x 1 thread", reference)]
        if args.two_threads:
            rows.append(("1 process x 2 threads", launch(1, 2, args, divergence)))
        rows.append(("DDP 2 processes x 1 thread", launch(2, 1, args, divergence)))
        for label, rate in rows:
            print(f"{divergence:<20} {label:<26} {rate:>9.1f} {rate / reference:>21.2f}")


if __name__ == "__main__":
    main()
