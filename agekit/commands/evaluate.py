"""``agekit evaluate``: score one trained run with registered metrics, outside a study."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from agekit.commands.shared import UsageError, blocking_file, console


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


def cmd_evaluate(args: argparse.Namespace) -> int:
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
    blocker = blocking_file(list(out.parents))
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
