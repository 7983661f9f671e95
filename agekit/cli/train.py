"""``agekit train``: train one model from a configuration file (under torchrun, one rank each)."""

from __future__ import annotations

import argparse
import signal

from rich.markup import escape

from agekit.cli.shared import UsageError, check_folder, console, err_console


def cmd_train(args: argparse.Namespace) -> int:
    from agekit.config import ConfigError, load_config, parse_overrides
    from agekit.training import distributed
    from agekit.training.trainer import Trainer

    overrides = parse_overrides(args.set or [])
    for option, value in (("--out", args.out), ("--run-dir", args.run_dir)):
        if value:
            check_folder(option, value)
    if args.out:
        overrides["out_dir"] = args.out
    config = load_config(args.config, overrides)
    from agekit.games.adversary import check_adaptive_adversary

    check_adaptive_adversary(config, str(args.config))
    try:
        # Under torchrun (WORLD_SIZE > 1) the trainer joins the process group; rank 0 reports.
        try:
            trainer = Trainer(config, run_dir=args.run_dir, progress=not args.quiet)
        except ConfigError:
            raise
        except ValueError as exc:
            # What only the built data and networks can check: a batch larger than the data
            # set, a backbone that does not take the data's shape.
            raise UsageError(f"{args.config}: {exc}") from exc
        processes = f" x {trainer.world_size} processes" if trainer.world_size > 1 else ""
        if trainer.is_main:
            console.print(
                f"[bold]agekit train[/bold] {config.name} on {trainer.device}{processes} "
                f"-> {trainer.run_dir}"
            )
        try:
            result = trainer.fit(resume=args.resume, handle_signals=True)
        except OSError as exc:
            if exc.filename is None and exc.strerror:  # e.g. a full disk during a write
                raise UsageError(f"{trainer.run_dir}: {exc.strerror} (while training)") from exc
            raise
        if trainer.interrupted_by is not None:
            if trainer.is_main:
                from agekit.runs import checkpoint as ckpt

                name = signal.Signals(trainer.interrupted_by).name
                err_console.print(
                    f"interrupted by {name} at step {result.step}: checkpoint written to "
                    f"{escape(str(ckpt.latest(trainer.checkpoint_dir)))}; run the same command "
                    "with --resume to continue",
                    highlight=False,
                    soft_wrap=True,
                )
            return 128 + trainer.interrupted_by
        if trainer.is_main:
            console.print(
                f"{result.status}: step {result.step}, epoch {result.epoch}; "
                f"images in {trainer.folder.images}, log {trainer.metrics_path}"
            )
    finally:
        distributed.shutdown()
    return 0
