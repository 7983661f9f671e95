"""The table a report ends with on the console: per setting, one row per cell and the headline
metrics that fit the console's width, never a value cut; the full table is in report.md."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.table import Table

from agekit.studies.report.summary import (
    ordered_metrics,
    setting_cells,
    settings_of,
    summary_headline,
)
from agekit.util.terminal import stream_console

console = stream_console()


def print_table(summary: dict[str, Any], report: Path | None = None) -> None:
    """The headline metrics that fit the console's width (80 columns when output is a file), one
    row per cell, never truncating a value; the full table is in report.md.

    A setting's columns come in the order the study chose: its declared primary first, then its
    ``metrics`` list (the summary's ``declared_metrics``), then the rest; what does not fit is
    what the study cares least about."""
    directions = summary_headline(summary)
    keys = [k for k in ordered_metrics(summary, directions) if directions.get(k) != "reference"]
    keys = [k for k in keys if k in directions]
    for setting in settings_of(summary):
        cells = setting_cells(summary, setting)
        shown = _columns(summary, setting, cells, keys)
        labels = _row_labels(setting, cells)
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


def _columns(
    summary: dict[str, Any], setting: str, cells: dict[str, dict[str, Any]], keys: list[str]
) -> list[str]:
    """The setting's headline keys that a cell measured: its primary first, then the metrics of
    its ``metrics`` list in that order, then the rest."""
    declared = summary.get("declared_metrics") or {}
    primary = (summary.get("primaries") or {}).get(setting)
    candidates = keys if primary is None or primary in keys else [primary, *keys]
    shown = [k for k in candidates if any(k in e["metrics"] for e in cells.values())]
    order = list(declared.get(setting, ()))

    def rank(key: str) -> int:
        name = key.split(".", 1)[0]
        return -1 if key == primary else order.index(name) if name in order else len(order)

    shown.sort(key=rank)  # stable: a metric's own keys keep their headline order
    return shown


def _row_labels(setting: str, cells: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each cell's row label. One axis: its values alone ("gaussian-kl"), the title being enough;
    several: each value with its key ("latent_weight=125.0, k=3"), or rows could not be told
    apart."""
    parts = {cell: cell.removeprefix(setting + "__").split("__") for cell in cells}
    several = any(len(p) > 1 for p in parts.values())
    return {
        cell: ", ".join(p if several else p.split("=", 1)[-1] for p in parts[cell])
        for cell in cells
    }


def _short_ci(stat: dict[str, Any]) -> str:
    low, high = stat["ci95"]
    if math.isnan(low):
        return f"{stat['mean']:.3g}"
    return f"{stat['mean']:.3g} [{low:.3g}, {high:.3g}]"
