"""A study's answer follows its adjusted tests, and README states no more than the report finds."""

from __future__ import annotations

import json
import re
from pathlib import Path

from agekit.studies.answer import answer
from agekit.studies.statistics import summarise

ROOT = Path(__file__).resolve().parents[1]
#: README quotes each shipped study's answer between these markers, verbatim.
ANSWER_BLOCK = re.compile(
    r"<!-- answer: (?P<study>[\w.-]+) -->\n(?P<text>.*?)\n<!-- /answer -->", re.S
)


def _records(shift: float, noise: list[float]) -> list[dict[str, object]]:
    return [
        {
            "setting": "s",
            "cell": f"s__divergence={name}",
            "train_seed": seed,
            "metrics": {"q": {"fd": 10.0 + seed + (shift if name == "b" else 0.0) + e}},
        }
        for name in ("a", "b")
        for seed, e in enumerate(noise if name == "b" else [0.0] * len(noise))
    ]


def test_a_difference_that_survives_holm_is_stated_with_its_direction() -> None:
    records = _records(3.0, [0.1, -0.1, 0.2, -0.2, 0.0])
    summary = summarise(records, {"q.fd": "lower"}, primaries={"s": "q.fd"})
    text = answer(summary, {"q.fd": "lower"})
    assert text.startswith(
        "Every primary comparison finds a difference: on s, a has the better q.fd"
    )


def test_no_difference_is_stated_when_the_adjusted_test_finds_none() -> None:
    records = _records(0.3, [2.0, -2.5, 1.0, -1.0, 0.5])
    summary = summarise(records, {"q.fd": "lower"}, primaries={"s": "q.fd"})
    text = answer(summary, {"q.fd": "lower"})
    assert text.startswith("No difference survives the adjustment: on s, no significant difference")
    assert "would likely go unseen" in text


def test_a_cell_breaking_its_tuning_limit_is_named() -> None:
    records = _records(3.0, [0.1, -0.1, 0.2, -0.2, 0.0])
    summary = summarise(records, {"q.fd": "lower"}, primaries={"s": "q.fd"})
    text = answer(summary, {"q.fd": "lower"}, limits={"s": {"q.fd": 12.0}})
    assert "b's mean q.fd 15 exceeds 12" in text


def test_readme_quotes_each_shipped_answer_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = list(ANSWER_BLOCK.finditer(readme))
    assert blocks, "README quotes no study answer between <!-- answer: STUDY --> markers"
    for block in blocks:
        summary = json.loads(
            (ROOT / "docs" / "results" / block["study"] / "summary.json").read_text()
        )
        # the report's sentence, produced from its Holm-adjusted primary tests, and nothing else
        assert block["text"].strip() == summary["answer"], block["study"]
