"""The statistics of a study report: pure functions of the runs' scores, no files, no plots.

Per cell, means with 95% percentile-bootstrap intervals over training seeds; between cells of a
setting, comparisons paired by seed (mean difference, its interval, paired t-test), with p-values
Holm-adjusted over the study's family of headline comparisons.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "flatten",
    "holm_adjust",
    "mean_ci",
    "paired_comparison",
    "summarise",
]


def flatten(record: dict[str, Any]) -> dict[str, float]:
    """A record's numeric scores as 'metric.key' -> value (booleans and non-numbers left out)."""
    flat: dict[str, float] = {}
    for metric, values in record["metrics"].items():
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            flat[f"{metric}.{key}"] = float(value)
    return flat


#: Bootstrap resamples for every interval; fixed seed so a report is reproducible.
BOOTSTRAP_RESAMPLES = 10_000


def _bootstrap_means(array: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(array), size=(BOOTSTRAP_RESAMPLES, len(array)))
    return array[picks].mean(axis=1)


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval over seeds; NaN bounds with one value.

    Resampling seeds keeps every bound between the smallest and largest observed value, so an
    interval never leaves the quantity's range (a count of modes, a share, a precision). With
    few seeds it is narrow rather than conservative: read it with the n beside it.
    """
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if len(array) < 2:
        return mean, math.nan, math.nan
    if np.all(array == array[0]):
        return mean, mean, mean
    means = _bootstrap_means(array)
    low, high = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return mean, float(low), float(high)


def paired_comparison(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Paired by training seed: mean difference a - b, its bootstrap 95% interval and the paired
    t-test p-value (unadjusted; :func:`summarise` adds Holm's adjustment over the study)."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    result: dict[str, Any] = {"n_pairs": len(seeds)}
    if len(seeds) < 2:
        result.update(
            mean_diff=diffs[0] if diffs else math.nan, low=math.nan, high=math.nan, p_value=math.nan
        )
        return result
    mean, low, high = mean_ci(diffs)
    if all(d == diffs[0] for d in diffs):
        p_value = 1.0 if diffs[0] == 0 else 0.0
    else:
        p_value = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    result.update(mean_diff=mean, low=low, high=high, p_value=p_value)
    return result


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error), NaNs left out of the family."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    family = len(indexed)
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (family - rank) * p))
        adjusted[i] = running
    return adjusted


def summarise(records: list[dict[str, Any]], directions: Mapping[str, str]) -> dict[str, Any]:
    """Per cell and metric key: n, mean, 95% interval and the values by seed; per setting, every
    pair of cells compared on every key they share. The comparisons of keys whose direction is
    "lower" or "higher" form the study's family for Holm's adjustment (``p_holm``).

    ``records`` are the runs' evaluation records (``setting``, ``cell``, ``train_seed``,
    ``metrics``); ``directions`` maps 'metric.key' to "lower", "higher" or "reference".
    """
    by_cell: dict[tuple[str, str], dict[str, dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for record in records:
        for key, value in flatten(record).items():
            by_cell[(record["setting"], record["cell"])][key][record["train_seed"]] = value
    cells: dict[str, dict[str, Any]] = {}
    for (setting, cell), metrics in sorted(by_cell.items()):
        entry: dict[str, Any] = {"setting": setting, "metrics": {}}
        for key, values in sorted(metrics.items()):
            mean, low, high = mean_ci(list(values.values()))
            entry["metrics"][key] = {
                "n": len(values),
                "mean": mean,
                "ci95": [low, high],
                "values": {str(seed): v for seed, v in sorted(values.items())},
            }
        cells[cell] = entry
    comparisons = []
    settings = sorted({entry["setting"] for entry in cells.values()})
    for setting in settings:
        names = [c for c, e in cells.items() if e["setting"] == setting]
        for first, second in itertools.combinations(names, 2):
            shared = set(cells[first]["metrics"]) & set(cells[second]["metrics"])
            for key in sorted(shared):
                a = {int(s): v for s, v in cells[first]["metrics"][key]["values"].items()}
                b = {int(s): v for s, v in cells[second]["metrics"][key]["values"].items()}
                comparison = paired_comparison(a, b)
                comparison.update(setting=setting, metric=key, a=first, b=second)
                comparisons.append(comparison)
    # One family per study: the comparisons of headline metrics that the report tests.
    tested = [c for c in comparisons if directions.get(c["metric"]) in ("lower", "higher")]
    for comparison, adjusted in zip(
        tested, holm_adjust([c["p_value"] for c in tested]), strict=True
    ):
        comparison["p_holm"] = adjusted
    return {"cells": cells, "comparisons": comparisons}
