# PYTHON_ARGCOMPLETE_OK
"""The ``agekit`` command line: parsing arguments and printing; the work is done elsewhere.

Start-up time: this module imports nothing heavy (torch, torchvision, the trainer) at its top or
before the arguments are parsed, so ``agekit --help`` and shell completion answer at once; each
command imports what it needs. Tensor work lives in :mod:`agekit.inference`.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

#: What ``--out`` of the image commands may end with (PIL picks the format from it).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: Setting this environment variable to 1 is the same as ``--debug``.
DEBUG_VARIABLE = "AGEKIT_DEBUG"


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


def _blocking_file(paths: Sequence[Path]) -> Path | None:
    """The first of ``paths`` that exists, when it is a file rather than a folder."""
    for path in paths:
        if path.exists():
            return None if path.is_dir() else path
    return None


def _check_folder(option: str, text: str) -> None:
    """An output folder (``--out``, ``--run-dir``) must not be, or lie under, an existing file."""
    path = Path(text)
    blocker = _blocking_file([path, *path.parents])
    if blocker is not None:
        raise UsageError(f"{option} {text}: {blocker} is a file, not a folder")


def _image_out(text: str) -> Path:
    """``--out`` of an image command: a known image extension, not under an existing file."""
    path = Path(text)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        got = f"{path.suffix!r}" if path.suffix else "no extension"
        raise UsageError(
            f"--out {text}: expected an image file name ending in {', '.join(IMAGE_SUFFIXES)} "
            f"(got {got})"
        )
    if path.is_dir():
        raise UsageError(f"--out {text}: is a folder; expected an image file name")
    blocker = _blocking_file(list(path.parents))
    if blocker is not None:
        raise UsageError(f"--out {text}: {blocker} is a file, not a folder")
    return path


def _cmd_train(args: argparse.Namespace) -> int:
    from agekit import distributed
    from agekit.config import ConfigError, load_config, parse_overrides
    from agekit.trainer import Trainer

    overrides = parse_overrides(args.set or [])
    for option, value in (("--out", args.out), ("--run-dir", args.run_dir)):
        if value:
            _check_folder(option, value)
    if args.out:
        overrides["out_dir"] = args.out
    config = load_config(args.config, overrides)
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


def _load_model(checkpoint: str, device: str, command: str, conditional: bool = False) -> Any:
    """The trained model of ``checkpoint``, refused unless its kind fits ``command``."""
    from agekit import inference
    from agekit.model import load_trained

    model, _ = load_trained(checkpoint, device)
    try:
        if conditional:
            inference.require_conditional(model, command)
        else:
            inference.require_unconditional(model, command)
    except inference.InferenceError as exc:
        raise UsageError(f"{checkpoint}: {exc}") from None
    return model


def _cmd_sample(args: argparse.Namespace) -> int:
    from agekit import inference
    from agekit.visual import save_samples

    model = _load_model(args.checkpoint, args.device, "sample")
    out = _image_out(args.out)
    samples = inference.sample(model, args.n, args.seed)
    save_samples(samples, out, model.data)
    console.print(f"wrote {args.n} samples to {args.out}")
    return 0


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from agekit import inference
    from agekit.datasets.stream import test_batch
    from agekit.visual import save_pairs_grid

    model = _load_model(args.checkpoint, args.device, "reconstruct")
    out = _image_out(args.out)
    x = test_batch(model.data, args.n)
    recon = inference.reconstruct(model, x)
    save_pairs_grid(x, recon, out, model.data)
    l1 = float((recon - x.float()).abs().mean())
    console.print(
        f"wrote {len(x)} test images and their reconstructions to {args.out} (mean L1 {l1:.4f})"
    )
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    import torch

    from agekit import inference
    from agekit.datasets.stream import test_batch
    from agekit.visual import save_grid

    model = _load_model(args.checkpoint, args.device, "interpolate")
    if model.data.kind != "image":
        raise UsageError("interpolate draws images; this model's data are vectors")
    out = _image_out(args.out)
    x = test_batch(model.data, 2 * args.rows)
    pairs = len(x) // 2
    if pairs == 0:
        raise UsageError(f"{args.checkpoint}: the test split has fewer than 2 images")
    start, end = x[0 : 2 * pairs : 2], x[1 : 2 * pairs : 2]
    paths = inference.interpolate(model, start, end, args.steps)
    # a row per pair: the real test image, the decoded path, the other real test image
    save_grid(torch.cat([start[:, None].float(), paths, end[:, None].float()], dim=1), out)
    console.print(
        f"wrote {pairs} interpolations to {args.out} "
        "(ends: the real test images; between: decoded codes)"
    )
    return 0


def _cmd_colorize(args: argparse.Namespace) -> int:
    import torch

    from agekit import inference
    from agekit.visual import save_grid

    model = _load_model(args.checkpoint, args.device, "colorize", conditional=True)
    out = _image_out(args.out)
    rgb = inference.read_rgb_batch(args.images, inference.condition_size(model))
    colours = inference.colorize(model, rgb, args.n, args.seed)
    grey = inference.lightness_only(rgb)
    save_grid(torch.cat([grey[:, None], colours], dim=1), out, signed=False)
    console.print(
        f"wrote {len(rgb)} x {args.n} colorizations to {args.out} "
        "(a row per image: its grayscale input, then one colorization per z)"
    )
    return 0


def _cmd_transfer(args: argparse.Namespace) -> int:
    import torch

    from agekit import inference
    from agekit.visual import save_grid

    model = _load_model(args.checkpoint, args.device, "transfer", conditional=True)
    out = _image_out(args.out)
    size = inference.condition_size(model)
    source, target = inference.read_rgb(args.source, size), inference.read_rgb(args.target, size)
    result = inference.transfer(model, source, target)
    grey = inference.lightness_only(target[None])[0]
    save_grid(torch.stack([source, grey, result, target])[None], out, signed=False)
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
    blocker = _blocking_file(list(out.parents))
    if out.is_dir() or blocker is not None:
        why = "is a folder" if blocker is None else f"{blocker} is a file, not a folder"
        raise UsageError(f"{out}: {why}; expected a JSON file name")
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


def _kind_completer(**_: Any) -> list[str]:
    from agekit.registry import KIND_ALIASES

    return sorted(KIND_ALIASES)


def _metric_completer(**_: Any) -> list[str]:
    from agekit.registry import REGISTRY

    return REGISTRY.available("metric")  # names only: imports no metric


def _complete(action: argparse.Action, completer: Callable[..., list[str]]) -> None:
    """Attach an argcomplete completer to an argument."""
    action.completer = completer  # type: ignore[attr-defined]


_DEVICE_HELP = "cpu, cuda, cuda:N, or auto (CUDA when present; the default)"
_CHECKPOINT_HELP = "a checkpoint file or a run folder (its newest checkpoint)"


def _image_out_help(what: str) -> str:
    return f"image file of the {what} (ending in {', '.join(IMAGE_SUFFIXES)})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agekit",
        description="Adversarial Generator-Encoder networks: train, sample, evaluate, run studies.",
        epilog=f"--debug (or {DEBUG_VARIABLE}=1) shows the full traceback of an error.",
    )
    parser.add_argument(
        "--version", action="version", version=f"agekit {_version()}", help="print the version"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of an error (also: {DEBUG_VARIABLE}=1)",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="`agekit COMMAND --help` for more"
    )

    p = sub.add_parser("list", help="list registered components and their status")
    _complete(
        p.add_argument(
            "kind", nargs="?", help="prior(s), divergence(s), backbone(s), loss(es), ..."
        ),
        _kind_completer,
    )
    p.add_argument(
        "--plain",
        action="store_true",
        help="plain aligned rows instead of a table (the default when output is not a terminal)",
    )
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("train", help="train one AGE model from a TOML configuration")
    p.add_argument("config", help="the configuration TOML file, e.g. configs/mnist5k.toml")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--out", help="parent folder of the run (overrides out_dir)")
    p.add_argument("--run-dir", help="exact run folder (default OUT/NAME)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a configuration key, e.g. --set train.steps=200 (repeatable; values are "
        "TOML)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    for name, func, text in (
        ("sample", _cmd_sample, "draw samples g(z), z from the prior"),
        ("reconstruct", _cmd_reconstruct, "test images beside g(e(x))"),
        ("interpolate", _cmd_interpolate, "decode great-circle paths between encoded test images"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("checkpoint", help=_CHECKPOINT_HELP)
        p.add_argument("--out", required=True, help=_image_out_help(name + " grid"))
        p.add_argument("--device", default="auto", help=_DEVICE_HELP)
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
    p.add_argument("checkpoint", help=_CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="RGB or grayscale image files")
    p.add_argument("--n", type=positive_int, default=8, help="colorizations per image")
    p.add_argument("--seed", type=int, default=0, help="seed of the codes z")
    p.add_argument("--out", required=True, help=_image_out_help("colorization grid"))
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.set_defaults(func=_cmd_colorize)

    p = sub.add_parser("transfer", help="colour transfer: g(e(x1 | L1) | L2) (conditional models)")
    p.add_argument("checkpoint", help=_CHECKPOINT_HELP)
    p.add_argument("source", help="image whose colour scheme is encoded")
    p.add_argument("target", help="image whose lightness is recoloured")
    p.add_argument("--out", required=True, help=_image_out_help("four-image strip"))
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.set_defaults(func=_cmd_transfer)

    p = sub.add_parser(
        "evaluate", help="score one trained run with registered metrics (outside a study)"
    )
    p.add_argument("run", help="a run folder or a checkpoint file")
    _complete(
        p.add_argument(
            "--metric",
            action="append",
            metavar="NAME",
            help="a registered metric (repeatable; default: what a study runs on this data; "
            "see `agekit list metric`)",
        ),
        _metric_completer,
    )
    p.add_argument("--out", help="JSON file of the scores (default RUN/evaluate.json)")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation's sampling")
    p.add_argument(
        "--batchnorm",
        choices=("real-data", "running"),
        default="real-data",
        help="re-estimate batch-norm statistics on real data first, or keep training's",
    )
    p.set_defaults(func=_cmd_evaluate)
    _add_study_commands(sub)
    for command in sub.choices.values():
        # --debug after the command too (agekit train X --debug); SUPPRESS keeps a --debug given
        # before the command from being reset by the sub-parser's default.
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help=f"show the full traceback of an error (also: {DEBUG_VARIABLE}=1)",
        )
    return parser


def _add_study_commands(sub: Any) -> None:
    try:
        from agekit.studies.cli import add_commands
    except ImportError:  # studies arrive with their own module
        return
    add_commands(sub)


# errors -------------------------------------------------------------------------------------------
#: agekit's own errors, whose messages are written for the user: (module, class). Looked up only
#: in modules already imported (an error cannot come from a module that was never imported), so
#: ``main`` imports nothing for them.
_KNOWN_ERRORS = (
    ("agekit.config", "ConfigError"),
    ("agekit.registry", "RegistryError"),
    ("agekit.checkpoint", "CheckpointError"),
    ("agekit.model", "DeviceUnavailable"),
    ("agekit.trainer", "DeviceUnavailable"),
    ("agekit.trainer", "TrainingDiverged"),
    ("agekit.distributed", "DistributedError"),
    ("agekit.components", "ComponentInputError"),
    ("agekit.inference", "InferenceError"),
    ("agekit.datasets.local", "UnreadableImageError"),
)


def _is_known(exc: BaseException) -> bool:
    if isinstance(exc, UsageError):
        return True
    for module_name, name in _KNOWN_ERRORS:
        module = sys.modules.get(module_name)
        kind = getattr(module, name, None) if module is not None else None
        if isinstance(kind, type) and isinstance(exc, kind):
            return True
    return False


def _message(exc: BaseException) -> str:
    """An error's message for the user: a DataLoader worker's relayed traceback is cut down to
    the original error's own line."""
    text = str(exc) or type(exc).__name__
    if "Original Traceback (most recent call last)" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        head, sep, rest = last.partition(": ")
        text = rest if sep and "." in head and " " not in head else last
    return text


def _describe_os_error(exc: OSError) -> str:
    """``PATH: reason`` for a failed file operation (permission, full disk, a file in the way)."""
    if exc.filename is None:
        return _message(exc)
    where = str(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    reason = exc.strerror or _message(exc)
    hints = {
        errno.EACCES: "no permission to write or read there",
        errno.EPERM: "not permitted there",
        errno.EROFS: "the file system is read-only",
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.ENOTDIR: "a part of this path is a file, not a folder",
    }
    hint = hints.get(exc.errno or 0)
    return f"{where}: {reason}" + (f" ({hint})" if hint else "")


def _debug_requested(args: argparse.Namespace | None) -> bool:
    if os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return bool(getattr(args, "debug", False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions: answer and exit
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    _show_notes()
    # torch.load warns about pickle protocols before refusing a file that is not a checkpoint
    warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        # ``agekit train`` handles Ctrl-C itself once training runs (checkpoint, then exit 130).
        before = " before training began: nothing was written" if args.command == "train" else ""
        err_console.print(f"interrupted{before}", highlight=False)
        return 130
    except Exception as exc:
        if _is_known(exc):
            message, code = _message(exc), 2
        elif isinstance(exc, OSError):  # the file system refused: permissions, a full disk, ...
            message = _describe_os_error(exc)
            code = 2 if isinstance(exc, FileNotFoundError) else 1
            if not _debug_requested(args):
                message += f" (--debug or {DEBUG_VARIABLE}=1 shows the traceback)"
        else:
            raise  # a bug in agekit or a plugin: its traceback is what a report needs
        if _debug_requested(args):
            traceback.print_exc()
        _error(message)
        return code


if __name__ == "__main__":
    sys.exit(main())
