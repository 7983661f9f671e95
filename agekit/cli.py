"""The ``agekit`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class UsageError(Exception):
    pass


def _cmd_list(args: argparse.Namespace) -> int:
    from agekit.registry import REGISTRY

    entries = REGISTRY.check(args.kind)
    table = Table(title="agekit components")
    for column in ("name", "kind", "distribution", "version", "status"):
        table.add_column(column)
    for entry in entries:
        status = entry.status
        style = "red" if status.startswith("broken") else "green"
        table.add_row(
            entry.name,
            entry.kind,
            entry.distribution,
            entry.version,
            f"[{style}]{status}[/{style}]",
        )
    console.print(table)
    return 0


def _parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set train.steps=100`` style overrides, values parsed as TOML."""
    import tomllib

    merged: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value  # a bare word is a string
        node = merged
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parsed
    return merged


def _cmd_train(args: argparse.Namespace) -> int:
    from agekit.config import load_config
    from agekit.trainer import Trainer

    overrides = _parse_overrides(args.set or [])
    if args.out:
        overrides["out_dir"] = args.out
    from agekit import distributed

    config = load_config(args.config, overrides)
    try:
        # Under torchrun (WORLD_SIZE > 1) the trainer joins the process group; rank 0 reports.
        trainer = Trainer(config, run_dir=args.run_dir, progress=not args.quiet)
        processes = f" x {trainer.world_size} processes" if trainer.world_size > 1 else ""
        if trainer.is_main:
            console.print(
                f"[bold]agekit train[/bold] {config.name} on {trainer.device}{processes} "
                f"-> {trainer.run_dir}"
            )
        result = trainer.fit(resume=args.resume)
        if trainer.is_main:
            console.print(
                f"{result.status}: step {result.step}, epoch {result.epoch}; "
                f"images in {result.run_dir / 'images'}, log {trainer.metrics_path}"
            )
    finally:
        distributed.shutdown()
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from agekit.trainer import load_trained
    from agekit.visual import save_samples

    model, _ = load_trained(args.checkpoint, args.device)
    generator = torch.Generator().manual_seed(args.seed)
    device = next(model.pair.generator.parameters()).device
    z = model.prior.sample(args.n, generator).to(device)
    model.pair.generator.eval()
    with torch.no_grad():
        samples = model.pair.generator(z)
    save_samples(samples, Path(args.out), model.data)
    console.print(f"wrote {args.n} samples to {args.out}")
    return 0


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch

    from agekit.trainer import load_trained, test_batch
    from agekit.visual import save_pairs_grid

    model, _ = load_trained(args.checkpoint, args.device)
    device = next(model.pair.generator.parameters()).device
    x = test_batch(model.data, args.n).to(device)
    model.pair.encoder.eval()
    model.pair.generator.eval()
    with torch.no_grad():
        recon = model.pair.generator(model.pair.encoder(x))
    save_pairs_grid(x, recon, Path(args.out), model.data)
    l1 = float((recon - x).abs().mean())
    console.print(
        f"wrote {len(x)} test images and their reconstructions to {args.out} (mean L1 {l1:.4f})"
    )
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    import torch
    from torchvision.utils import save_image

    from agekit.latent import interpolate
    from agekit.trainer import load_trained, test_batch

    model, _ = load_trained(args.checkpoint, args.device)
    if model.data.kind != "image":
        raise UsageError("interpolate draws images; this model's data are vectors")
    device = next(model.pair.generator.parameters()).device
    x = test_batch(model.data, 2 * args.rows).to(device)
    model.pair.encoder.eval()
    model.pair.generator.eval()
    with torch.no_grad():
        codes = model.pair.encoder(x)
        rows = []
        for row in range(args.rows):
            path = interpolate(codes[2 * row], codes[2 * row + 1], args.steps, model.prior)
            rows.append(
                torch.cat(
                    [
                        x[2 * row : 2 * row + 1],
                        model.pair.generator(path),
                        x[2 * row + 1 : 2 * row + 2],
                    ]
                )
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_image(
        torch.cat(rows),
        args.out,
        nrow=args.steps + 2,
        normalize=True,
        value_range=(-1, 1),
        pad_value=1.0,
    )
    console.print(
        f"wrote {args.rows} interpolations to {args.out} "
        "(ends: the real test images; between: decoded codes)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agekit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered components and their status")
    p.add_argument("kind", nargs="?", help="prior(s), divergence(s), backbone(s), loss(es), ...")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("train", help="train one AGE model from a TOML configuration")
    p.add_argument("config")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--out", help="parent folder of the run (overrides out_dir)")
    p.add_argument("--run-dir", help="exact run folder (default OUT/NAME)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a configuration key, e.g. --set train.steps=200",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    for name, func, text in (
        ("sample", _cmd_sample, "draw samples g(z), z from the prior"),
        ("reconstruct", _cmd_reconstruct, "test images beside g(e(x))"),
        ("interpolate", _cmd_interpolate, "decode great-circle paths between encoded test images"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("checkpoint", help="a checkpoint file or a run folder")
        p.add_argument("--out", required=True)
        p.add_argument("--device", default="auto")
        if name == "sample":
            p.add_argument("--n", type=int, default=64)
            p.add_argument("--seed", type=int, default=0)
        elif name == "reconstruct":
            p.add_argument("--n", type=int, default=32)
        else:
            p.add_argument("--rows", type=int, default=8)
            p.add_argument("--steps", type=int, default=8)
        p.set_defaults(func=func)
    _add_study_commands(sub)
    return parser


def _add_study_commands(sub: Any) -> None:
    try:
        from agekit.studies.cli import add_commands
    except ImportError:  # studies arrive with their own module
        return
    add_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    from agekit.checkpoint import CheckpointError
    from agekit.components import ComponentInputError
    from agekit.config import ConfigError
    from agekit.distributed import DistributedError
    from agekit.registry import RegistryError
    from agekit.trainer import DeviceUnavailable, TrainingDiverged

    args = build_parser().parse_args(argv)
    known = (
        UsageError,
        ConfigError,
        RegistryError,
        CheckpointError,
        DeviceUnavailable,
        TrainingDiverged,
        DistributedError,
        ComponentInputError,
        FileNotFoundError,
    )
    try:
        return int(args.func(args))
    except known as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; resume with --resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
