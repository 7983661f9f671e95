"""Trainer overhead: iterations/second of ``Trainer`` against a bare PyTorch loop.

The bare loop does the same forward and backward passes with the same modules, optimisers, batch
and update plan (one encoder update, then ``gen_steps_per_encoder_step`` generator updates), with
no logging, checkpoints or guards. Both are measured in this run, interleaved, on the same
machine; the target is a ratio of at most 1.05.

    python benchmarks/trainer_overhead.py [--steps 40] [--repeats 3] [--width 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from agekit.config import parse_config
from agekit.training.trainer import Trainer


def _config(steps: int, width: int, batch: int) -> dict:
    return {
        "name": "bench",
        "data": {"name": "mnist5k", "batch_size": batch},
        "prior": {"name": "sphere", "dim": 16},
        "backbone": {"name": "dcgan", "options": {"width": width}},
        "train": {
            "steps": steps,
            "device": "cpu",
            "log_every": 25,
            "image_every": 10**9,
            "checkpoint_every": 10**9,
        },
    }


def bare_loop(trainer: Trainer, steps: int) -> float:
    """The same work as ``Trainer.train_step`` written as plainly as possible."""
    game = trainer.model.game
    prior = trainer.model.prior
    encoder, generator = trainer.encoder, trainer.generator
    opt_e, opt_g = trainer.opt_encoder, trainer.opt_generator
    batch = trainer.config.data.batch_size
    x_all = trainer.stream.x_all
    assert x_all is not None
    gen_steps = trainer.config.game.gen_steps_per_encoder_step
    w = game.weights
    start = time.perf_counter()
    for _ in range(steps):
        x = x_all[torch.randint(len(x_all), (batch,))]
        if trainer.config.train.channels_last:  # the same memory format as the trainer's batches
            x = x.contiguous(memory_format=torch.channels_last)
        generator.requires_grad_(False)
        with torch.no_grad():
            fake = generator(prior.sample(batch))
        real_codes = encoder(x)
        loss = (
            game.divergence(real_codes, prior)
            - game.divergence(encoder(fake), prior)
            + w.data_weight * game.data_loss(x, generator(real_codes))
        )
        opt_e.zero_grad(set_to_none=True)
        loss.backward()
        opt_e.step()
        generator.requires_grad_(True)
        encoder.requires_grad_(False)
        for _ in range(gen_steps):
            z = prior.sample(batch)
            codes = encoder(generator(z))
            loss = game.divergence(codes, prior) + w.latent_weight * game.latent_loss(z, codes)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
        encoder.requires_grad_(True)
    return steps / (time.perf_counter() - start)


def _fit_seconds(steps: int, width: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(parse_config(_config(steps, width, batch)), folder)
        start = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - start


def trainer_loop(steps: int, width: int, batch: int) -> float:
    """Iterations/second of ``Trainer.fit`` in steady state.

    A run of 2N iterations minus a run of N: the difference holds N iterations of the loop with
    its per-step logging and guards, while the one-off end-of-run checkpoint and image grids
    (which a long run amortises) cancel.
    """
    return steps / (_fit_seconds(2 * steps, width, batch) - _fit_seconds(steps, width, batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        reference = Trainer(parse_config(_config(args.steps, args.width, args.batch)), folder)
        bare_loop(reference, 3)  # warm-up
        bare, managed = [], []
        for _ in range(args.repeats):
            bare.append(bare_loop(reference, args.steps))
            managed.append(trainer_loop(args.steps, args.width, args.batch))
    bare_rate, trainer_rate = statistics.median(bare), statistics.median(managed)
    ratio = bare_rate / trainer_rate
    print(f"dcgan width {args.width}, batch {args.batch}, {args.steps} iterations x {args.repeats}")
    print(f"bare loop : {bare_rate:7.3f} it/s  ({bare_rate * args.batch:7.1f} real images/s)")
    print(f"trainer   : {trainer_rate:7.3f} it/s  ({trainer_rate * args.batch:7.1f} real images/s)")
    print(
        f"ratio bare/trainer = {ratio:.3f}  "
        f"(target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
