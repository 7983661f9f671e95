"""The ``agekit`` command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class UsageError(Exception):
    pass


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, refused with a one-line usage error otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _error(message: str) -> None:
    """``error: ...`` on stderr: the message as written (no markup), never wrapped."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


class _ConsoleNotes(logging.Handler):
    """Shows agekit's log records (a resume that fell back, a torn log line) as one-line notes."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = escape(record.getMessage())
        except Exception:  # a malformed record must not stop the command
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            label = "[yellow]warning:[/yellow]"
        else:
            label = "[dim]note:[/dim]"
        err_console.print(f"{label} {message}", highlight=False, soft_wrap=True)


def _show_notes() -> None:
    logger = logging.getLogger("agekit")
    if not any(isinstance(handler, _ConsoleNotes) for handler in logger.handlers):
        logger.addHandler(_ConsoleNotes())
    logger.setLevel(logging.INFO)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("agekit")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _cmd_list(args: argparse.Namespace) -> int:
    from agekit.registry import REGISTRY

    entries = REGISTRY.check(args.kind)
    columns = ("name", "kind", "distribution", "version", "status")
    rows = [
        (entry.name, entry.kind, entry.distribution, entry.version, " ".join(entry.status.split()))
        for entry in entries
    ]
    widths = [
        max([len(column)] + [len(row[i]) for row in rows]) for i, column in enumerate(columns)
    ]
    # A table needs its borders and padding (3 characters a column, plus 1) and the status header.
    table_width = sum(widths[:-1]) + len(columns[-1]) + 3 * len(columns) + 1
    if args.plain or not console.is_terminal or table_width > console.width:
        # Pipes, files and narrow terminals get every value in full, one aligned row each.
        for row in [columns, *rows]:
            cells = [value.ljust(width) for value, width in zip(row[:-1], widths, strict=False)]
            sys.stdout.write("  ".join([*cells, row[-1]]) + "\n")
        return 0
    table = Table(title="agekit components")
    for column, width in zip(columns[:-1], widths, strict=False):
        table.add_column(column, no_wrap=True, min_width=width)
    table.add_column(columns[-1], overflow="fold")  # a long "broken: ..." folds, never cut
    for row in rows:
        style = "red" if row[-1].startswith("broken") else "green"
        table.add_row(
            *(escape(value) for value in row[:-1]), f"[{style}]{escape(row[-1])}[/{style}]"
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
        result = trainer.fit(resume=args.resume, handle_signals=True)
        if trainer.interrupted_by is not None:
            if trainer.is_main:
                from agekit import checkpoint as ckpt

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

    from agekit.model import load_trained
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

    from agekit.datasets.stream import test_batch
    from agekit.model import load_trained
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

    from agekit.datasets.stream import test_batch
    from agekit.latent import interpolate
    from agekit.model import load_trained

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
    from agekit.model import load_trained

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


def _run_folder(run: Path) -> Path:
    """The run folder of ``agekit evaluate``'s argument: the folder, or a checkpoint's run."""
    if run.is_dir():
        return run
    return run.parent.parent if run.parent.name == "checkpoints" else run.parent


def _default_metric_names(run: Path, checkpoint: Path) -> list[str]:
    """The metrics a study would run on this run's data (its saved configuration decides)."""
    import json

    from agekit import checkpoint as ckpt
    from agekit.config import parse_config
    from agekit.evaluation import default_metrics
    from agekit.registry import REGISTRY

    saved = _run_folder(run) / "config.json"
    if saved.is_file():
        try:
            raw = json.loads(saved.read_text())
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{saved}: not valid JSON ({exc}); name metrics with --metric"
            ) from None
        source = str(saved)
    else:
        raw = ckpt.load(checkpoint)["config"]
        source = f"{checkpoint} (saved configuration)"
    config = parse_config(raw, source)
    kind = REGISTRY.load("dataset", config.data.name).kind
    return default_metrics(config.data.name, kind)


def _score_rows(scores: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Printable (name, value) pairs of one metric's result; protocols stay in the JSON."""
    rows: list[tuple[str, str]] = []
    for key, value in scores.items():
        if key == "protocol":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, bool) or value is None or isinstance(value, str):
            rows.append((name, str(value)))
        elif isinstance(value, int | float):
            rows.append((name, f"{value:.6g}"))
        elif isinstance(value, dict):
            rows.extend(_score_rows(value, f"{name}."))
        elif isinstance(value, list | tuple):
            rows.append((name, f"[{len(value)} values]"))
        else:
            rows.append((name, str(value)))
    return rows


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from agekit import checkpoint as ckpt
    from agekit.config import Component
    from agekit.evaluation import evaluate, write_json_atomic
    from agekit.registry import REGISTRY

    run = Path(args.run)
    if not run.exists():
        raise UsageError(f"{run}: no such run folder or checkpoint file")
    checkpoint = ckpt.resolve(run)
    names = args.metric or _default_metric_names(run, checkpoint)
    for name in names:
        REGISTRY.load("metric", name)  # an unknown name fails here, before any work
    out = Path(args.out) if args.out else _run_folder(run) / "evaluate.json"
    console.print(
        f"[bold]agekit evaluate[/bold] {escape(str(checkpoint))}: {', '.join(names)}",
        highlight=False,
    )
    try:
        record = evaluate(
            checkpoint,
            [Component(name=name) for name in names],
            seed=args.seed,
            device=args.device,
            batchnorm=args.batchnorm,
        )
    except ValueError as exc:
        raise UsageError(f"{checkpoint}: {exc}") from None
    record["run"] = str(_run_folder(run))
    table = Table(title=f"{_run_folder(run).name} at step {record['step']}")
    table.add_column("metric", no_wrap=True)
    table.add_column("score", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    for metric, scores in record["metrics"].items():
        rows = _score_rows(scores) if isinstance(scores, dict) else [("", str(scores))]
        for index, (key, value) in enumerate(rows):
            table.add_row(metric if index == 0 else "", escape(key), escape(value))
    console.print(table)
    write_json_atomic(record, out)
    console.print(f"wrote {escape(str(out))}", highlight=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agekit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"agekit {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered components and their status")
    p.add_argument("kind", nargs="?", help="prior(s), divergence(s), backbone(s), loss(es), ...")
    p.add_argument(
        "--plain",
        action="store_true",
        help="plain aligned rows instead of a table (the default when output is not a terminal)",
    )
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
            p.add_argument("--n", type=positive_int, default=64, help="samples in the grid")
            p.add_argument("--seed", type=int, default=0, help="seed of the codes z")
        elif name == "reconstruct":
            p.add_argument("--n", type=positive_int, default=32, help="test images")
        else:
            p.add_argument("--rows", type=positive_int, default=8, help="pairs of test images")
            p.add_argument("--steps", type=positive_int, default=8, help="points per path")
        p.set_defaults(func=func)

    p = sub.add_parser(
        "colorize", help="several colorizations g(z | L) of image files, one per z (conditional)"
    )
    p.add_argument("checkpoint", help="a checkpoint file or a run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="RGB or grayscale image files")
    p.add_argument("--n", type=positive_int, default=8, help="colorizations per image")
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

    p = sub.add_parser(
        "evaluate", help="score one trained run with registered metrics (outside a study)"
    )
    p.add_argument("run", help="a run folder or a checkpoint file")
    p.add_argument(
        "--metric",
        action="append",
        metavar="NAME",
        help="a registered metric (repeatable; default: what a study runs on this data; "
        "see `agekit list metric`)",
    )
    p.add_argument("--out", help="JSON file of the scores (default RUN/evaluate.json)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation's sampling")
    p.add_argument(
        "--batchnorm",
        choices=("real-data", "running"),
        default="real-data",
        help="re-estimate batch-norm statistics on real data first, or keep training's",
    )
    p.set_defaults(func=_cmd_evaluate)
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
    from agekit.model import DeviceUnavailable
    from agekit.registry import RegistryError
    from agekit.trainer import TrainingDiverged

    args = build_parser().parse_args(argv)
    _show_notes()
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
        _error(str(exc))
        return 2
    except KeyboardInterrupt:
        # ``agekit train`` handles Ctrl-C itself once training runs (checkpoint, then exit 130).
        before = " before training began: nothing was written" if args.command == "train" else ""
        err_console.print(f"interrupted{before}", highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
