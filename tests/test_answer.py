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


#: README's table of the games study: one row per game, each figure a mean over seeds from
#: docs/results/games/summary.json ([95 % t interval] for the primaries).
GAMES_TABLE = re.compile(r"<!-- table: games -->\n(?P<text>.*?)\n<!-- /table -->", re.S)
GAMES_COLUMNS = [
    ("mnist5k FD, 1,000 its", "mnist5k", "sample-quality.fd_classifier", True),
    ("FD, equal time", "mnist5k-equal-time", "sample-quality.fd_classifier", True),
    ("test MSE", "mnist5k", "reconstruction.recon_mse", False),
    # the equal-time runs timed each game with nothing else on the cores but the study's jobs
    ("s / it", "mnist5k-equal-time", "training-cost.seconds_per_iteration", False),
    ("ring8 hist. KL", "ring8", "histogram-divergence.histogram_kl", True),
    ("KL, equal time", "ring8-equal-time", "histogram-divergence.histogram_kl", True),
    ("ring8 modes", "ring8", "mode-coverage.modes_captured", False),
    ("grid25 hist. KL", "grid25", "histogram-divergence.histogram_kl", True),
    ("KL, equal time", "grid25-equal-time", "histogram-divergence.histogram_kl", True),
    ("grid25 modes", "grid25", "mode-coverage.modes_captured", False),
]


def games_table(summary: dict[str, object]) -> str:
    """The games study's table as README prints it, from its summary alone."""
    cells = summary["cells"]
    assert isinstance(cells, dict)
    games = sorted(
        {cell.split("game=", 1)[1] for cell in cells},
        key=lambda game: (game != "age", game),
    )
    rows = [
        "| game | " + " | ".join(c[0] for c in GAMES_COLUMNS) + " |",
        "|---" * (len(GAMES_COLUMNS) + 1) + "|",
    ]
    for game in games:
        figures = []
        for _, setting, key, interval in GAMES_COLUMNS:
            metric = cells[f"{setting}__game={game}"]["metrics"][key]
            text = (
                f"{metric['mean']:.2g}" if key.startswith("training") else f"{metric['mean']:.3g}"
            )
            if interval:
                low, high = metric["ci95"]
                text += f" [{low:.3g}, {high:.3g}]"
            figures.append(text)
        rows.append(f"| {game} | " + " | ".join(figures) + " |")
    return "\n".join(rows)


def test_readme_games_table_is_the_games_studys_summary() -> None:
    readme = (ROOT / "README.md").read_text()
    block = GAMES_TABLE.search(readme)
    assert block, "README has no <!-- table: games --> block"
    summary = json.loads((ROOT / "docs" / "results" / "games" / "summary.json").read_text())
    assert block["text"].strip() == games_table(summary)
