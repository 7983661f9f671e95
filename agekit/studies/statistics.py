"""The statistics of a study report: pure functions of the runs' scores, no files, no plots.

Per cell, means with 95 % Student-t intervals over training seeds; between cells of a setting,
comparisons paired by seed, whose interval and test come from one method (the paired t: the
interval excludes 0 exactly when the two-sided p-value is below 0.05). Holm's adjustment runs
over the study's pre-declared primary comparisons only (one metric per setting); every other
comparison is descriptive, reported with its unadjusted p-value.

Why Student-t and not a percentile bootstrap: at the few seeds a study affords, a bootstrap over
seeds is narrower than its nominal level (at n = 3 its "95 %" interval is [min, max] and covers
the mean about 75 % of the time); the t interval's coverage is exact for normal seed-to-seed
variation and degrades gracefully under skew (:func:`interval_coverage` measures both, and
``tests/test_statistics.py`` holds each method to a stated band).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import integrate, optimize, stats

from agekit.studies.planned import value_label

__all__ = [
    "INTERVAL_METHOD",
    "INTERVAL_NOTE",
    "LEVEL",
    "PAIRED_METHOD",
    "SKEWED_COVERAGE",
    "detectable_difference",
    "flatten",
    "holm_adjust",
    "interval_coverage",
    "mean_ci",
    "paired_comparison",
    "summarise",
]

#: Confidence level of every interval a report shows.
LEVEL = 0.95
#: How a cell's interval is computed, as the report states it beside the numbers.
INTERVAL_METHOD = "95 % Student-t interval over training seeds"
#: Coverage of the 95 % t interval simulated for strongly skewed (exponential) seed-to-seed
#: variation at n = 3 to 10 seeds (tests/test_statistics.py checks it).
SKEWED_COVERAGE = (0.87, 0.91)
#: What the report says about its intervals' coverage.
INTERVAL_NOTE = (
    "its coverage is exactly 95 % when seed-to-seed variation is normal and, simulated for "
    f"strongly skewed (exponential) variation at 3 to 10 seeds, {SKEWED_COVERAGE[0]:.2f} to "
    f"{SKEWED_COVERAGE[1]:.2f}"
)
#: How a paired comparison's interval and test are computed (one method for both).
PAIRED_METHOD = "paired Student-t over shared training seeds (95 % interval and two-sided test)"


def flatten(record: dict[str, Any]) -> dict[str, float]:
    """A record's numeric scores as 'metric.key' -> value (booleans and non-numbers left out)."""
    flat: dict[str, float] = {}
    for metric, values in record["metrics"].items():
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            flat[f"{metric}.{key}"] = float(value)
    return flat


def mean_ci(values: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and Student-t interval over seeds; NaN bounds with fewer than two values.

    The bounds may leave a bounded quantity's range (a count of modes near its maximum): that is
    the price of an interval whose coverage is what it says at three to ten seeds.
    """
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if len(array) < 2:
        return mean, math.nan, math.nan
    spread = float(array.std(ddof=1))
    if spread == 0.0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, len(array) - 1)) * spread / math.sqrt(len(array))
    return mean, mean - half, mean + half


def paired_comparison(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Paired by training seed: mean difference a - b, its Student-t 95 % interval and the paired
    t-test's two-sided p-value (unadjusted; :func:`summarise` adds Holm's over the primaries).
    Interval and test share one method, so the interval excludes 0 exactly when p < 0.05."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    result: dict[str, Any] = {"n_pairs": len(seeds), "method": PAIRED_METHOD}
    if len(seeds) < 2:
        result.update(
            mean_diff=diffs[0] if diffs else math.nan,
            low=math.nan,
            high=math.nan,
            p_value=math.nan,
            sd_diff=math.nan,
        )
        return result
    mean, low, high = mean_ci(diffs)
    spread = float(np.std(diffs, ddof=1))
    if spread == 0.0:
        p_value = 1.0 if diffs[0] == 0 else 0.0
    else:
        t_statistic = mean / (spread / math.sqrt(len(diffs)))
        p_value = float(2 * stats.t.sf(abs(t_statistic), len(diffs) - 1))
    result.update(mean_diff=mean, low=low, high=high, p_value=p_value, sd_diff=spread)
    return result


def detectable_difference(sd_diff: float, n_pairs: int, alpha: float, power: float = 0.8) -> float:
    """The smallest true mean difference a two-sided paired t-test at ``alpha`` detects with
    probability ``power`` at ``n_pairs`` pairs, when the differences' spread is ``sd_diff``
    (noncentral t). NaN when it cannot be computed (fewer than two pairs, no spread)."""
    if n_pairs < 2 or not math.isfinite(sd_diff) or sd_diff <= 0:
        return math.nan
    df = n_pairs - 1
    critical = float(stats.t.ppf(1 - alpha / 2, df))

    def reached(effect: float) -> float:
        # P(|T| > critical) for T = (Z + shift) / sqrt(V / df), V ~ chi2(df), integrated over V:
        # scipy's noncentral t returns NaN at the large shifts that two seeds need.
        shift = effect * math.sqrt(n_pairs)

        def given(v: float) -> float:
            bound = critical * math.sqrt(v / df)
            tails = stats.norm.sf(bound - shift) + stats.norm.cdf(-bound - shift)
            return float(tails * stats.chi2.pdf(v, df))

        return float(integrate.quad(given, 0.0, math.inf, limit=200)[0])

    # In units of sd_diff: power rises monotonically with the effect, from alpha at 0.
    high = 1.0
    while reached(high) < power:
        high *= 2.0
    effect = optimize.brentq(lambda e: reached(e) - power, 0.0, high, xtol=1e-6)
    return float(effect * sd_diff)


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


def interval_coverage(
    method: Callable[[list[float]], tuple[float, float, float]],
    draw: Callable[[np.random.Generator, int], np.ndarray],
    true_mean: float,
    n: int,
    repeats: int = 4000,
    seed: int = 0,
) -> float:
    """The share of ``repeats`` simulated studies of ``n`` seeds whose interval (``method``)
    holds ``true_mean``; ``draw(rng, n)`` simulates one study's values."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(repeats):
        _, low, high = method(list(draw(rng, n)))
        hits += int(low <= true_mean <= high)
    return hits / repeats


def summarise(
    records: list[dict[str, Any]],
    directions: Mapping[str, str],
    primaries: Mapping[str, str] | None = None,
    compare_to: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Per cell and metric key: n, mean, 95 % interval and the values by seed; per setting, every
    pair of cells compared on every key they share.

    ``primaries`` maps a setting to its pre-declared primary 'metric.key'; the comparisons of
    those keys form the family of Holm's adjustment (``p_holm``) and are marked ``primary``.
    Without any primary, the family is every comparison of a key whose direction is "lower" or
    "higher" (a wide family: declare primaries to test a question). ``records`` are the runs'
    evaluation records (``setting``, ``cell``, ``train_seed``, ``metrics``); ``directions`` maps
    'metric.key' to "lower", "higher" or "reference". ``compare_to`` (axis key -> value) keeps
    only the comparisons of a cell with the cell that differs from it in that axis alone, where
    the axis takes that value (``b``, the reference; a many-to-one design).
    """
    cells = _cells(records)
    comparisons = _comparisons(cells, dict(compare_to or {}))
    primaries = dict(primaries or {})
    _holm(comparisons, directions, primaries)
    return {
        "cells": cells,
        "comparisons": comparisons,
        "primaries": primaries,
        "interval_method": INTERVAL_METHOD,
        "paired_method": PAIRED_METHOD,
    }


def _cells(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per cell (in setting, cell order): its setting and, per metric key, n, mean, interval and
    the values by training seed."""
    by_cell: dict[tuple[str, str], dict[str, dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for record in records:
        for key, value in flatten(record).items():
            by_cell[(record["setting"], record["cell"])][key][record["train_seed"]] = value
    cells: dict[str, dict[str, Any]] = {}
    for (setting, cell), metrics in sorted(by_cell.items()):
        axes: dict[str, Any] = next(
            (r.get("axes", {}) for r in records if (r["setting"], r["cell"]) == (setting, cell)), {}
        )
        entry: dict[str, Any] = {"setting": setting, "axes": axes, "metrics": {}}
        for key, values in sorted(metrics.items()):
            mean, low, high = mean_ci(list(values.values()))
            entry["metrics"][key] = {
                "n": len(values),
                "mean": mean,
                "ci95": [low, high],
                "values": {str(seed): v for seed, v in sorted(values.items())},
            }
        cells[cell] = entry
    return cells


def _comparisons(
    cells: dict[str, dict[str, Any]], compare_to: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per setting, every pair of its cells (or, with ``compare_to``, every cell and its
    reference) compared on every key both measured."""
    comparisons = []
    settings = sorted({entry["setting"] for entry in cells.values()})
    for setting in settings:
        names = [c for c, e in cells.items() if e["setting"] == setting]
        for first, second in _pairs(names, cells, compare_to):
            shared = set(cells[first]["metrics"]) & set(cells[second]["metrics"])
            for key in sorted(shared):
                a = {int(s): v for s, v in cells[first]["metrics"][key]["values"].items()}
                b = {int(s): v for s, v in cells[second]["metrics"][key]["values"].items()}
                comparison = paired_comparison(a, b)
                comparison.update(setting=setting, metric=key, a=first, b=second)
                comparisons.append(comparison)
    return comparisons


def _pairs(
    names: list[str], cells: dict[str, dict[str, Any]], compare_to: dict[str, Any]
) -> list[tuple[str, str]]:
    """The pairs of cells to compare: all of them, or each cell with its reference cell."""
    if not compare_to:
        return list(itertools.combinations(names, 2))
    pairs = []
    for first, second in itertools.permutations(names, 2):
        a, b = _labels(cells[first]["axes"]), _labels(cells[second]["axes"])
        differing = [key for key in a.keys() | b.keys() if a.get(key) != b.get(key)]
        if len(differing) == 1 and differing[0] in compare_to:
            key = differing[0]
            if b.get(key) == value_label(compare_to[key]):
                pairs.append((first, second))
    return pairs


def _labels(axes: Mapping[str, Any]) -> dict[str, str]:
    """Axis values as the study names them in folders: a TOML value and its label compare equal
    (``compare_to = { x = "0.5" }`` names the axis value 0.5)."""
    return {key: value_label(value) for key, value in axes.items()}


def _holm(
    comparisons: list[dict[str, Any]], directions: Mapping[str, str], primaries: dict[str, str]
) -> None:
    """Add ``p_holm``, ``primary``, ``family_size`` and ``detectable_80`` to the comparisons of
    Holm's family: the primaries', or without any every key with a better direction."""
    if primaries:
        tested = [c for c in comparisons if primaries.get(c["setting"]) == c["metric"]]
    else:
        tested = [c for c in comparisons if directions.get(c["metric"]) in ("lower", "higher")]
    adjusted = holm_adjust([c["p_value"] for c in tested])
    family = sum(1 for p in adjusted if not math.isnan(p))
    for comparison, p_holm in zip(tested, adjusted, strict=True):
        comparison["p_holm"] = p_holm
        comparison["primary"] = bool(primaries)
        comparison["family_size"] = family
        # what the test could have found: its 80 % power threshold at the family's strictest alpha
        comparison["detectable_80"] = detectable_difference(
            comparison["sd_diff"], comparison["n_pairs"], 0.05 / max(family, 1)
        )
