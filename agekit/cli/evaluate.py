"""``agekit evaluate``: score one trained run with registered metrics, outside a study."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from agekit.cli.shared import UsageError, blocking_file, console
from agekit.runs.layout import CHECKPOINTS, RUNS, RunFolder

if TYPE_CHECKING:
    from agekit.config import Component


def _run_folder(run: Path) -> RunFolder:
    """The run folder of ``agekit evaluate``'s argument: the folder, or a checkpoint's run (the
    folder the checkpoint is in, when that is not a run's ``checkpoints`` folder)."""
    if run.is_dir():
        return RunFolder(run)
    return RunFolder(run.parent.parent if run.parent.name == CHECKPOINTS else run.parent)


def _study_protocol(run: Path) -> tuple[list[Component], int, Path] | None:
    """The metrics and evaluation seed the study that trained ``run`` scored it with, and the
    study's record; None when ``run`` is not a run of a study folder (``STUDY/runs/RUN_ID``).

    Scoring an earlier checkpoint of a study's run this way puts it on the same scale as the
    study's report (the same metric options, the same evaluation seed)."""
    import json

    from agekit.studies.layout import STUDY_FILE, run_dir
    from agekit.studies.spec import StudySpec, plan

    folder = _run_folder(run).root
    study_file = folder.parent.parent / STUDY_FILE
    if folder.parent.name != RUNS or not study_file.is_file():
        return None
    try:
        study = json.loads(study_file.read_text())
        spec = StudySpec.model_validate(study["study"])
        source = str(study["source"])
        profile = study.get("profile")
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"{study_file}: not a study record agekit can read ({exc}); "
            "name metrics with --metric and give --seed"
        ) from None
    for planned in plan(spec, source, study_file.parent, profile, check=False):
        if run_dir(study_file.parent, planned).name == folder.name:
            return list(planned.metrics), spec.eval_seed, study_file
    return None


def _default_metric_names(run: Path, checkpoint: Path) -> list[str]:
    """The metrics a study would run on this run's data (its saved configuration decides)."""
    import json

    from agekit.config import parse_config
    from agekit.evaluation.scoring import default_metrics
    from agekit.registry import REGISTRY
    from agekit.runs import checkpoint as ckpt
    from agekit.runs.provenance import PROVENANCE_KEY

    saved = _run_folder(run).config
    if saved.is_file():
        try:
            raw = json.loads(saved.read_text())
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{saved}: not valid JSON ({exc}); name metrics with --metric"
            ) from None
        source = str(saved)
        raw.pop(PROVENANCE_KEY, None)  # written beside the configuration, not part of it
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
    from agekit.config import Component
    from agekit.evaluation.scoring import evaluate, write_json_atomic
    from agekit.registry import REGISTRY
    from agekit.runs import checkpoint as ckpt

    run = Path(args.run)
    if not run.exists():
        raise UsageError(f"{run}: no such run folder or checkpoint file")
    # A damaged newest checkpoint is skipped with a warning, as resume skips it.
    checkpoint, _ = ckpt.load_resolved(run)
    study = None if args.metric else _study_protocol(run)
    if args.metric:
        metrics = [Component(name=name) for name in args.metric]
    elif study is not None:
        metrics = study[0]
    else:
        metrics = [Component(name=name) for name in _default_metric_names(run, checkpoint)]
    seed = args.seed if args.seed is not None else (study[1] if study is not None else 0)
    names = [metric.name for metric in metrics]
    for name in names:
        REGISTRY.load("metric", name)  # an unknown name fails here, before any work
    out = Path(args.out) if args.out else _run_folder(run).evaluation
    blocker = blocking_file(list(out.parents))
    if out.is_dir() or blocker is not None:
        why = "is a folder" if blocker is None else f"{blocker} is a file, not a folder"
        raise UsageError(f"{out}: {why}; expected a JSON file name")
    console.print(
        f"[bold]agekit evaluate[/bold] {escape(str(checkpoint))}: {', '.join(names)}, seed {seed}"
        + (f" (as {escape(str(study[2]))} scores this run)" if study is not None else ""),
        highlight=False,
    )
    try:
        record = evaluate(
            checkpoint,
            metrics,
            seed=seed,
            device=args.device,
            batchnorm=args.batchnorm,
        )
    except ValueError as exc:
        raise UsageError(f"{checkpoint}: {exc}") from None
    record["run"] = str(_run_folder(run).root)
    table = Table(title=f"{_run_folder(run).root.name} at step {record['step']}")
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
