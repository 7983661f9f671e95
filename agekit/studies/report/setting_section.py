"""A setting's section of report.md: every cell's mean with its interval per metric, the primary
metric's values per seed, the tested and the descriptive comparisons, and the setting's figures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from agekit.components import Direction
from agekit.studies.report.summary import ordered_metrics, setting_cells
from agekit.studies.statistics import INTERVAL_METHOD


def setting_section(
    summary: dict[str, Any],
    setting: str,
    directions: Mapping[str, Direction],
    figures: list[str],
) -> list[str]:
    cells = setting_cells(summary, setting)
    keys = [
        k
        for k in ordered_metrics(summary, directions)
        if any(k in e["metrics"] for e in cells.values())
    ]
    lines = [
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
                _ci_text(e["metrics"][key]) if key in e["metrics"] else "-" for e in cells.values()
            )
            + " |"
        )
    lines.append("")
    lines += _primary_lines(summary, setting)
    lines += _comparison_lines(summary, setting, directions)
    for figure in figures:
        lines += [f"![{figure}]({figure})", ""]
    return lines


def _primary_lines(summary: dict[str, Any], setting: str) -> list[str]:
    """The setting's pre-declared primary metric per training seed, one row per cell."""
    primary = (summary.get("primaries") or {}).get(setting)
    if not primary:
        return []
    cells = setting_cells(summary, setting)
    seeds = sorted(
        {int(s) for e in cells.values() for s in e["metrics"].get(primary, {}).get("values", {})}
    )
    lines = [
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
    return lines


def _comparison_lines(
    summary: dict[str, Any], setting: str, directions: Mapping[str, Direction]
) -> list[str]:
    """The setting's tested comparisons (Holm-adjusted, with a verdict) and its descriptive ones
    (unadjusted p), of metrics with a better direction."""
    mine = [
        c
        for c in summary["comparisons"]
        if c["setting"] == setting and directions.get(c["metric"], "reference") != "reference"
    ]
    tested = [c for c in mine if "p_holm" in c]
    descriptive = [c for c in mine if "p_holm" not in c]
    lines: list[str] = []
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


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.4g}"


def _ci_text(stat: dict[str, Any]) -> str:
    low, high = stat["ci95"]
    if math.isnan(low):
        return f"{_fmt(stat['mean'])} (n={stat['n']})"
    return f"{_fmt(stat['mean'])} [{_fmt(low)}, {_fmt(high)}] (n={stat['n']})"
