"""The study report's figures: training curves, headline metrics with intervals, image grids.

Drawn on :class:`matplotlib.figure.Figure` objects and saved to files, without pyplot: no global
backend is switched and no window can open.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import imread

from agekit.games.age import TERM_LABELS
from agekit.runs.layout import RUNS, RunFolder
from agekit.studies.layout import FIGURES_DIR
from agekit.training.progress import read_records

__all__ = ["write_figures"]


def write_figures(
    folder: Path,
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    directions: Mapping[str, str],
) -> dict[str, list[str]]:
    """Per setting, into ``folder/figures``: training curves (mean over seeds per cell), headline
    metrics with their intervals, and the first seed's samples and reconstructions. Returns the
    figures' paths relative to ``folder``, by setting, for the report to link."""
    (folder / FIGURES_DIR).mkdir(exist_ok=True)
    made: dict[str, list[str]] = defaultdict(list)
    by_setting: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_setting[record["setting"]].append(record)
    for setting, group in sorted(by_setting.items()):
        cells = sorted({r["cell"] for r in group})
        name = f"{FIGURES_DIR}/curves_{setting}.png"
        _curves(folder, setting, cells, group).savefig(folder / name, dpi=90)
        made[setting].append(name)
        metrics = _metrics(setting, cells, summary, directions)
        if metrics is not None:
            name = f"{FIGURES_DIR}/metrics_{setting}.png"
            metrics.savefig(folder / name, dpi=90)
            made[setting].append(name)
        name = f"{FIGURES_DIR}/grids_{setting}.png"
        _grids(folder, setting, cells, group).savefig(folder / name, dpi=100)
        made[setting].append(name)
    return made


def _run_folder(folder: Path, record: dict[str, Any]) -> RunFolder:
    return RunFolder(folder / RUNS / record["run_id"])


def _curves(folder: Path, setting: str, cells: list[str], group: list[dict[str, Any]]) -> Figure:
    """Training curves: one panel per term, one line per cell (mean over seeds)."""
    terms = list(TERM_LABELS.items())
    fig = Figure(figsize=(4 * len(terms), 3.2))
    axes = fig.subplots(1, len(terms))
    for cell in cells:
        curves = [_curve(_run_folder(folder, r).metrics) for r in group if r["cell"] == cell]
        for axis, (key, label) in zip(axes, terms, strict=True):
            steps, values = _mean_curve([c.get(key, ([], [])) for c in curves])
            if len(steps):
                axis.plot(steps, values, label=cell.removeprefix(setting + "__"))
            axis.set_title(label)
            axis.set_xlabel("iteration")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _metrics(
    setting: str, cells: list[str], summary: dict[str, Any], directions: Mapping[str, str]
) -> Figure | None:
    """The headline metrics with their intervals, one panel per key; None without any."""
    keys = [
        k
        for k in directions
        if directions[k] != "reference" and any(k in summary["cells"][c]["metrics"] for c in cells)
    ]
    if not keys:
        return None
    fig = Figure(figsize=(2.6 * len(keys), 3.2))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        means, errors, labels = [], [], []
        for cell in cells:
            stat = summary["cells"][cell]["metrics"].get(key)
            if stat is None:
                continue
            means.append(stat["mean"])
            low, high = stat["ci95"]
            errors.append(0.0 if math.isnan(low) else (high - low) / 2)
            labels.append(cell.removeprefix(setting + "__"))
        axis.bar(
            range(len(means)),
            means,
            yerr=errors,
            capsize=4,
            color=[f"C{i}" for i in range(len(means))],
        )
        axis.set_xticks(range(len(means)), labels, rotation=30, ha="right", fontsize=7)
        axis.set_title(f"{key.split('.', 1)[1]} ({directions[key]})", fontsize=9)
    fig.tight_layout()
    return fig


def _grids(folder: Path, setting: str, cells: list[str], group: list[dict[str, Any]]) -> Figure:
    """Samples and reconstructions side by side, the first seed of each cell."""
    firsts = [
        min((r for r in group if r["cell"] == c), key=lambda r: r["train_seed"]) for c in cells
    ]
    fig = Figure(figsize=(8, 4 * len(firsts)))
    axes = fig.subplots(len(firsts), 2, squeeze=False)
    for row, record in zip(axes, firsts, strict=True):
        images = _run_folder(folder, record).images
        for axis, kind in zip(row, ("samples", "reconstructions"), strict=True):
            found = sorted(images.glob(f"{kind}_*.png"))
            if found:
                axis.imshow(imread(found[-1]))
            axis.set_title(f"{record['cell'].removeprefix(setting + '__')}: {kind}", fontsize=9)
            axis.axis("off")
    fig.tight_layout()
    return fig


def _curve(path: Path) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for entry in read_records(path)[0]:  # a crashed run's torn last line is skipped
        for key, value in entry.items():
            if isinstance(value, int | float):
                series[key][0].append(entry["step"])
                series[key][1].append(float(value))
    return series


def _mean_curve(curves: list[tuple[list[int], list[float]]]) -> tuple[np.ndarray, np.ndarray]:
    curves = [c for c in curves if c[0]]
    if not curves:
        return np.array([]), np.array([])
    length = min(len(c[0]) for c in curves)
    steps = np.asarray(curves[0][0][:length])
    values = np.mean([c[1][:length] for c in curves], axis=0)
    return steps, values
