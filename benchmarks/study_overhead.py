"""A study's wall time per run against a bare training loop of the same steps.

A study run costs more than its training: a process start (imports, planning and validating the
whole study), the trainer's logging and checkpoints, the evaluation (with the flagship's
metrics: reconstructions, 1,000 samples scored by the judge classifier, latent divergences) and
the report. This benchmark runs a small study of the flagship's mnist5k setting (``--runs`` runs
of ``--steps`` iterations, one at a time) through ``agekit run`` and, in the same run, the bare
loop of ``benchmarks/trainer_overhead.py`` for the same steps, and prints the ratio and where
the rest of the time goes.

    python benchmarks/study_overhead.py [--runs 2] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = """
name = "overhead"
seeds = {seeds}
[base]
data = {{ name = "mnist5k", batch_size = 32, options = {{ image_size = 32 }} }}
prior = {{ name = "sphere", dim = 16 }}
backbone = {{ name = "dcgan", options = {{ width = 16 }} }}
divergence = {{ name = "gaussian-kl" }}
train = {{ steps = {steps}, device = "cpu", checkpoint_every = 500, image_every = 500 }}
[[settings]]
name = "mnist5k"
metrics = [
    "reconstruction",
    {{ name = "sample-quality", options = {{ n_samples = 1000, kid_subset_size = 500 }} }},
    "latent-divergence",
]
"""


def bare_seconds(steps: int) -> float:
    sys.path.insert(0, str(Path(__file__).parent))
    from trainer_overhead import bare_loop  # the sibling benchmark's plain loop

    from agekit.config import parse_config
    from agekit.training.trainer import Trainer

    raw = {
        "name": "bare",
        "data": {"name": "mnist5k", "batch_size": 32, "options": {"image_size": 32}},
        "prior": {"name": "sphere", "dim": 16},
        "backbone": {"name": "dcgan", "options": {"width": 16}},
        "divergence": {"name": "gaussian-kl"},
        "train": {"steps": steps, "device": "cpu"},
    }
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(parse_config(raw, "benchmark"), Path(folder), progress=False)
        return steps / bare_loop(trainer, steps)  # bare_loop answers in iterations per second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        study = Path(folder) / "overhead.toml"
        study.write_text(STUDY.format(seeds=list(range(args.runs)), steps=args.steps))
        out = Path(folder) / "out"
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "agekit", "run", str(study), "--out", str(out), "--quiet"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        study_wall = time.perf_counter() - started
        records = [json.loads(p.read_text()) for p in sorted(out.glob("runs/*/eval.json"))]
    trained = sum(r["train_seconds_total"] for r in records)
    bare = bare_seconds(args.steps)
    per_run = study_wall / args.runs
    print(f"study: {args.runs} runs of {args.steps} iterations, {study_wall:.1f} s wall")
    print(f"  per run {per_run:.1f} s, of which the trainer's fit {trained / args.runs:.1f} s")
    print(
        f"  beyond training (process start, planning, evaluation, report): "
        f"{(study_wall - trained) / study_wall:.0%} of the wall time"
    )
    print(f"bare loop, {args.steps} iterations: {bare:.1f} s")
    print(f"ratio study wall per run / bare loop: {per_run / bare:.2f}")


if __name__ == "__main__":
    main()
