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


def _refuse_conditional(model: Any, command: str) -> None:
    if model.data.condition_shape is not None:
        raise UsageError(
            f"{command} draws unconditional models; this one is conditional "
            f"({model.config.data.name}): use `agekit colorize` or `agekit transfer`"
        )


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from agekit.trainer import load_trained
    from agekit.visual import save_samples

    model, _ = load_trained(args.checkpoint, args.device)
    _refuse_conditional(model, "sample")
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
    _refuse_conditional(model, "reconstruct")
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
    _refuse_conditional(model, "interpolate")
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


def _conditional_model(checkpoint: str, device: str) -> Any:
    from agekit.trainer import load_trained

    model, _ = load_trained(checkpoint, device)
    if model.data.condition_shape is None:
        raise UsageError(
            f"{checkpoint}: this model was trained on unconditional data "
            f"({model.config.data.name}); colorize and transfer need a colorization model "
            "(e.g. data colour-crops or lab-folder)"
        )
    model.pair.encoder.eval()
    model.pair.generator.eval()
    return model


def read_rgb(path: str | Path, size: int) -> Any:
    """An image file (any PIL-readable RGB or grayscale) as (3, size, size) RGB in [0, 1],
    resized (shorter side, bilinear) and centre-cropped like ``image-folder``."""
    from PIL import UnidentifiedImageError

    from agekit.datasets.local import load_square_rgb

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such image file")
    try:
        return load_square_rgb(path, size).float() / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read this file as an image ({exc})") from None


def _model_size(model: Any) -> int:
    return int(model.data.condition_shape[-1])


def _cmd_colorize(args: argparse.Namespace) -> int:
    import torch
    from torchvision.utils import save_image

    from agekit.color import network_to_rgb, rgb_to_network

    if args.n < 1:
        raise UsageError("--n must be at least 1")
    model = _conditional_model(args.checkpoint, args.device)
    size = _model_size(model)
    rgb = torch.stack([read_rgb(path, size) for path in args.images])
    device = next(model.pair.generator.parameters()).device
    _, condition = rgb_to_network(rgb)
    z = model.prior.sample(args.n, torch.Generator().manual_seed(args.seed))
    rows = []
    with torch.no_grad():
        for image in range(len(rgb)):
            cond = condition[image : image + 1].expand(args.n, -1, -1, -1)
            ab = model.pair.generator(z.to(device), cond.to(device)).float().cpu()
            grey = network_to_rgb(torch.zeros(1, 2, size, size), condition[image : image + 1])
            rows.append(torch.cat([grey, network_to_rgb(ab, cond)]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(rows), args.out, nrow=args.n + 1, pad_value=1.0)
    console.print(
        f"wrote {len(rgb)} x {args.n} colorizations to {args.out} "
        "(a row per image: its grayscale input, then one colorization per z)"
    )
    return 0


def _cmd_transfer(args: argparse.Namespace) -> int:
    import torch
    from torchvision.utils import save_image

    from agekit.color import network_to_rgb, rgb_to_network

    model = _conditional_model(args.checkpoint, args.device)
    size = _model_size(model)
    source, target = read_rgb(args.source, size), read_rgb(args.target, size)
    device = next(model.pair.generator.parameters()).device
    x1, l1 = rgb_to_network(source[None])
    x2, l2 = rgb_to_network(target[None])
    with torch.no_grad():
        z1 = model.pair.encoder(x1.to(device), l1.to(device))
        out = model.pair.generator(z1, l2.to(device)).float().cpu()
    grey = network_to_rgb(torch.zeros_like(x2), l2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_image(
        torch.cat([source[None], grey, network_to_rgb(out, l2), target[None]]),
        args.out,
        nrow=4,
        pad_value=1.0,
    )
    console.print(
        f"wrote {args.out}: source, target's grayscale, g(e(source | L_source) | L_target), "
        "target's own colours"
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

    p = sub.add_parser(
        "colorize", help="several colorizations g(z | L) of image files, one per z (conditional)"
    )
    p.add_argument("checkpoint", help="a checkpoint file or a run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="RGB or grayscale image files")
    p.add_argument("--n", type=int, default=8, help="colorizations per image")
    p.add_argument("--seed", type=int, default=0, help="seed of the codes z")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_colorize)

    p = sub.add_parser("transfer", help="colour transfer: g(e(x1 | L1) | L2) (conditional models)")
    p.add_argument("checkpoint", help="a checkpoint file or a run folder")
    p.add_argument("source", help="image whose colour scheme is encoded")
    p.add_argument("target", help="image whose lightness is recoloured")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_transfer)
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
