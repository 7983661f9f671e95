"""report.md, summary.json, summary.csv and the figures of what a study folder's runs hold, and
the table printed at the end; the same whether ``agekit run`` or ``agekit report`` writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agekit.runs.layout import RUNS
from agekit.studies.figures import write_figures
from agekit.studies.layout import REPORT_FILE
from agekit.studies.report.closing_table import console, print_table
from agekit.studies.report.records import load_records, load_study, planned_records
from agekit.studies.report.sections import (
    answer_section,
    failed_section,
    opening,
    protocols_section,
    references_section,
    stale_section,
    statistics_section,
    unfinished_opening,
)
from agekit.studies.report.setting_section import setting_section
from agekit.studies.report.summary import (
    settings_of,
    study_summary,
    summary_headline,
    write_summary,
)
from agekit.studies.report.tuning_section import tuning_section


def write_report(folder: Path) -> dict[str, Any]:
    """report.md, summary.json, summary.csv and the figures of what finished, with a section on
    the planned runs whose last attempt failed (``runs/<run>/failed.json``); the same whether
    ``agekit run`` or ``agekit report`` writes it. Returns the summary, {} when nothing finished."""
    folder = Path(folder)
    study = load_study(folder)
    every, stale = planned_records(load_records(folder), study)
    # tuning runs are scored on the validation split: they choose settings, they are not results
    records = [r for r in every if r.get("phase", "final") != "tune"]
    tuned = [r for r in every if r.get("phase") == "tune"]
    left_out = failed_section(folder, study) + stale_section(stale)
    tuning = tuning_section(study.get("study", {}), tuned)
    if stale:
        console.print(
            f"[yellow]{len(stale)} evaluated run{'s' if len(stale) > 1 else ''} left out of the "
            "report: made with another configuration than the study's plan (listed in report.md)"
            "[/yellow]",
            soft_wrap=True,
        )
    report = folder / REPORT_FILE
    if not records:
        console.print(f"[yellow]no evaluated runs in {folder / RUNS} yet[/yellow]")
        if left_out or tuning:
            name = study.get("study", {}).get("name", folder.name)
            report.write_text(_join([unfinished_opening(name), tuning, left_out]))
            console.print(f"report: {report}", highlight=False, soft_wrap=True)
        return {}
    summary = study_summary(records, study, folder)
    write_summary(summary, folder)
    directions = summary_headline(summary)
    figures = write_figures(folder, records, summary, directions)
    sections = [
        opening(summary),
        answer_section(summary),
        statistics_section(summary),
        *(
            setting_section(summary, setting, directions, figures.get(setting, []))
            for setting in settings_of(summary)
        ),
        references_section(study),
        tuning,
        protocols_section(records, study, folder),
        left_out,
    ]
    report.write_text(_join(sections))
    print_table(summary, report)
    console.print(f"report: {report}")
    return summary


def _join(sections: list[list[str]]) -> str:
    """The sections' lines as one text; each section ends with an empty line, or has none."""
    return "\n".join(line for section in sections for line in section)
