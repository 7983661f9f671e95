"""The study-wide sections of report.md, each a list of lines that ends with an empty one (or no
lines at all): the opening, the answer, the statistics, the published numbers, the protocols,
and the runs left out (failed, or made with another configuration)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agekit.runs.layout import METRICS, RUNS
from agekit.runs.provenance import PROVENANCE_KEY, describe
from agekit.studies.answer import detectability_lines
from agekit.studies.failures import recorded_failures
from agekit.studies.layout import FAILED_FILE
from agekit.studies.statistics import INTERVAL_METHOD, INTERVAL_NOTE, PAIRED_METHOD

#: The heading of the section listing the runs whose last attempt failed.
FAILED_HEADING = "## Failed runs"
#: The heading of the section listing evaluations left out as made with another configuration.
STALE_HEADING = "## Left out: runs of another configuration"


def opening(summary: dict[str, Any]) -> list[str]:
    """The title, the question and how many of the planned runs were evaluated."""
    lines = [f"# Study: {summary['study']}", ""]
    if summary["question"]:
        lines += [f"**Question.** {summary['question']}", ""]
    missing = sorted(set(summary["planned_runs"]) - set(summary["evaluated_runs"]))
    not_yet = f"; {len(missing)} planned runs not evaluated yet: {', '.join(missing)}"
    lines += [f"{len(summary['evaluated_runs'])} runs evaluated{not_yet if missing else ''}.", ""]
    return lines


def unfinished_opening(name: str) -> list[str]:
    """The opening of a report without any evaluated run at the study's seeds."""
    return [f"# Study: {name}", "", "No run at the study's seeds finished.", ""]


def answer_section(summary: dict[str, Any]) -> list[str]:
    return ["## Answer", "", summary["answer"], ""] if summary.get("answer") else []


def statistics_section(summary: dict[str, Any]) -> list[str]:
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


def references_section(study: dict[str, Any]) -> list[str]:
    """The published numbers the study quotes beside its own, with their sources."""
    references = study.get("study", {}).get("references", [])
    if not references:
        return []
    lines = [
        "## Published numbers (quoted, not re-measured)",
        "",
        "| method | setting | values | source |",
        "|---|---|---|---|",
    ]
    for ref in references:
        values = ", ".join(f"{k} {v}" for k, v in ref["values"].items())
        note = f" ({ref['note']})" if ref.get("note") else ""
        lines.append(f"| {ref['method']} | {ref['setting']} | {values} | {ref['source']}{note} |")
    lines.append("")
    return lines


def protocols_section(
    records: list[dict[str, Any]], study: dict[str, Any], folder: Path
) -> list[str]:
    """Each metric's protocol, the versions the plan and the runs were made with, and where each
    run's files are."""
    lines = ["## Protocols", ""]
    protocols: dict[str, Any] = {}
    for record in records:
        for metric, values in record["metrics"].items():
            protocols.setdefault(metric, values.get("protocol"))
    for metric, protocol in protocols.items():
        lines += [f"- **{metric}**: `{json.dumps(protocol, sort_keys=True)}`"]
    # Every distinct set of versions the plan and the runs were made with: runs resumed under a
    # newer agekit show up as a second line rather than being hidden.
    made_with = [r.get(PROVENANCE_KEY) for r in [study, *records]]
    for text in dict.fromkeys(describe(p) for p in made_with if isinstance(p, dict)):
        lines += [f"- **versions**: {text}"]
    lines += [
        "",
        "Each run's checkpoint, configuration, training log and evaluation are in "
        f"`{folder / RUNS}/<run>/`.",
        "",
    ]
    return lines


def failed_section(folder: Path, study: dict[str, Any]) -> list[str]:
    """The runs whose last attempt failed, or [] when no planned run failed. Planned: the runs
    study.json lists (all recorded ones without it)."""
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
        f"`{RUNS}/<run>/{FAILED_FILE}`, the training log in `{RUNS}/<run>/{METRICS}`; running "
        "the study again retries them (an interrupted training resumes from its checkpoint).",
        "",
    ]
    return [*lines, *(f"- `{run_id}`: {reason}" for run_id, reason in failed.items()), ""]


def stale_section(stale: dict[str, str]) -> list[str]:
    """The evaluations left out as made with another configuration than the plan's, with why."""
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
