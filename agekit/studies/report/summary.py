"""The numbers a report keeps: per cell and metric the mean with its interval, the comparisons,
the answer sentence and what the study planned, written as summary.json and summary.csv."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agekit.components import Direction
from agekit.studies.answer import answer
from agekit.studies.headline import headline
from agekit.studies.layout import SUMMARY_CSV, SUMMARY_JSON
from agekit.studies.statistics import summarise
from agekit.util.atomic import write_json_atomic


def study_summary(
    records: list[dict[str, Any]], study: dict[str, Any], folder: Path
) -> dict[str, Any]:
    """The summary of ``records`` (the runs at the study's seeds) under study.json's plan: its
    primaries decide Holm's family, its tunings' limits are named in the answer."""
    directions = headline(metric for record in records for metric in record["metrics"])
    plan = study.get("study", {})
    settings = plan.get("settings", [])
    primaries = {s["name"]: s["primary"] for s in settings if s.get("primary")}
    limits = {s["name"]: (s.get("tuning") or {}).get("at_most", {}) for s in settings}
    summary = summarise(records, directions, primaries, plan.get("compare_to"))
    summary["answer"] = answer(summary, directions, limits)
    summary["study"] = plan.get("name", folder.name)
    summary["question"] = plan.get("question", "")
    summary["planned_runs"] = study.get("runs", [])
    summary["evaluated_runs"] = sorted(r["run_id"] for r in records)
    # each setting's `metrics` list, in the study's order: the order its columns are shown in
    summary["declared_metrics"] = {
        s["name"]: [m if isinstance(m, str) else m.get("name") for m in s.get("metrics") or []]
        for s in settings
    }
    return summary


def write_summary(summary: dict[str, Any], folder: Path) -> None:
    """summary.json (NaN written as null) and summary.csv, one row per cell and metric key."""
    write_json_atomic(_json_safe(summary), folder / SUMMARY_JSON)
    with (folder / SUMMARY_CSV).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["setting", "cell", "metric", "n", "mean", "ci95_low", "ci95_high"])
        for cell, entry in summary["cells"].items():
            for key, stat in entry["metrics"].items():
                writer.writerow(
                    [entry["setting"], cell, key, stat["n"], stat["mean"], *stat["ci95"]]
                )


def summary_headline(summary: dict[str, Any]) -> dict[str, Direction]:
    """:func:`agekit.studies.headline.headline` of the metrics a summary holds."""
    return headline(
        _metric_names(key for cell in summary["cells"].values() for key in cell["metrics"])
    )


def ordered_metrics(summary: dict[str, Any], directions: Mapping[str, Direction]) -> list[str]:
    """Every 'metric.key' the summary holds: the headline keys in report order, then the rest."""
    present = {key for cell in summary["cells"].values() for key in cell["metrics"]}
    head = [key for key in directions if key in present]
    rest = sorted(key for key in present if key not in directions)
    return head + rest


def settings_of(summary: dict[str, Any]) -> list[str]:
    return sorted({entry["setting"] for entry in summary["cells"].values()})


def setting_cells(summary: dict[str, Any], setting: str) -> dict[str, dict[str, Any]]:
    return {c: e for c, e in summary["cells"].items() if e["setting"] == setting}


def _metric_names(keys: Iterable[str]) -> set[str]:
    return {key.split(".", 1)[0] for key in keys}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
