"""Every built-in game through the whole path a user takes: its configuration validates, trains
with the one trainer, checkpoints, and its saved configuration loads for evaluation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from agekit.config import Component, config_to_dict, parse_config
from agekit.evaluation.scoring import evaluate
from agekit.registry import REGISTRY
from agekit.training.trainer import Trainer

BUILT_IN_GAMES = ["age", "vae", "aae", "ali", "introvae", "soft-introvae"]


def _raw(game: str, tmp_path: Path) -> dict:
    return {
        "name": game,
        "out_dir": str(tmp_path),
        "data": {"name": "ring8", "batch_size": 64},
        "prior": {"name": "gaussian", "dim": 2},
        "backbone": {"name": "mlp", "options": {"hidden": 32, "depth": 2}},
        "game": {"name": game},
        "train": {"steps": 6, "log_every": 3, "checkpoint_every": 6, "image_every": 1000},
    }


def test_the_built_in_games_are_registered() -> None:
    assert set(BUILT_IN_GAMES) <= set(REGISTRY.available("game"))


@pytest.mark.parametrize("game", BUILT_IN_GAMES)
def test_a_saved_configuration_of_every_game_loads_again(game: str, tmp_path: Path) -> None:
    # A saved configuration lists every default of [game], the age game's keys included.
    config = parse_config(_raw(game, tmp_path))
    assert parse_config(config_to_dict(config)).game.game_name == game


@pytest.mark.parametrize("game", BUILT_IN_GAMES)
def test_every_game_trains_resumes_and_evaluates(game: str, tmp_path: Path) -> None:
    config = parse_config(_raw(game, tmp_path))
    trainer = Trainer(config)
    result = trainer.fit()
    assert result.status == "complete" and result.step == 6
    assert all(math.isfinite(value) for value in result.last.values())
    longer = parse_config(
        {**_raw(game, tmp_path), "train": {**_raw(game, tmp_path)["train"], "steps": 8}}
    )
    resumed = Trainer(longer)
    assert resumed.fit(resume=True).step == 8
    scores = evaluate(trainer.run_dir, [Component(name="reconstruction")], seed=0, device="cpu")
    assert math.isfinite(scores["metrics"]["reconstruction"]["recon_mse"])
