"""The study report's statistics: intervals over seeds, paired comparisons, Holm, summaries."""

from __future__ import annotations

import math

import pytest

from agekit.studies.statistics import flatten, holm_adjust, mean_ci, paired_comparison, summarise


def test_intervals_stay_inside_the_observed_range() -> None:
    # Three seeds of a count of modes: Student-t gave 1.0 [-1.48, 3.48]; a bootstrap over seeds
    # cannot leave [min, max] of what was observed.
    mean, low, high = mean_ci([0.0, 0.0, 3.0])
    assert mean == 1.0 and 0.0 <= low <= mean <= high <= 3.0
    # A resample of three seeds is all the smallest with probability 1/27 = 3.7 % > 2.5 %, so
    # with three seeds the interval is the observed range; with more it narrows inside it.
    assert mean_ci([1.0, 2.0, 3.0]) == (2.0, 1.0, 3.0)
    mean, low, high = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    assert 1.0 < low < mean < high < 8.0
    assert mean_ci([0.5, 0.5]) == (0.5, 0.5, 0.5)
    assert math.isnan(mean_ci([1.0])[1])


def test_holm_adjustment() -> None:
    # Sorted 0.01, 0.02, 0.04 -> 3 x 0.01, max(that, 2 x 0.02), max(that, 1 x 0.04).
    assert holm_adjust([0.04, 0.01, math.nan, 0.02]) == pytest.approx(
        [0.04, 0.03, math.nan, 0.04], nan_ok=True
    )
    assert holm_adjust([0.5, 0.9]) == [1.0, 1.0]


def test_paired_comparison_detects_a_consistent_difference() -> None:
    a = {0: 1.0, 1: 1.1, 2: 0.9, 3: 1.05}
    b = {seed: value + 0.5 for seed, value in a.items()}
    b[3] += 0.01
    result = paired_comparison(a, b)
    assert result["mean_diff"] == pytest.approx(-0.5025)
    assert result["p_value"] < 1e-3
    same = paired_comparison(a, dict(a))
    assert same["p_value"] == 1.0


def test_flatten_keeps_numeric_scores_only() -> None:
    record = {
        "metrics": {
            "reconstruction": {"recon_l1": 0.5, "n": 3, "ok": True, "protocol": {"a": 1}},
            "mode-coverage": {"modes_captured": 8},
        }
    }
    assert flatten(record) == {
        "reconstruction.recon_l1": 0.5,
        "reconstruction.n": 3.0,
        "mode-coverage.modes_captured": 8.0,
    }


def _record(cell: str, seed: int, l1: float, mean_l1: float) -> dict[str, object]:
    return {
        "setting": "s",
        "cell": f"s__{cell}",
        "train_seed": seed,
        "metrics": {"reconstruction": {"recon_l1": l1, "mean_image_l1": mean_l1}},
    }


def test_summarise_cells_comparisons_and_the_holm_family() -> None:
    records = [
        _record("a", 0, 1.0, 5.0),
        _record("a", 1, 2.0, 5.0),
        _record("b", 0, 1.5, 5.0),
        _record("b", 1, 2.6, 5.0),
    ]
    directions = {"reconstruction.recon_l1": "lower", "reconstruction.mean_image_l1": "reference"}
    summary = summarise(records, directions)
    cell = summary["cells"]["s__a"]
    assert cell["setting"] == "s"
    assert cell["metrics"]["reconstruction.recon_l1"] == {
        "n": 2,
        "mean": 1.5,
        "ci95": [1.0, 2.0],
        "values": {"0": 1.0, "1": 2.0},
    }
    comparisons = {c["metric"]: c for c in summary["comparisons"]}
    assert set(comparisons) == set(directions)
    tested = comparisons["reconstruction.recon_l1"]
    assert (tested["a"], tested["b"], tested["n_pairs"]) == ("s__a", "s__b", 2)
    assert tested["mean_diff"] == pytest.approx(-0.55)
    # Only comparisons of keys with a better direction form the family Holm adjusts.
    assert tested["p_holm"] == pytest.approx(tested["p_value"])
    assert "p_holm" not in comparisons["reconstruction.mean_image_l1"]
