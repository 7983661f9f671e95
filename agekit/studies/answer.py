"""A study's answer in words, produced from its adjusted tests and nothing else.

The sentence that heads a report (and that README quotes; a test holds README to it) states a
difference only where the pre-declared primary comparison survives Holm's adjustment, and says
otherwise what size of difference the study could have seen at its n. Read it beside the report's
"Statistics" section, which states the methods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from agekit.studies.statistics import LEVEL

__all__ = ["ALPHA", "answer", "detectability_lines", "primary_comparisons"]

#: Family-wise error rate of the primary comparisons.
ALPHA = round(1 - LEVEL, 10)


def primary_comparisons(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparisons of the pre-declared primaries, in setting order."""
    return [c for c in summary["comparisons"] if c.get("primary")]


def _cell_name(cell: str, setting: str) -> str:
    """'mnist5k__divergence=gaussian-kl' -> 'gaussian-kl' (axis values only)."""
    return ", ".join(p.split("=", 1)[-1] for p in cell.removeprefix(setting + "__").split("__"))


def _limits_note(
    summary: dict[str, Any], comparison: dict[str, Any], limits: Mapping[str, float]
) -> str:
    """Which compared cell's final mean breaks a limit its tuning imposed (empty when none)."""
    broken = []
    for cell in (comparison["a"], comparison["b"]):
        metrics = summary["cells"][cell]["metrics"]
        for key, bound in limits.items():
            if key in metrics and metrics[key]["mean"] > bound:
                name = _cell_name(cell, comparison["setting"])
                broken.append(f"{name}'s mean {key} {metrics[key]['mean']:.3g} exceeds {bound:g}")
    return f" ({'; '.join(broken)})" if broken else ""


def answer(
    summary: dict[str, Any],
    directions: Mapping[str, str],
    limits: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    """One sentence per study: per setting, the primary comparison's outcome after Holm.

    ``limits`` maps a setting to the ``at_most`` limits its tuning imposed; a cell whose final
    mean breaks one is named. Empty when the study declares no primary.
    """
    parts = []
    found = 0
    for c in primary_comparisons(summary):
        setting, metric = c["setting"], c["metric"]
        a, b = _cell_name(c["a"], setting), _cell_name(c["b"], setting)
        mean_a = summary["cells"][c["a"]]["metrics"][metric]["mean"]
        mean_b = summary["cells"][c["b"]]["metrics"][metric]["mean"]
        p = c.get("p_holm", math.nan)
        note = _limits_note(summary, c, (limits or {}).get(setting, {}))
        where = f"Holm-adjusted p = {p:.2g}, n = {c['n_pairs']} seeds"
        direction = directions.get(metric)
        if math.isnan(p) or direction not in ("lower", "higher"):
            why = "no better direction" if direction not in ("lower", "higher") else "too few"
            parts.append(f"on {setting}, {metric} could not be tested ({why}: {a} against {b})")
        elif p < ALPHA:
            found += 1
            # the paired mean difference a - b decides, as the test does
            a_better = (c["mean_diff"] < 0) == (direction == "lower")
            better, worse = (a, b) if a_better else (b, a)
            best, rest = (mean_a, mean_b) if a_better else (mean_b, mean_a)
            parts.append(
                f"on {setting}, {better} has the better {metric} ({best:.3g} against "
                f"{worse}'s {rest:.3g}; {where}){note}"
            )
        else:
            detectable = c.get("detectable_80", math.nan)
            unseen = (
                f"; differences smaller than about {detectable:.3g} would likely go unseen"
                if math.isfinite(detectable)
                else ""
            )
            parts.append(
                f"on {setting}, no significant difference in {metric} ({a} {mean_a:.3g}, "
                f"{b} {mean_b:.3g}; {where}{unseen}){note}"
            )
    if not parts:
        return ""
    if found == 0:
        opening = "No difference survives the adjustment"
    elif found == len(parts):
        opening = "Every primary comparison finds a difference"
    else:
        opening = f"{found} of {len(parts)} primary comparisons find a difference"
    return f"{opening}: " + "; ".join(parts) + "."


def detectability_lines(summary: dict[str, Any]) -> list[str]:
    """What each primary test could and could not detect at the study's n."""
    lines = []
    for c in primary_comparisons(summary):
        alpha = ALPHA / max(c.get("family_size", 1), 1)
        detectable = c.get("detectable_80", math.nan)
        if not math.isfinite(detectable):
            lines.append(
                f"- {c['setting']}, `{c['metric']}`: n = {c['n_pairs']} pairs; the power cannot "
                "be computed (fewer than two pairs or no spread)."
            )
            continue
        lines.append(
            f"- {c['setting']}, `{c['metric']}`: n = {c['n_pairs']} pairs, standard deviation "
            f"of the paired differences {c['sd_diff']:.3g}. At alpha = {alpha:.3g} (Holm's "
            f"strictest step) the test has 80 % power for a true difference of {detectable:.3g} "
            "or more; a smaller one would more likely than not go unseen. The observed "
            f"difference was {c['mean_diff']:.3g}."
        )
    return lines
