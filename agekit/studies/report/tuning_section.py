"""The tuning section of report.md: per tuned cell, every trial's validation scores (per rung
under successive halving), the choice, and any chosen value at the edge of what was searched."""

from __future__ import annotations

from typing import Any

from agekit.studies.schema import StudySpec
from agekit.studies.tuning import (
    SHORT_RUNG_MARK,
    Point,
    Tuning,
    choose,
    promoted,
    trial_scores,
)


def tuning_section(study: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """The report's tuning section: per tuned cell, every trial's validation scores (per rung),
    the choice and any chosen value at the edge of its range (empty when nothing is tuned)."""
    settings = {s["name"]: s for s in study.get("settings", []) if s.get("tuning")}
    if not settings:
        return []
    lines = [
        "## Tuning on the validation split",
        "",
        "Each tuned cell tried the same trials at the same tuning seeds, scored on a validation "
        "split held out of the train split (the test split never took part); the chosen trial, "
        "marked, is what the cell's runs above used.",
        "",
    ]
    spec = StudySpec.model_validate(study)
    for name in settings:
        setting = next(s for s in spec.settings if s.name == name)
        assert setting.tuning is not None
        lines += [f"### {name}", "", _search_text(setting.tuning), ""]
        cells = sorted({r["tunes"] for r in records if r.get("setting") == name and r.get("tunes")})
        for cell in cells:
            mine = [r for r in records if r.get("tunes") == cell]
            tuning = spec.cell_tuning(setting, tuple(mine[0].get("axes", {}).items()))
            assert tuning is not None
            if tuning.space != setting.tuning.space or tuning.grid != setting.tuning.grid:
                lines += [f"{cell.split('__', 1)[-1]}'s own search: {_search_text(tuning)}", ""]
            lines += _cell_lines(tuning, cell, mine)
    for setting in spec.settings:
        if setting.tuned_by is not None:
            lines += [
                f"### {setting.name}",
                "",
                f"No search of its own: each cell runs the trial the same cell of "
                f"{setting.tuned_by} chose, at this setting's budget.",
                "",
            ]
    return lines


def _search_text(tuning: Tuning) -> str:
    if tuning.grid:
        searched = "Grid (every combination): " + ", ".join(
            f"`{k}` in {v}" for k, v in tuning.grid.items()
        )
    else:
        ranges = ", ".join(
            f"`{k}` in [{r.low:g}, {r.high:g}]{' (log)' if r.log else ''}"
            for k, r in tuning.space.items()
        )
        searched = (
            f"{tuning.trials} trials (optuna QMCSampler, scrambled Sobol, seed "
            f"{tuning.sampler_seed}) over {ranges}"
        )
    limits = "".join(f", mean `{k}` at most {v:g}" for k, v in tuning.at_most.items())
    halving = (
        f" Successive halving: every trial first trains {tuning.halving.steps} iterations; the "
        f"best {tuning.promoted_count()} by that score train the full budget, which alone chooses."
        if tuning.halving
        else ""
    )
    return (
        f"{searched}; tuning seeds {tuning.seeds}; chosen by the {tuning.goal}imum mean "
        f"`{tuning.metric}`{limits}; validation fraction {tuning.validation_fraction:g}.{halving}"
    )


def _cell_lines(tuning: Tuning, cell: str, mine: list[dict[str, Any]]) -> list[str]:
    trials = tuning.points()

    def records(rung: str, labels: list[str]) -> dict[str, list[dict[str, Any] | None]]:
        table: dict[str, list[dict[str, Any] | None]] = {}
        for label in labels:
            point = dict(trials)[label]
            found: list[dict[str, Any] | None] = [
                r
                for r in mine
                if _same_point(r.get("grid", {}), point) and r.get("rung", "") == rung
            ]
            table[label] = found + [None] * (len(tuning.seeds) - len(found))
        return table

    labels = [label for label, _ in trials]
    short = records(SHORT_RUNG_MARK, labels) if tuning.halving else {}
    going_on = promoted(tuning, short) if tuning.halving else labels
    deciding = records("", going_on) if going_on else {}
    choice = choose(tuning, deciding, dict(trials)) if deciding else None
    short_scores = trial_scores(tuning, short)
    final = choice.table if choice else trial_scores(tuning, deciding)
    header = ["trial", *(k.split(".")[-1] for k in tuning.keys)]
    if tuning.halving:
        header.append(f"{tuning.metric} at {tuning.halving.steps} its (mean, n)")
    header += [f"{tuning.metric} (mean, n)", *tuning.at_most, "chosen"]
    lines = [
        f"**{cell.split('__', 1)[-1]}**" + ("" if choice else " (tuning not finished)"),
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    for label, point in trials:
        row = [label if tuning.space else label.replace("__", ", ")]
        row += [f"{value:.4g}" if isinstance(value, float) else str(value) for _, value in point]
        if tuning.halving:
            row.append(_score_text(short_scores.get(label)))
        scores = final.get(label)
        if scores is None:
            row.append("not promoted" if going_on is not None else "")
        else:
            row.append(_score_text(scores))
        row += [f"{scores['limits'][k]:.4g}" if scores else "" for k in tuning.at_most]
        row.append("**yes**" if scores and scores.get("chosen") else "")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if choice and not choice.within_limits:
        lines += ["No trial met the limits; the best by the metric alone was used.", ""]
    for key in choice.edges if choice else ():
        note = tuning.edge_notes.get(key, "the optimum may lie outside the searched range")
        lines += [f"Edge: the chosen `{key}` lies at the edge of what was searched: {note}.", ""]
    return lines


def _score_text(scores: dict[str, Any] | None) -> str:
    if not scores:
        return ""
    return f"{scores['mean']:.4g} (n={scores['n']})"


def _same_point(grid: dict[str, Any], point: Point) -> bool:
    return all(key in grid and grid[key] == value for key, value in point)
