"""The study report's writers: report.md, summary.json, summary.csv and the closing table.

The numbers come from :mod:`agekit.studies.statistics` (per-cell means with 95 % Student-t
intervals over seeds, paired comparisons, Holm over the pre-declared primaries) and the answer
sentence from :mod:`agekit.studies.answer`, the plots from
:mod:`agekit.studies.figures`; which keys are headline, and which direction is better, from the
metric classes (:func:`headline`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rich.table import Table

from agekit.components import Direction
from agekit.registry import REGISTRY, RegistryError
from agekit.studies.answer import answer, detectability_lines
from agekit.studies.failures import recorded_failures
from agekit.studies.figures import write_figures
from agekit.studies.layout import FAILED_FILE, STUDY_FILE
from agekit.studies.statistics import (
    INTERVAL_METHOD,
    INTERVAL_NOTE,
    PAIRED_METHOD,
    flatten,
    holm_adjust,
    mean_ci,
    paired_comparison,
    summarise,
)
from agekit.studies.tuning import tuning_lines
from agekit.util.atomic import write_json_atomic
from agekit.util.terminal import stream_console

#: Re-exported for callers of the report module (the study runner reads ``flatten``).
__all__ = [
    "HEADLINE",
    "ReportError",
    "flatten",
    "headline",
    "holm_adjust",
    "load_records",
    "mean_ci",
    "paired_comparison",
    "summarise",
    "write_report",
]

console = stream_console()

#: The heading of the section listing the runs whose last attempt failed.
FAILED_HEADING = "## Failed runs"


def headline(metrics: Iterable[str] | None = None) -> dict[str, Direction]:
    """'metric.key' -> the direction that is better ("lower", "higher" or "reference"), in report
    order, for the named metrics (default: every registered metric).

    Each metric class declares its own keys (``Metric.headline``) and where they come
    (``Metric.headline_order``, ties by name), so a plugin metric's headline keys reach reports
    without any change here. A metric that is no longer installed, or is broken, has none.
    """
    names = REGISTRY.available("metric") if metrics is None else sorted(set(metrics))
    declared: list[tuple[int, str, dict[str, Direction]]] = []
    for name in names:
        try:
            component = REGISTRY.load("metric", name)
        except RegistryError:
            continue
        keys = dict(getattr(component, "headline", None) or {})
        if keys:
            declared.append((int(getattr(component, "headline_order", 100)), name, keys))
    return {
        f"{name}.{key}": direction
        for _, name, keys in sorted(declared, key=lambda item: item[:2])
        for key, direction in keys.items()
    }


class _RegisteredHeadline(Mapping[str, Direction]):
    """:func:`headline` of every registered metric, looked up on each use (read-only)."""

    def __getitem__(self, key: str) -> Direction:
        return headline()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(headline())

    def __len__(self) -> int:
        return len(headline())


#: Headline keys of every registered metric, in report order, with the direction that is better.
HEADLINE: Mapping[str, Direction] = _RegisteredHeadline()


def _metric_names(keys: Iterable[str]) -> set[str]:
    return {key.split(".", 1)[0] for key in keys}


def _summary_headline(summary: dict[str, Any]) -> dict[str, Direction]:
    """:func:`headline` of the metrics a summary holds."""
    return headline(
        _metric_names(key for cell in summary["cells"].values() for key in cell["metrics"])
    )


class ReportError(ValueError):
    """A file the report reads is damaged; the message names it."""


def _read_object(path: Path, remedy: str) -> dict[str, Any]:
    """The JSON object in ``path``; ReportError naming the file when it is not one."""
    try:
        value = json.loads(path.read_text())
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise ReportError(f"{path}: not valid JSON ({exc}); {remedy}") from None
    if not isinstance(value, dict):
        raise ReportError(f"{path}: expected a JSON object, found {type(value).__name__}; {remedy}")
    return value


def load_records(folder: Path) -> list[dict[str, Any]]:
    """Every run's eval.json; ReportError naming the first damaged one."""
    return [
        _read_object(path, "delete it and run the study again to re-evaluate that run")
        for path in sorted((folder / "runs").glob("*/eval.json"))
    ]


def _load_study(folder: Path) -> dict[str, Any]:
    """The study.json that ``agekit run`` writes ({} when absent); ReportError when damaged."""
    path = folder / STUDY_FILE
    if not path.exists():
        return {}
    return _read_object(path, "running the study again (agekit run) writes it anew")


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.4g}"


def _ci_text(stat: dict[str, Any]) -> str:
    low, high = stat["ci95"]
    if math.isnan(low):
        return f"{_fmt(stat['mean'])} (n={stat['n']})"
    return f"{_fmt(stat['mean'])} [{_fmt(low)}, {_fmt(high)}] (n={stat['n']})"


def _ordered_metrics(summary: dict[str, Any], directions: Mapping[str, Direction]) -> list[str]:
    present = {key for cell in summary["cells"].values() for key in cell["metrics"]}
    head = [key for key in directions if key in present]
    rest = sorted(key for key in present if key not in directions)
    return head + rest


def write_report(folder: Path) -> dict[str, Any]:
    """report.md, summary.json, summary.csv and the figures of what finished, with a section on
    the planned runs whose last attempt failed (``runs/<run>/failed.json``); the same whether
    ``agekit run`` or ``agekit report`` writes it. Returns the summary, {} when nothing finished."""
    folder = Path(folder)
    study = _load_study(folder)
    every, stale = _planned_records(load_records(folder), study)
    # tuning runs are scored on the validation split: they choose settings, they are not results
    records = [r for r in every if r.get("phase", "final") != "tune"]
    tuned = [r for r in every if r.get("phase") == "tune"]
    failed = _failures(folder, study) + _stale_lines(stale)
    tuning = tuning_lines(study.get("study", {}), tuned)
    if stale:
        console.print(
            f"[yellow]{len(stale)} evaluated run{'s' if len(stale) > 1 else ''} left out of the "
            "report: made with another configuration than the study's plan (listed in report.md)"
            "[/yellow]",
            soft_wrap=True,
        )
    if not records:
        console.print(f"[yellow]no evaluated runs in {folder / 'runs'} yet[/yellow]")
        if failed or tuning:
            name = study.get("study", {}).get("name", folder.name)
            opening = [f"# Study: {name}", "", "No run at the study's seeds finished.", ""]
            text = "\n".join([*opening, *tuning, *failed])
            (folder / "report.md").write_text(text)
            console.print(f"report: {folder / 'report.md'}", highlight=False, soft_wrap=True)
        return {}
    directions = headline(metric for record in records for metric in record["metrics"])
    settings = study.get("study", {}).get("settings", [])
    primaries = {s["name"]: s["primary"] for s in settings if s.get("primary")}
    limits = {s["name"]: (s.get("tuning") or {}).get("at_most", {}) for s in settings}
    summary = summarise(records, directions, primaries)
    summary["answer"] = answer(summary, directions, limits)
    summary["study"] = study.get("study", {}).get("name", folder.name)
    summary["question"] = study.get("study", {}).get("question", "")
    summary["planned_runs"] = study.get("runs", [])
    summary["evaluated_runs"] = sorted(r["run_id"] for r in records)
    # each setting's `metrics` list, in the study's order: the order its columns are shown in
    summary["declared_metrics"] = {
        s["name"]: [m if isinstance(m, str) else m.get("name") for m in s.get("metrics") or []]
        for s in settings
    }
    write_json_atomic(_json_safe(summary), folder / "summary.json")
    _write_csv(summary, folder / "summary.csv")
    figures = write_figures(folder, records, summary, _summary_headline(summary))
    text = _markdown(summary, records, figures, folder, study)
    if tuning:
        head, protocols, tail = text.partition("## Protocols")
        text = "\n".join([head.rstrip("\n"), "", *tuning, ""]) + protocols + tail
    (folder / "report.md").write_text(
        "\n".join([text.rstrip("\n"), "", *failed]) if failed else text
    )
    _print_table(summary, folder / "report.md")
    console.print(f"report: {folder / 'report.md'}")
    return summary


#: The heading of the section listing evaluations left out as made with another configuration.
STALE_HEADING = "## Left out: runs of another configuration"


def _planned_records(
    records: list[dict[str, Any]], study: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The records whose science is the one study.json plans for their run, and run id -> why
    for the others (an edited study's earlier results, or a run no longer planned). Without the
    plan's configurations (a folder written before they were recorded) every record is kept."""
    from agekit.config.changes import science_differences

    configs = study.get("configs")
    if not isinstance(configs, dict):
        return records, {}
    kept, stale = [], {}
    for record in records:
        run_id = str(record.get("run_id"))
        planned = configs.get(run_id, False)
        stored = record.get("config")
        if planned is False:
            stale[run_id] = "not in the study's plan"
        elif not isinstance(planned, dict):
            stale[run_id] = "its cell's tuning has not chosen a configuration yet"
        elif not isinstance(stored, dict):
            stale[run_id] = "its evaluation records no configuration"
        elif changed := science_differences(stored, planned):
            stale[run_id] = f"made with other values of {', '.join(changed)}"
        else:
            kept.append(record)
    return kept, stale


def _stale_lines(stale: dict[str, str]) -> list[str]:
    if not stale:
        return []
    return [
        STALE_HEADING,
        "",
        "These runs' evaluations are not results of the study as planned now, so the report "
        "above leaves them out; `agekit run STUDY --archive` moves them aside and runs the "
        "planned configuration.",
        "",
        *(f"- `{run_id}`: {reason}" for run_id, reason in stale.items()),
        "",
    ]


def _failures(folder: Path, study: dict[str, Any]) -> list[str]:
    """The report's "Failed runs" section (its lines, ending with an empty one), or [] when no
    planned run failed. Planned: the runs study.json lists (all recorded ones without it)."""
    failed = recorded_failures(folder)
    planned = study.get("runs")
    if isinstance(planned, list):
        planned = planned + list(study.get("tuning_runs", []))
        failed = {run_id: reason for run_id, reason in failed.items() if run_id in planned}
    if not failed:
        return []
    several = len(failed) > 1
    lines = [
        FAILED_HEADING,
        "",
        f"{len(failed)} run{'s' if several else ''} failed; the report above leaves "
        f"{'them' if several else 'it'} out. Each error with its traceback is in "
        f"`runs/<run>/{FAILED_FILE}`, the training log in `runs/<run>/metrics.jsonl`; running "
        "the study again retries them (an interrupted training resumes from its checkpoint).",
        "",
    ]
    return [*lines, *(f"- `{run_id}`: {reason}" for run_id, reason in failed.items()), ""]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _write_csv(summary: dict[str, Any], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["setting", "cell", "metric", "n", "mean", "ci95_low", "ci95_high"])
        for cell, entry in summary["cells"].items():
            for key, stat in entry["metrics"].items():
                writer.writerow(
                    [entry["setting"], cell, key, stat["n"], stat["mean"], *stat["ci95"]]
                )


def _short_ci(stat: dict[str, Any]) -> str:
    low, high = stat["ci95"]
    if math.isnan(low):
        return f"{stat['mean']:.3g}"
    return f"{stat['mean']:.3g} [{low:.3g}, {high:.3g}]"


def _print_table(summary: dict[str, Any], report: Path | None = None) -> None:
    """The headline metrics that fit the console's width (80 columns when output is a file), one
    row per cell, never truncating a value; the full table is in report.md.

    A setting's columns come in the order the study chose: its declared primary first, then its
    ``metrics`` list (the summary's ``declared_metrics``), then the rest; what does not fit is
    what the study cares least about."""
    declared = summary.get("declared_metrics") or {}
    directions = _summary_headline(summary)
    keys = [k for k in _ordered_metrics(summary, directions) if directions.get(k) != "reference"]
    keys = [k for k in keys if k in directions]
    primaries = summary.get("primaries") or {}
    for setting in sorted({e["setting"] for e in summary["cells"].values()}):
        cells = {c: e for c, e in summary["cells"].items() if e["setting"] == setting}
        primary = primaries.get(setting)
        candidates = keys if primary is None or primary in keys else [primary, *keys]
        shown = [k for k in candidates if any(k in e["metrics"] for e in cells.values())]
        order = list(declared.get(setting, ()))

        def rank(key: str, order: list[str] = order, primary: str | None = primary) -> int:
            name = key.split(".", 1)[0]
            return -1 if key == primary else order.index(name) if name in order else len(order)

        shown.sort(key=rank)  # stable: a metric's own keys keep their headline order
        parts = {cell: cell.removeprefix(setting + "__").split("__") for cell in cells}
        # One axis: its values alone ("gaussian-kl"), the title being enough; several: each value
        # with its key ("latent_weight=125.0, k=3"), or rows could not be told apart.
        several = any(len(p) > 1 for p in parts.values())
        labels = {
            cell: ", ".join(p if several else p.split("=", 1)[-1] for p in parts[cell])
            for cell in cells
        }
        texts = {
            (cell, k): _short_ci(e["metrics"][k]) if k in e["metrics"] else "-"
            for cell, e in cells.items()
            for k in shown
        }
        budget = console.width - max(len(label) for label in labels.values()) - 4
        fitting: list[str] = []
        for key in shown:
            width = max(len(key.split(".", 1)[1]), *(len(texts[c, key]) for c in cells)) + 3
            if width > budget:
                break
            fitting.append(key)
            budget -= width
        seeds = sorted(
            {e["metrics"][k]["n"] for e in cells.values() for k in fitting if k in e["metrics"]}
        )
        table = Table(
            title=f"{summary['study']}: {setting}, mean [95% interval] over "
            f"{'/'.join(map(str, seeds))} seeds"
        )
        table.add_column("cell", no_wrap=True)
        for key in fitting:
            table.add_column(key.split(".", 1)[1], no_wrap=True)
        for cell in cells:
            table.add_row(labels[cell], *[texts[cell, k] for k in fitting])
        console.print(table, crop=False)
        if len(fitting) < len(shown):
            where = f" in {report}" if report is not None else " in report.md"
            console.print(f"{len(shown) - len(fitting)} more metrics{where}", soft_wrap=True)


def _markdown(
    summary: dict[str, Any],
    records: list[dict[str, Any]],
    figures: dict[str, list[str]],
    folder: Path,
    study: dict[str, Any] | None = None,
) -> str:
    directions = _summary_headline(summary)
    lines = [f"# Study: {summary['study']}", ""]
    if summary["question"]:
        lines += [f"**Question.** {summary['question']}", ""]
    missing = sorted(set(summary["planned_runs"]) - set(summary["evaluated_runs"]))
    lines += [
        f"{len(summary['evaluated_runs'])} runs evaluated"
        + (
            f"; {len(missing)} planned runs not evaluated yet: {', '.join(missing)}"
            if missing
            else ""
        )
        + ".",
        "",
    ]
    if summary.get("answer"):
        lines += ["## Answer", "", summary["answer"], ""]
    lines += _statistics_lines(summary)
    for setting in sorted({e["setting"] for e in summary["cells"].values()}):
        cells = {c: e for c, e in summary["cells"].items() if e["setting"] == setting}
        keys = [
            k
            for k in _ordered_metrics(summary, directions)
            if any(k in e["metrics"] for e in cells.values())
        ]
        lines += [
            f"## {setting}",
            "",
            f"Mean [{INTERVAL_METHOD}] (n = seeds):",
            "",
            "| metric | " + " | ".join(c.removeprefix(setting + "__") for c in cells) + " |",
            "|---|" + "---|" * len(cells),
        ]
        for key in keys:
            direction = directions.get(key, "")
            label = f"{key} ({direction} is better)" if direction in ("lower", "higher") else key
            lines.append(
                f"| {label} | "
                + " | ".join(
                    _ci_text(e["metrics"][key]) if key in e["metrics"] else "-"
                    for e in cells.values()
                )
                + " |"
            )
        lines.append("")
        lines += _comparison_lines(summary, setting, directions)
        for figure in figures.get(setting, []):
            lines += [f"![{figure}]({figure})", ""]
    references = study.get("study", {}).get("references", []) if study else []
    if references:
        lines += [
            "## Published numbers (quoted, not re-measured)",
            "",
            "| method | setting | values | source |",
            "|---|---|---|---|",
        ]
        for ref in references:
            values = ", ".join(f"{k} {v}" for k, v in ref["values"].items())
            note = f" ({ref['note']})" if ref.get("note") else ""
            lines.append(
                f"| {ref['method']} | {ref['setting']} | {values} | {ref['source']}{note} |"
            )
        lines.append("")
    lines += ["## Protocols", ""]
    protocols: dict[str, Any] = {}
    for record in records:
        for metric, values in record["metrics"].items():
            protocols.setdefault(metric, values.get("protocol"))
    for metric, protocol in protocols.items():
        lines += [f"- **{metric}**: `{json.dumps(protocol, sort_keys=True)}`"]
    from agekit.runs.provenance import PROVENANCE_KEY, describe

    # Every distinct set of versions the plan and the runs were made with: runs resumed under a
    # newer agekit show up as a second line rather than being hidden.
    made_with = [r.get(PROVENANCE_KEY) for r in [study or {}, *records]]
    for text in dict.fromkeys(describe(p) for p in made_with if isinstance(p, dict)):
        lines += [f"- **versions**: {text}"]
    lines += [
        "",
        "Each run's checkpoint, configuration, training log and evaluation are in "
        f"`{folder / 'runs'}/<run>/`.",
        "",
    ]
    return "\n".join(lines)


def _statistics_lines(summary: dict[str, Any]) -> list[str]:
    """How the numbers below were computed, and what the primary tests could detect."""
    primaries = summary.get("primaries") or {}
    family = sum(1 for c in summary["comparisons"] if "p_holm" in c)
    if primaries:
        declared = ", ".join(f"{s}: `{k}`" for s, k in sorted(primaries.items()))
        holm = (
            f"Holm's adjustment runs over the {family} comparisons of the pre-declared primary "
            f"metrics ({declared}); every other comparison is descriptive: its p-value is "
            "unadjusted and carries no verdict."
        )
    else:
        holm = (
            f"No primary metric is declared, so Holm's adjustment runs over all {family} "
            "comparisons of metrics with a better direction, a wide family that few differences "
            "survive at a handful of seeds."
        )
    lines = [
        "## Statistics",
        "",
        f"Each cell shows the mean over training seeds with a {INTERVAL_METHOD} and its n; "
        f"{INTERVAL_NOTE}. Comparisons between cells: {PAIRED_METHOD}; the interval excludes 0 "
        f"exactly when p < 0.05. {holm}",
        "",
    ]
    tested = {c["setting"] for c in summary["comparisons"] if c.get("primary")}
    for setting, key in sorted(primaries.items()):
        if setting not in tested:
            lines += [
                f"The declared primary `{key}` of {setting} has no comparison: no two cells "
                "measured it at shared seeds (check the key against the tables below).",
                "",
            ]
    detectable = detectability_lines(summary)
    if detectable:
        lines += ["What the primary tests could detect at this n:", "", *detectable, ""]
    return lines


def _comparison_lines(
    summary: dict[str, Any], setting: str, directions: Mapping[str, Direction]
) -> list[str]:
    """A setting's per-seed primary values, its tested comparisons and descriptive ones."""
    mine = [
        c
        for c in summary["comparisons"]
        if c["setting"] == setting and directions.get(c["metric"], "reference") != "reference"
    ]
    tested = [c for c in mine if "p_holm" in c]
    descriptive = [c for c in mine if "p_holm" not in c]
    lines: list[str] = []
    primary = (summary.get("primaries") or {}).get(setting)
    cells = {c: e for c, e in summary["cells"].items() if e["setting"] == setting}
    if primary:
        seeds = sorted(
            {
                int(s)
                for e in cells.values()
                for s in e["metrics"].get(primary, {}).get("values", {})
            }
        )
        lines += [
            f"**Primary metric** (pre-declared): `{primary}`, per training seed:",
            "",
            "| cell | " + " | ".join(f"seed {s}" for s in seeds) + " |",
            "|---|" + "---|" * len(seeds),
        ]
        for cell, entry in cells.items():
            values = entry["metrics"].get(primary, {}).get("values", {})
            lines.append(
                f"| {cell.removeprefix(setting + '__')} | "
                + " | ".join(_fmt(values[str(s)]) if str(s) in values else "-" for s in seeds)
                + " |"
            )
        lines.append("")
    for title, rows, adjusted in (
        ("Tested comparisons (Holm-adjusted)", tested, True),
        ("Descriptive comparisons (unadjusted p, no verdict)", descriptive, False),
    ):
        if not rows:
            continue
        header = "| metric | a | b | mean diff a − b [95% t interval] (n pairs) | p |"
        header += " p_holm | verdict |" if adjusted else ""
        lines += [f"**{title}**:", "", header, "|---" * (7 if adjusted else 5) + "|"]
        for c in rows:
            row = (
                f"| {c['metric']} | {c['a'].removeprefix(setting + '__')} | "
                f"{c['b'].removeprefix(setting + '__')} | {_fmt(c['mean_diff'])} "
                f"[{_fmt(c['low'])}, {_fmt(c['high'])}] (n={c['n_pairs']}) | {_fmt(c['p_value'])} |"
            )
            if adjusted:
                row += f" {_fmt(c['p_holm'])} | {_verdict(c)} |"
            lines.append(row)
        lines.append("")
    return lines


def _verdict(comparison: dict[str, Any]) -> str:
    p = comparison.get("p_holm", math.nan)
    if comparison["n_pairs"] < 2 or math.isnan(p):
        return "too few seeds to test"
    return "differ (p < 0.05)" if p < 0.05 else "no significant difference"
